# One image for every role: `node dist/scripts/start.js` (the default) runs them all on
# the embedded stores; docker-compose.yml runs each role alone (`node dist/<role>/main.js`).

# Build: the whole toolchain, then only what runs is kept.
FROM node:24-bookworm-slim AS build
WORKDIR /app
# better-sqlite3 is a native addon: npm ci fetches its prebuilt binary for this Node and
# platform, and compiles it with these when there is none.
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# patches/: fixes to kafkajs and the EventStoreDB client, applied by npm ci (postinstall); README, "Dependencies".
COPY patches ./patches
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY shared ./shared
COPY command-side ./command-side
COPY projector ./projector
COPY query-side ./query-side
COPY scripts ./scripts
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# Run: plain JavaScript, production dependencies, no compiler, no TypeScript loader.
FROM node:24-bookworm-slim
# tini as PID 1 passes SIGTERM on to node (a PID 1 without a handler would ignore it) and
# reaps what dies; node then drains every role before the container stops.
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production HOST=0.0.0.0 DATA_DIR=/app/data
# The code stays root's, read-only to the service; only the embedded stores' folder is its own.
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
RUN mkdir /app/data && chown node:node /app/data
USER node
EXPOSE 3000 3001
# GET /health/live on HEALTHCHECK_PORT (else COMMAND_PORT, else 3000): set it to the role's port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["node", "dist/scripts/healthcheck.js"]
ENTRYPOINT ["tini", "--"]
CMD ["node", "dist/scripts/start.js"]
