import type { FastifyServerOptions } from 'fastify';
import type { Registry } from 'prom-client';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import { encodeConsistencyToken } from '../shared/consistency-token.js';
import { ValidationError } from '../shared/errors.js';
import type { EventStore } from '../shared/event-store/port.js';
import { commonErrorDescriptions, errorResponses, optionalBearerToken, registerApiDocs } from '../shared/api-docs.js';
import { createHttpApp } from '../shared/http.js';
import { harden, requireBearerTokens } from '../shared/http-hardening.js';
import { requestTraceContext } from '../shared/request-context.js';
import { eventStoreWriterMetrics } from '../shared/event-store/writer-metrics.js';
import { createMetricsRegistry, serveHttpMetrics, serveProbes } from '../shared/metrics.js';
import { userStreamId } from '../shared/user-events.js';
import type { Config } from '../shared/config.js';
import { loggerOptions } from '../shared/logger.js';
import type { Vault } from '../shared/personal-data/vault.js';
import { userCommands, type CommandOptions, type CommandResult, type UserCommands } from './user-commands.js';

export interface CommandAppDeps {
  /** The process's metrics registry, served at /metrics; a fresh one when absent. */
  metrics?: Registry;
  commands: UserCommands;
  store: EventStore;
  /** When non-empty, every write needs `Authorization: Bearer <one of these>`. */
  writeApiTokens?: readonly string[];
  bodyLimitBytes?: number;
  /** Requests per minute per client; 0 or absent: no limit. */
  rateLimitPerMinute?: number;
  /** Whose X-Forwarded-For names the client (TRUST_PROXY); absent: the peer's address. */
  trustProxy?: boolean | number | readonly string[];
  logger?: FastifyServerOptions['logger'];
}

const userIdParams = {
  type: 'object',
  additionalProperties: false,
  properties: { id: { type: 'string', format: 'uuid', description: 'The user id (case-insensitive).', examples: ['0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001'] } },
  required: ['id'],
} as const;

const ifMatchHeaders = {
  type: 'object',
  properties: {
    'if-match': {
      type: 'string',
      pattern: '^\\s*(W/)?"?\\d{1,15}"?\\s*$',
      description:
        'The stream revision the change was decided on, as the last answer gave it (`"3"`). If the user has moved on, the answer is 409 `REVISION_CONFLICT` with `currentRevision` and nothing is written. Without it a conflicting write is retried on fresh state.',
      examples: ['"0"'],
    },
  },
} as const;

// Raw lengths are capped generously; the decider enforces 1..255 after trimming.
const nameField = {
  type: 'string',
  minLength: 1,
  maxLength: 1024,
  description: 'Trimmed, then 1 to 255 characters (code points), without control characters.',
} as const;
const emailField = {
  type: 'string',
  minLength: 3,
  maxLength: 320,
  description: 'Trimmed and lower-cased, then checked; unique across users, case-insensitively.',
} as const;

const writeResult = {
  type: 'object',
  additionalProperties: false,
  properties: {
    id: { type: 'string', description: 'The user id (a UUIDv7; a UUIDv5 of the `Idempotency-Key` when one was sent).' },
    revision: { type: 'integer', description: 'The revision the user\'s stream is at after this write: the value for a later `If-Match`.' },
    consistencyToken: { type: 'string', description: 'Send it as `Consistency-Token` to the read API to read this write back.' },
  },
  required: ['id', 'revision', 'consistencyToken'],
  examples: [{ id: '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001', revision: 1, consistencyToken: 'user-0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001@1' }],
} as const;

/** The errors every write can answer; each route adds its own. */
const writeErrors = {
  400: '`VALIDATION_FAILED`: the id or a header (`If-Match`) is malformed; `problems` names every one.',
  401: '`UNAUTHORIZED`: `WRITE_API_TOKENS` is set and the bearer token is missing or wrong.',
  ...commonErrorDescriptions,
  500: '`INTERNAL_ERROR`: an unexpected failure; it has been logged. `EVENT_INVALID`: a stored event of the user fails its schema (the message names the stream). `CONFIG_INVALID`: this instance\'s `EMAIL_HASH_SECRET` differs from the one recorded (registrations and email changes fail until it is restarted with the right one).',
  503: '`STORE_UNAVAILABLE`: the event store or the key store cannot be reached or did not answer in time. The outcome is unknown: a write under way may still have been made. Retry after `Retry-After` seconds: a registration with its `Idempotency-Key`, a change with `If-Match`. `SHUTTING_DOWN`: this instance is stopping and did nothing with the request; retry it at once (the connection is closed, and a new one reaches another instance).',
} as const;
const bodyErrors = {
  400: '`VALIDATION_FAILED`: the body, a path parameter or a header breaks its schema, or the name or email is not acceptable; `problems` names every field (`in`: body, params, headers). `FST_ERR_CTP_INVALID_JSON_BODY`: the body is not JSON, or has a `__proto__` or `constructor.prototype` key. `BODY_NOT_UTF8`: the body\'s bytes are not UTF-8.',
  413: '`FST_ERR_CTP_BODY_TOO_LARGE`: the body is over `BODY_LIMIT_BYTES`.',
  415: '`FST_ERR_CTP_INVALID_MEDIA_TYPE`: the body is not `application/json`, or declares a charset other than UTF-8.',
} as const;
/** The routes that read no body still parse one that is sent: it must be JSON, UTF-8 and within the limit. */
const unreadBodyErrors = {
  413: '`FST_ERR_CTP_BODY_TOO_LARGE`: a body was sent (this route reads none) and is over `BODY_LIMIT_BYTES`.',
  415: '`FST_ERR_CTP_INVALID_MEDIA_TYPE`: a body was sent (this route reads none) and is not `application/json` in UTF-8; an empty body is fine.',
} as const;
const existingUserErrors = {
  404: '`USER_NOT_FOUND`: no user has this id.',
  410: '`USER_FORGOTTEN`: the person was forgotten (`DELETE /users/{id}/personal-data`); the user takes no change again.',
  409: '`REVISION_CONFLICT`: the user is not at the revision `If-Match` named (or stayed in conflict after 3 retries without it); `currentRevision` is where it is.',
  422: '`USER_DEACTIVATED`: a deactivated user accepts no changes.',
} as const;

const personalDataExport = {
  type: 'object',
  additionalProperties: false,
  description: "The person's data: the user now, and every event of theirs.",
  properties: {
    id: { type: 'string', description: 'The user id.' },
    revision: { type: 'integer', description: 'The revision the user\'s stream is at.' },
    user: {
      type: 'object',
      additionalProperties: false,
      properties: {
        name: { type: 'string' },
        email: { type: 'string' },
        status: { type: 'string', enum: ['registered', 'validated', 'deactivated'] },
        validated: { type: 'boolean' },
      },
      required: ['name', 'email', 'status', 'validated'],
    },
    events: {
      type: 'array',
      description: 'Every event of the user\'s stream, in order.',
      items: {
        type: 'object',
        additionalProperties: false,
        properties: {
          revision: { type: 'integer' },
          type: { type: 'string', description: 'The event type, e.g. `UserRegistered`.' },
          recordedAt: { type: 'string', format: 'date-time', description: 'When the event store recorded it.' },
          data: {
            type: 'object',
            additionalProperties: true,
            description: 'The event as decided: `userId`, `occurredAt` and the fields of its type (`name`, `email`, `previousEmail`).',
          },
        },
        required: ['revision', 'type', 'recordedAt', 'data'],
      },
    },
  },
  required: ['id', 'revision', 'user', 'events'],
  examples: [
    {
      id: '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001',
      revision: 0,
      user: { name: 'Ada Lovelace', email: 'ada@example.org', status: 'registered', validated: false },
      events: [
        {
          revision: 0,
          type: 'UserRegistered',
          recordedAt: '2026-12-01T10:00:00.012Z',
          data: { userId: '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001', name: 'Ada Lovelace', email: 'ada@example.org', occurredAt: '2026-12-01T10:00:00.010Z' },
        },
      ],
    },
  ],
} as const;

const changeResult = { ...writeResult, description: 'Done, or already so (nothing written): the revision the user is at.' } as const;
const writeTags = ['users'] as const;

const answer = (result: CommandResult) => ({
  ...result,
  consistencyToken: encodeConsistencyToken({ streamId: userStreamId(result.id), revision: result.revision }),
});

/** The target user and the options every change takes from its request. */
function changeOf(request: { id: string; params: { id: string }; headers: { 'if-match'?: string } }) {
  const expectedRevision = expectedRevisionFrom(request.headers['if-match']);
  const trace = requestTraceContext(request);
  const options: CommandOptions = {
    correlationId: request.id,
    ...(trace ? { trace } : {}),
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
  const app = createHttpApp({ logger: deps.logger ?? false, bodyLimitBytes: deps.bodyLimitBytes, trustProxy: deps.trustProxy });
  const { commands } = deps;

  harden(app, { rateLimitPerMinute: deps.rateLimitPerMinute ?? 0, tokens: deps.writeApiTokens ?? [] });
  registerApiDocs(app, {
    name: 'write API',
    description:
      'Registers and changes users. Every change is appended to the user\'s event stream; a 2xx means it is durable. Answers carry the stream `revision` (for `If-Match`) and a `consistencyToken` (for the read API\'s `Consistency-Token`). Errors are JSON `ErrorBody`s. Every answer carries `X-Request-Id`: the caller\'s own when it sent a sane one, which becomes the correlation id of the events the request causes.',
  });
  const metrics = deps.metrics ?? createMetricsRegistry('command-side');
  serveHttpMetrics(app, metrics);
  // The embedded store's group-commit writer: how busy it is, how well it groups, how long its commits take.
  const stopObservingCommits = eventStoreWriterMetrics(metrics, deps.store);
  app.addHook('onClose', (_instance, done) => {
    stopObservingCommits();
    done();
  });
  void app.register(async (api) => {
    // Readiness: the event store answers. Liveness: the process answers at all.
    serveProbes(api, async () => {
      try {
        await deps.store.readAll({ maxCount: 1 });
        return { ready: true, detail: { eventStore: 'up' } };
      } catch {
        return { ready: false, detail: { eventStore: 'down' } };
      }
    });

    await api.register(async (scope) => {
      const writes = scope.withTypeProvider<JsonSchemaToTsProvider>();
      await requireBearerTokens(scope, deps.writeApiTokens ?? []);

      writes.post(
        '/users',
        {
          schema: {
            summary: 'Register a user',
            description: 'Appends `UserRegistered` and reserves the email address. A 2xx means the write is durable.',
            tags: writeTags,
            security: optionalBearerToken,
            body: {
              type: 'object',
              additionalProperties: false,
              properties: { name: nameField, email: emailField },
              required: ['name', 'email'],
              examples: [{ name: 'Ada Lovelace', email: 'ada@example.org' }],
            },
            headers: {
              type: 'object',
              properties: {
                'idempotency-key': {
                  type: 'string',
                  minLength: 1,
                  maxLength: 255,
                  pattern: '^[\\x21-\\x7e]+$',
                  description:
                    'Makes a retry safe: the user id is derived from the key, so the same key with the same body answers the original registration and writes nothing; with a different body it is 422 `IDEMPOTENCY_KEY_REUSED`.',
                  examples: ['signup-7f3a9c'],
                },
              },
            },
            response: {
              201: {
                ...writeResult,
                description: 'Registered (or registered before under this `Idempotency-Key`).',
                headers: { Location: { type: 'string', description: 'The new user, e.g. `/users/<id>`.' } },
              },
              ...errorResponses({
                ...writeErrors,
                ...bodyErrors,
                409: '`EMAIL_TAKEN`: another user has this email address (case-insensitive). `USER_ALREADY_EXISTS`: an `Idempotency-Key` collided with a user registered otherwise.',
                410: '`USER_FORGOTTEN`: this `Idempotency-Key` registered a user who was since forgotten; the key registers no one again.',
                422: '`IDEMPOTENCY_KEY_REUSED`: this `Idempotency-Key` registered a user with a different body.',
              }),
            },
          },
        },
        async (request, reply) => {
          const idempotencyKey = request.headers['idempotency-key'];
          const trace = requestTraceContext(request);
          const result = await commands.register(request.body, {
            correlationId: request.id,
            ...(trace ? { trace } : {}),
            ...(idempotencyKey ? { idempotencyKey } : {}),
          });
          return reply.code(201).header('location', `/users/${result.id}`).send(answer(result));
        },
      );

      writes.put(
        '/users/:id/name',
        {
          schema: {
            summary: 'Rename a user',
            description: 'Appends `UserRenamed`; the same name (after trimming) writes nothing.',
            tags: writeTags,
            security: optionalBearerToken,
            params: userIdParams,
            headers: ifMatchHeaders,
            body: {
              type: 'object',
              additionalProperties: false,
              properties: { name: nameField },
              required: ['name'],
              examples: [{ name: 'Countess of Lovelace' }],
            },
            response: { 200: changeResult, ...errorResponses({ ...writeErrors, ...bodyErrors, ...existingUserErrors }) },
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
            summary: "Change a user's email address",
            description: 'Reserves the new address, appends `UserEmailChanged`, then releases the old address; the same address writes nothing.',
            tags: writeTags,
            security: optionalBearerToken,
            params: userIdParams,
            headers: ifMatchHeaders,
            body: {
              type: 'object',
              additionalProperties: false,
              properties: { email: emailField },
              required: ['email'],
              examples: [{ email: 'ada@lovelace.dev' }],
            },
            response: {
              200: changeResult,
              ...errorResponses({
                ...writeErrors,
                ...bodyErrors,
                ...existingUserErrors,
                409: `${existingUserErrors[409]} \`EMAIL_TAKEN\`: another user has this address (case-insensitive).`,
              }),
            },
          },
        },
        async (request) => {
          const { userId, options } = changeOf(request);
          return answer(await commands.changeEmail(userId, request.body.email, options));
        },
      );

      writes.post(
        '/users/:id/validation',
        {
          schema: {
            summary: "Mark a user's email address as validated",
            description: 'Appends `UserValidated`; validating again writes nothing.',
            tags: writeTags,
            security: optionalBearerToken,
            params: userIdParams,
            headers: ifMatchHeaders,
            response: { 200: changeResult, ...errorResponses({ ...writeErrors, ...unreadBodyErrors, ...existingUserErrors }) },
          },
        },
        async (request) => {
          const { userId, options } = changeOf(request);
          return answer(await commands.validate(userId, options));
        },
      );

      writes.delete(
        '/users/:id',
        {
          schema: {
            summary: 'Deactivate a user',
            description: 'Appends `UserDeactivated`; the user keeps its email address and accepts no further changes. Deactivating again writes nothing.',
            tags: writeTags,
            security: optionalBearerToken,
            params: userIdParams,
            headers: ifMatchHeaders,
            response: {
              200: changeResult,
              ...errorResponses({ ...writeErrors, ...unreadBodyErrors, 404: existingUserErrors[404], 409: existingUserErrors[409], 410: existingUserErrors[410] }),
            },
          },
        },
        async (request) => {
          const { userId, options } = changeOf(request);
          return answer(await commands.deactivate(userId, options));
        },
      );

      writes.delete(
        '/users/:id/personal-data',
        {
          schema: {
            summary: "Forget a person (erase their personal data)",
            description:
              "The right to erasure. Appends `UserForgotten`, releases the email address (it can be registered again) and destroys the user's data keys, so the name and email in every earlier event are unrecoverable; the read model erases the user (`GET /users/{id}` then answers 410) and Kafka consumers receive `user.forgotten.v1`. Works on deactivated users too. Idempotent: forgetting again answers 200 with the same revision and finishes any step a crash interrupted. `If-Match` is honoured but not needed.",
            tags: ['personal data'],
            security: optionalBearerToken,
            params: userIdParams,
            headers: ifMatchHeaders,
            response: {
              200: { ...writeResult, description: 'Forgotten (now or before): the revision of `UserForgotten`.' },
              ...errorResponses({ ...writeErrors, ...unreadBodyErrors, 404: existingUserErrors[404], 409: existingUserErrors[409] }),
            },
          },
        },
        async (request) => {
          const { userId, options } = changeOf(request);
          return answer(await commands.forget(userId, options));
        },
      );

      writes.get(
        '/users/:id/personal-data',
        {
          schema: {
            summary: 'Everything held about a person (access and portability)',
            description:
              'The rights of access and to data portability: the user as the write side has them now and every event of their stream with its time, personal fields decrypted, as JSON. Read from the event store, not the read model, so it is complete and current. Email reservations are not listed: they hold no address in clear (a keyed hash of it names them, and their events name only the holder). Needs the write token like every other route of this API.',
            tags: ['personal data'],
            security: optionalBearerToken,
            params: userIdParams,
            response: {
              200: personalDataExport,
              ...errorResponses({
                400: '`VALIDATION_FAILED`: the id is malformed.',
                401: writeErrors[401],
                ...commonErrorDescriptions,
                500: writeErrors[500],
                404: existingUserErrors[404],
                410: '`USER_FORGOTTEN`: the person was forgotten; nothing personal is held any more.',
                503: writeErrors[503],
              }),
            },
          },
        },
        async (request) => commands.personalData(request.params.id.toLowerCase()),
      );
    });
  });

  return app;
}

/**
 * The write API's settings as the configuration gives them: everything but its
 * commands and store. `buildConfiguredCommandApp` builds the service so, and the
 * benchmark's references build the same app around other commands
 * (`scripts/bench/write-api-no-work.ts`).
 */
export const configuredCommandAppOptions = (config: Config) =>
  ({
    writeApiTokens: config.writeApiTokens,
    bodyLimitBytes: config.bodyLimitBytes,
    rateLimitPerMinute: config.rateLimitPerMinute,
    trustProxy: config.trustProxy,
    logger: loggerOptions('command-side', config),
  }) satisfies Partial<CommandAppDeps>;

/**
 * The write API as the configuration sets it up, over the given event store and
 * vault: `main.ts` builds it so, and so does the benchmark's write API in memory
 * (`scripts/bench/write-api-in-memory.ts`), which must be this same app.
 */
export function buildConfiguredCommandApp(config: Config, deps: { store: EventStore; vault: Vault }) {
  return buildCommandApp({
    ...configuredCommandAppOptions(config),
    commands: userCommands({ store: deps.store, vault: deps.vault, emailGraceMs: config.emailReservationGraceMs }),
    store: deps.store,
  });
}
