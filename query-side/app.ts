import { setMaxListeners } from 'node:events';
import type { ServerResponse } from 'node:http';
import type { FastifyServerOptions } from 'fastify';
import type { Registry } from 'prom-client';
import type { Knex } from 'knex';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import { commonErrorDescriptions, errorResponses, optionalBearerToken, registerApiDocs } from '../shared/api-docs.js';
import { createHttpApp } from '../shared/http.js';
import { harden, requireBearerTokens } from '../shared/http-hardening.js';
import { createMetricsRegistry, serveHttpMetrics, serveProbes } from '../shared/metrics.js';
import { userQueries, userViewSchema, visibleStatuses } from './user-queries.js';
import { openUserReads } from './user-reads.js';
import { waitForWrite } from './read-your-writes.js';
import { projectionName } from '../shared/read-model/user-row.js';
import { parkedCounts, writeParked } from '../shared/read-model/dead-letters.js';
import { withTimeout } from '../shared/retry.js';

export interface QueryAppDeps {
  /** The process's metrics registry, served at /metrics; a fresh one when absent. */
  metrics?: Registry;
  db: Knex;
  consistencyWaitMs: number;
  /** When non-empty, every read needs `Authorization: Bearer <one of these>`. */
  readApiTokens?: readonly string[];
  /** Requests per minute per client; 0 or absent: no limit. */
  rateLimitPerMinute?: number;
  /** Whose X-Forwarded-For names the client (TRUST_PROXY); absent: the peer's address. */
  trustProxy?: boolean | number | readonly string[];
  /** Longest a single read DB query may take before the request answers 503. */
  queryTimeoutMs?: number;
  /** Largest request body (BODY_LIMIT_BYTES): the read API's routes take none, but one sent is read before it is refused. */
  bodyLimitBytes?: number;
  logger?: FastifyServerOptions['logger'];
}

const consistencyHeaders = {
  type: 'object',
  properties: {
    'consistency-token': {
      type: 'string',
      maxLength: 256,
      description:
        'Read your own write: the `consistencyToken` a write answered (`user-<id>@<revision>`). The read waits until the read model holds that user at that revision or later, for at most `CONSISTENCY_WAIT_MS` (default 5 s); past that it answers 503 `CONSISTENCY_TIMEOUT` rather than stale data. A write the projector holds in quarantine (an event of the user it could not apply) is answered 503 `WRITE_QUARANTINED` as soon as the wait sees it, without `Retry-After`.',
      examples: ['user-0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001@1'],
    },
  },
} as const;

const userExample = {
  id: '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001',
  name: 'Countess of Lovelace',
  email: 'ada@lovelace.dev',
  status: 'validated',
  registeredAt: '2026-01-05T09:30:00.000Z',
  validatedAt: '2026-01-05T09:31:12.250Z',
  updatedAt: '2026-01-05T09:31:12.250Z',
  version: 3,
} as const;

/** The errors every read can answer; each route adds its own. */
const readErrors = {
  400: '`VALIDATION_FAILED`: a parameter or header breaks its schema; `problems` names every one (`in`: params, querystring, headers). `INVALID_CONSISTENCY_TOKEN`: the `Consistency-Token` is not one the write API gave.',
  401: '`UNAUTHORIZED`: `READ_API_TOKENS` is set and the bearer token is missing or wrong.',
  ...commonErrorDescriptions,
  503: '`CONSISTENCY_TIMEOUT`: the read model has not reached the `Consistency-Token`\'s write within `CONSISTENCY_WAIT_MS`. `STORE_UNAVAILABLE`: the read database cannot be reached or a query ran past `QUERY_TIMEOUT_MS`. `SHUTTING_DOWN`: this instance is stopping (a read waiting for its `Consistency-Token` included); the connection is closed, and a new one reaches another instance. Retry after `Retry-After` seconds. `WRITE_QUARANTINED` (no `Retry-After`): the `Consistency-Token`\'s write is in the event log, but the projector holds the user\'s events in quarantine (an event it could not apply, and those after it); the read model shows it once an operator releases them (`npm run dead-letters`).',
} as const;
const readTags = ['users'] as const;

/** The read API over `USER_DATA`. Builds the app; `main.ts` listens. */
export function buildQueryApp(deps: QueryAppDeps) {
  const queryTimeoutMs = deps.queryTimeoutMs ?? 5000;
  const app = createHttpApp({
    logger: deps.logger ?? false,
    bodyLimitBytes: deps.bodyLimitBytes,
    trustProxy: deps.trustProxy,
    // A read may wait for its write up to CONSISTENCY_WAIT_MS, then read (QUERY_TIMEOUT_MS, and the
    // last look at the version before it): the connection is not cut as idle before that answer.
    connectionTimeoutMs: Math.max(60_000, deps.consistencyWaitMs + 2 * (queryTimeoutMs + 1000) + 5000),
  });
  const reads = openUserReads(deps.db, { timeoutMs: queryTimeoutMs });
  app.addHook('onClose', () => reads.close());
  const users = userQueries(reads);
  // Most reads carry no token: they go straight to the query, without an await.
  // Reads waiting for their write when the app closes end then, 503 SHUTTING_DOWN, rather than hold the close.
  const closing = new AbortController();
  // One listener per waiting read, however many wait: no warning past Node's default of ten.
  setMaxListeners(0, closing.signal);
  app.addHook('preClose', (done) => {
    closing.abort();
    done();
  });
  // Whether the token's write itself waits in the projector's quarantine (see `waitForWrite`): parked, or held behind
  // an event parked before it. Not merely whether the stream is blocked: a forget is applied over a blocked stream,
  // and its token is satisfied soon. A look that fails or does not answer within a second says nothing: the wait goes on.
  const quarantined = (streamId: string, revision: number) =>
    withTimeout(writeParked(deps.db, projectionName, streamId, revision), 1000, () => new Error('the quarantine did not answer')).catch(() => false);
  const readYourWrites = (token: string | undefined, response: ServerResponse) => {
    if (token === undefined) return undefined;
    // A caller that leaves (its own timeout, a closed tab) ends its wait: it would otherwise keep
    // looking at the read model, and hold a timer and a listener, for the whole CONSISTENCY_WAIT_MS.
    const left = new AbortController();
    const gone = () => {
      if (!response.writableFinished) left.abort();
    };
    response.once('close', gone);
    return waitForWrite(token, {
      versionOf: users.versionOf,
      timeoutMs: deps.consistencyWaitMs,
      waitForChange: (ms) => reads.waitForChange(ms),
      quarantined,
      closing: closing.signal,
      left: left.signal,
    }).finally(() => response.off('close', gone));
  };

  harden(app, { rateLimitPerMinute: deps.rateLimitPerMinute ?? 0, tokens: deps.readApiTokens ?? [] });
  registerApiDocs(app, {
    name: 'read API',
    description:
      'Reads users from the read model (`USER_DATA`), which a projector keeps up with the write side\'s events. Send a write\'s `consistencyToken` as `Consistency-Token` to read your own write. Errors are JSON `ErrorBody`s. Every answer carries `X-Request-Id`.',
  });
  serveHttpMetrics(app, deps.metrics ?? createMetricsRegistry('query-side'));
  void app.register(async (api) => {
    // Readiness: the read DB answers. Liveness: the process answers at all.
    serveProbes(api, async () => {
      try {
        // Events the projector could not apply wait in quarantine; operators watch this number.
        // The read path itself too, on the read API's own connections and with its timeout: knex's pool
        // may reach the read DB while they do not (their connections stalled, their queue full).
        const [parked] = await Promise.all([parkedCounts(deps.db, projectionName), users.versionOf('00000000-0000-0000-0000-000000000000')]);
        return { ready: true, detail: { readDb: 'up', parkedEvents: parked.failed + parked.held, parked } };
      } catch {
        return { ready: false, detail: { readDb: 'down' } };
      }
    });

    await api.register(async (scope) => {
      const reads = scope.withTypeProvider<JsonSchemaToTsProvider>();
      await requireBearerTokens(scope, deps.readApiTokens ?? []);

      reads.get(
        '/users/:id',
        {
          schema: {
            summary: 'Read a user',
            description: 'The user as the read model holds it (eventually consistent; see `Consistency-Token`). A forgotten user answers 410 `USER_FORGOTTEN`.',
            tags: readTags,
            security: optionalBearerToken,
            params: {
              type: 'object',
              properties: { id: { type: 'string', format: 'uuid', description: 'The user id (case-insensitive).', examples: [userExample.id] } },
              required: ['id'],
              additionalProperties: false,
            },
            headers: consistencyHeaders,
            response: {
              200: { ...userViewSchema, description: 'The user.', examples: [userExample] },
              ...errorResponses({
                ...readErrors,
                404: '`USER_NOT_FOUND`: the read model has no user with this id.',
                410: '`USER_FORGOTTEN`: the user was forgotten at their request (GDPR erasure): their personal data is erased and they are never shown again. A `Consistency-Token` of the erasure is satisfied, then this is the answer.',
              }),
            },
          },
        },
        async (request, reply) => {
          const waiting = readYourWrites(request.headers['consistency-token'], reply.raw);
          if (waiting) await waiting;
          const user = await users.byId(request.params.id.toLowerCase());
          if (!user) {
            return reply.code(404).send({
              statusCode: 404,
              code: 'USER_NOT_FOUND',
              error: 'Not Found',
              message: `user ${request.params.id} not found`,
            });
          }
          if (user === 'forgotten') {
            return reply.code(410).send({
              statusCode: 410,
              code: 'USER_FORGOTTEN',
              error: 'Gone',
              message: `user ${request.params.id} was forgotten`,
            });
          }
          return user;
        },
      );

      reads.get(
        '/users',
        {
          schema: {
            summary: 'Search users',
            description:
              'Filters combine; pages are in order of user id (keyset pagination: pass `nextCursor` back as `cursor`), which is registration order for the ids the write API makes; a user registered with an `Idempotency-Key` has an id made from the key, which sorts anywhere. Forgotten users (GDPR erasure) are never listed.',
            tags: readTags,
            security: optionalBearerToken,
            querystring: {
              type: 'object',
              additionalProperties: false,
              properties: {
                email: { type: 'string', minLength: 1, maxLength: 254, description: 'Exact email address (case-insensitive).', examples: ['ada@lovelace.dev'] },
                name: { type: 'string', minLength: 1, maxLength: 255, description: 'Name prefix, without case or accents (`emile` finds `Émile`); `%` and `_` match only themselves.', examples: ['Count'] },
                status: { type: 'string', enum: visibleStatuses, description: 'Only users in this state. Forgotten users are never listed, so there is no `forgotten` to ask for.' },
                limit: { type: 'integer', minimum: 1, maximum: 100, default: 20, description: 'Most users on this page.' },
                cursor: { type: 'string', minLength: 1, maxLength: 200, description: 'The `nextCursor` of the previous page.' },
              },
            },
            headers: consistencyHeaders,
            response: {
              200: {
                type: 'object',
                additionalProperties: false,
                description: 'One page of users.',
                properties: {
                  items: { type: 'array', items: userViewSchema },
                  nextCursor: { type: ['string', 'null'], description: 'Pass as `cursor` for the next page; null on the last page.' },
                },
                required: ['items', 'nextCursor'],
                examples: [{ items: [userExample], nextCursor: null }],
              },
              ...errorResponses({
                ...readErrors,
                400: `${readErrors[400]} \`INVALID_CURSOR\`: the cursor is not one this API returned.`,
              }),
            },
          },
        },
        async (request, reply) => {
          const waiting = readYourWrites(request.headers['consistency-token'], reply.raw);
          if (waiting) await waiting;
          const { email, name, status, cursor, limit } = request.query;
          return users.list({ email, name, status, cursor, limit: limit ?? 20 });
        },
      );
    });
  });

  return app;
}
