import type { FastifyServerOptions } from 'fastify';
import type { Knex } from 'knex';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import { createHttpApp, errorBodySchema } from '../shared/http.js';
import { harden, requireBearerTokens } from '../shared/http-hardening.js';
import { userQueries, userViewSchema } from './user-queries.js';
import { openUserReads } from './user-reads.js';
import { waitForWrite } from './read-your-writes.js';
import { projectionName } from '../projector/apply-batch.js';
import { parkedCounts } from '../projector/dead-letters.js';

export interface QueryAppDeps {
  db: Knex;
  consistencyWaitMs: number;
  /** When non-empty, every read needs `Authorization: Bearer <one of these>`. */
  readApiTokens?: readonly string[];
  /** Requests per minute per client; 0 or absent: no limit. */
  rateLimitPerMinute?: number;
  /** Longest a single read DB query may take before the request answers 503. */
  queryTimeoutMs?: number;
  logger?: FastifyServerOptions['logger'];
}

const consistencyHeaders = {
  type: 'object',
  properties: { 'consistency-token': { type: 'string', maxLength: 256 } },
} as const;

const errors = { 400: errorBodySchema, 404: errorBodySchema, 503: errorBodySchema } as const;

/** The read API over `USER_DATA`. Builds the app; `main.ts` listens. */
export function buildQueryApp(deps: QueryAppDeps) {
  const app = createHttpApp({ logger: deps.logger ?? false });
  const reads = openUserReads(deps.db, { timeoutMs: deps.queryTimeoutMs ?? 5000 });
  app.addHook('onClose', () => reads.close());
  const users = userQueries(reads);
  // Most reads carry no token: they go straight to the query, without an await.
  const readYourWrites = (token: string | undefined) =>
    token === undefined ? undefined : waitForWrite(token, users.versionOf, deps.consistencyWaitMs);

  harden(app, { rateLimitPerMinute: deps.rateLimitPerMinute ?? 0 });
  void app.register(async (api) => {
    api.get('/health', async (_request, reply) => {
      try {
        // Events the projector could not apply wait in quarantine; operators watch this number.
        const parked = await parkedCounts(deps.db, projectionName);
        return { status: 'ok', readDb: 'up', parkedEvents: parked.failed + parked.held, parked };
      } catch {
        return reply.code(503).header('retry-after', '1').send({ status: 'unavailable', readDb: 'down' });
      }
    });

    await api.register(async (scope) => {
      const reads = scope.withTypeProvider<JsonSchemaToTsProvider>();
      await requireBearerTokens(scope, deps.readApiTokens ?? []);

      reads.get(
        '/users/:id',
        {
          schema: {
            params: {
              type: 'object',
              properties: { id: { type: 'string', format: 'uuid' } },
              required: ['id'],
              additionalProperties: false,
            },
            headers: consistencyHeaders,
            response: { 200: userViewSchema, ...errors },
          },
        },
        async (request, reply) => {
          const waiting = readYourWrites(request.headers['consistency-token']);
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
          return user;
        },
      );

      reads.get(
        '/users',
        {
          schema: {
            querystring: {
              type: 'object',
              additionalProperties: false,
              properties: {
                email: { type: 'string', minLength: 1, maxLength: 254 },
                name: { type: 'string', minLength: 1, maxLength: 255 },
                status: { type: 'string', enum: ['registered', 'validated', 'deactivated'] },
                limit: { type: 'integer', minimum: 1, maximum: 100, default: 20 },
                cursor: { type: 'string', minLength: 1, maxLength: 200 },
              },
            },
            headers: consistencyHeaders,
            response: {
              200: {
                type: 'object',
                additionalProperties: false,
                properties: {
                  items: { type: 'array', items: userViewSchema },
                  nextCursor: { type: ['string', 'null'] },
                },
                required: ['items', 'nextCursor'],
              },
              ...errors,
            },
          },
        },
        async (request) => {
          const waiting = readYourWrites(request.headers['consistency-token']);
          if (waiting) await waiting;
          const { limit, ...filter } = request.query;
          return users.list({ ...filter, limit: limit ?? 20 });
        },
      );
    });
  });

  return app;
}
