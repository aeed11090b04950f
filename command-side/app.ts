import type { FastifyServerOptions } from 'fastify';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import { encodeConsistencyToken } from '../shared/consistency-token.js';
import { ValidationError } from '../shared/errors.js';
import type { EventStore } from '../shared/event-store/port.js';
import { createHttpApp, errorBodySchema } from '../shared/http.js';
import { harden, requireBearerTokens } from '../shared/http-hardening.js';
import { userStreamId } from '../shared/user-events.js';
import type { CommandOptions, CommandResult, UserCommands } from './user-commands.js';

export interface CommandAppDeps {
  commands: UserCommands;
  store: EventStore;
  /** When non-empty, every write needs `Authorization: Bearer <one of these>`. */
  writeApiTokens?: readonly string[];
  bodyLimitBytes?: number;
  /** Requests per minute per client; 0 or absent: no limit. */
  rateLimitPerMinute?: number;
  logger?: FastifyServerOptions['logger'];
}

const userIdParams = {
  type: 'object',
  additionalProperties: false,
  properties: { id: { type: 'string', format: 'uuid' } },
  required: ['id'],
} as const;

const ifMatchHeaders = {
  type: 'object',
  properties: { 'if-match': { type: 'string', pattern: '^\\s*(W/)?"?\\d{1,15}"?\\s*$' } },
} as const;

// Raw lengths are capped generously; the decider enforces 1..255 after trimming.
const nameField = { type: 'string', minLength: 1, maxLength: 1024 } as const;
const emailField = { type: 'string', minLength: 3, maxLength: 320 } as const;

const writeResult = {
  type: 'object',
  additionalProperties: false,
  properties: {
    id: { type: 'string' },
    revision: { type: 'integer' },
    consistencyToken: { type: 'string' },
  },
  required: ['id', 'revision', 'consistencyToken'],
} as const;

const responses = (success: 200 | 201) =>
  ({
    [success]: writeResult,
    400: errorBodySchema,
    401: errorBodySchema,
    404: errorBodySchema,
    409: errorBodySchema,
    422: errorBodySchema,
    503: errorBodySchema,
  }) as const;

const answer = (result: CommandResult) => ({
  ...result,
  consistencyToken: encodeConsistencyToken({ streamId: userStreamId(result.id), revision: result.revision }),
});

/** The target user and the options every change takes from its request. */
function changeOf(request: { id: string; params: { id: string }; headers: { 'if-match'?: string } }) {
  const expectedRevision = expectedRevisionFrom(request.headers['if-match']);
  const options: CommandOptions = {
    correlationId: request.id,
    ...(expectedRevision === undefined ? {} : { expectedRevision }),
  };
  return { userId: request.params.id.toLowerCase(), options };
}

function expectedRevisionFrom(ifMatch: string | undefined): number | undefined {
  if (ifMatch === undefined) return undefined;
  const revision = Number(/\d+/.exec(ifMatch)?.[0]);
  if (!Number.isSafeInteger(revision)) {
    throw new ValidationError('invalid If-Match', [{ field: 'if-match', message: 'must be a revision like "3"' }]);
  }
  return revision;
}

/** The write API. Builds the app; `main.ts` listens. */
export function buildCommandApp(deps: CommandAppDeps) {
  const app = createHttpApp({ logger: deps.logger ?? false, bodyLimitBytes: deps.bodyLimitBytes });
  const { commands } = deps;

  harden(app, { rateLimitPerMinute: deps.rateLimitPerMinute ?? 0 });
  void app.register(async (api) => {
    api.get('/health', async (_request, reply) => {
      try {
        await deps.store.readAll({ maxCount: 1 });
        return { status: 'ok', eventStore: 'up' };
      } catch {
        return reply.code(503).header('retry-after', '1').send({ status: 'unavailable', eventStore: 'down' });
      }
    });

    await api.register(async (scope) => {
      const writes = scope.withTypeProvider<JsonSchemaToTsProvider>();
      await requireBearerTokens(scope, deps.writeApiTokens ?? []);

      writes.post(
        '/users',
        {
          schema: {
            body: {
              type: 'object',
              additionalProperties: false,
              properties: { name: nameField, email: emailField },
              required: ['name', 'email'],
            },
            headers: {
              type: 'object',
              properties: { 'idempotency-key': { type: 'string', minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7e]+$' } },
            },
            response: responses(201),
          },
        },
        async (request, reply) => {
          const idempotencyKey = request.headers['idempotency-key'];
          const result = await commands.register(request.body, {
            correlationId: request.id,
            ...(idempotencyKey ? { idempotencyKey } : {}),
          });
          return reply.code(201).header('location', `/users/${result.id}`).send(answer(result));
        },
      );

      writes.put(
        '/users/:id/name',
        {
          schema: {
            params: userIdParams,
            headers: ifMatchHeaders,
            body: { type: 'object', additionalProperties: false, properties: { name: nameField }, required: ['name'] },
            response: responses(200),
          },
        },
        async (request) => {
          const { userId, options } = changeOf(request);
          return answer(await commands.rename(userId, request.body.name, options));
        },
      );

      writes.put(
        '/users/:id/email',
        {
          schema: {
            params: userIdParams,
            headers: ifMatchHeaders,
            body: { type: 'object', additionalProperties: false, properties: { email: emailField }, required: ['email'] },
            response: responses(200),
          },
        },
        async (request) => {
          const { userId, options } = changeOf(request);
          return answer(await commands.changeEmail(userId, request.body.email, options));
        },
      );

      writes.post(
        '/users/:id/validation',
        { schema: { params: userIdParams, headers: ifMatchHeaders, response: responses(200) } },
        async (request) => {
          const { userId, options } = changeOf(request);
          return answer(await commands.validate(userId, options));
        },
      );

      writes.delete(
        '/users/:id',
        { schema: { params: userIdParams, headers: ifMatchHeaders, response: responses(200) } },
        async (request) => {
          const { userId, options } = changeOf(request);
          return answer(await commands.deactivate(userId, options));
        },
      );
    });
  });

  return app;
}
