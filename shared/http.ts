import { randomUUID } from 'node:crypto';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import type { JsonSchemaToTsProvider } from '@fastify/type-provider-json-schema-to-ts';
import { ServiceError, ValidationError, type ApiErrorCode, type ErrorCode, type FieldProblem } from './errors.js';
import { fieldProblems, withPlainUuids } from './schema-validation.js';
import { lazyRequestLogger } from './request-logger.js';
import { routeMethods } from './http-methods.js';
import { acceptJsonBodiesOnly, unsupportedMediaTypeMessage } from './json-bodies.js';
import { trustProxyOption } from './http-hardening.js';
import { addRequestContext } from './request-context.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

/** The status of each error a route can raise. */
export const httpStatusOf: Readonly<Record<ApiErrorCode, number>> = {
  VALIDATION_FAILED: 400,
  INVALID_CONSISTENCY_TOKEN: 400,
  INVALID_CURSOR: 400,
  USER_NOT_FOUND: 404,
  USER_ALREADY_EXISTS: 409,
  EMAIL_TAKEN: 409,
  REVISION_CONFLICT: 409,
  USER_DEACTIVATED: 422,
  USER_FORGOTTEN: 410,
  IDEMPOTENCY_KEY_REUSED: 422,
  STORE_UNAVAILABLE: 503,
  CONSISTENCY_TIMEOUT: 503,
  WRITE_QUARANTINED: 503,
  SHUTTING_DOWN: 503,
  EVENT_INVALID: 500,
};

/** Any other service error that reaches a route (the projector's, a setting's) is a 500 that names its code. */
const statusOfCode = (code: ErrorCode): number => (Object.hasOwn(httpStatusOf, code) ? httpStatusOf[code as ApiErrorCode] : 500);

/** The JSON body of every error answer. */
export const errorBodySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    statusCode: { type: 'integer', description: 'The HTTP status, repeated.' },
    code: { type: 'string', description: 'What went wrong, for programs: e.g. `VALIDATION_FAILED`, `EMAIL_TAKEN`, `REVISION_CONFLICT`.' },
    error: { type: 'string', description: 'The HTTP reason phrase.' },
    message: { type: 'string', description: 'What went wrong, for people.' },
    problems: {
      type: 'array',
      description: 'With `VALIDATION_FAILED`: every field that is wrong.',
      items: {
        type: 'object',
        additionalProperties: false,
        properties: {
          field: { type: 'string', description: 'The field, parameter or header, e.g. `email` or `if-match`.' },
          in: { type: 'string', description: 'Where it was: `body`, `params`, `querystring` or `headers`.' },
          message: { type: 'string' },
        },
        required: ['field', 'message'],
      },
    },
    currentRevision: { type: 'integer', description: 'With `REVISION_CONFLICT`: the revision the user is at.' },
  },
  examples: [{ statusCode: 409, code: 'REVISION_CONFLICT', error: 'Conflict', message: 'stream user-0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001 is at revision 1, expected 0', currentRevision: 1 }],
  required: ['statusCode', 'code', 'error', 'message'],
} as const;

const reasons: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  410: 'Gone',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Entity',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/**
 * Bodies and headers are validated strictly (a number is not a name); query
 * strings and path parameters arrive as text and are coerced to their schema's
 * types. Unknown properties are rejected, never silently dropped.
 */
function validatorCompilers() {
  const strict = withPlainUuids(addFormats(new Ajv({ allErrors: true, removeAdditional: false, coerceTypes: false, useDefaults: true })));
  const coercing = withPlainUuids(addFormats(new Ajv({ allErrors: true, removeAdditional: false, coerceTypes: 'array', useDefaults: true })));
  return ({ schema, httpPart }: { schema: object; httpPart?: string }) =>
    (httpPart === 'querystring' || httpPart === 'params' ? coercing : strict).compile(schema);
}

export interface AppOptions {
  logger?: FastifyServerOptions['logger'];
  bodyLimitBytes?: number;
  /** Fastify's `trustProxy`: whose X-Forwarded-For gives `request.ip` (config TRUST_PROXY); off when absent. */
  trustProxy?: boolean | number | readonly string[];
  /**
   * How long a connection may stay silent (Node's socket timeout), 60 s when absent: a request that
   * is answered later than this on purpose (the read API's wait for a write) needs more, or its
   * caller gets a dropped connection in the place of its answer.
   */
  connectionTimeoutMs?: number;
}

/**
 * One line per request, when it completes, at debug; a request that failed on
 * the server is logged at error. Fastify's default is two info lines per request,
 * which at the read path's rates costs more than the query itself.
 */
class RequestLogLines extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null, request: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ err: error, statusCode: reply.statusCode }, 'request errored');
    else reply.log.debug({ method: request.method, url: request.url, statusCode: reply.statusCode, ms: reply.elapsedTime }, 'request completed');
  }
}

/** A Fastify instance with the project's validation, error bodies and limits. */
export function createHttpApp(options: AppOptions) {
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: options.bodyLimitBytes ?? 16_384,
    trustProxy: trustProxyOption(options.trustProxy),
    // Clients that trickle their request are cut off rather than holding a socket.
    requestTimeout: 30_000,
    connectionTimeout: options.connectionTimeoutMs ?? 60_000,
    // Answered by `refuseWhileClosing` instead, in the APIs' error form.
    return503OnClosing: false,
    logController: new RequestLogLines(),
    childLoggerFactory: lazyRequestLogger,
    // A caller's X-Request-Id becomes the correlation id of the events it causes, when it is sane.
    requestIdHeader: false,
    genReqId: (request) => {
      const given = request.headers['x-request-id'];
      return typeof given === 'string' && /^[\x21-\x7e]{1,128}$/.test(given) ? given : randomUUID();
    },
  }).withTypeProvider<JsonSchemaToTsProvider>();
  addRequestContext(app);
  refuseWhileClosing(app);
  // The APIs speak JSON only: any other body is 415, not a string that fails a schema.
  acceptJsonBodiesOnly(app);
  const methodsOf = routeMethods(app);
  app.setValidatorCompiler(validatorCompilers());
  app.setErrorHandler(handleError);
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0]!;
    const allowed = methodsOf(path);
    if (allowed.length > 0) {
      return reply.code(405).header('allow', allowed.join(', ')).send({
        statusCode: 405,
        code: 'METHOD_NOT_ALLOWED',
        error: 'Method Not Allowed',
        message: `${request.method} is not allowed on ${path}; allowed: ${allowed.join(', ')}`,
      });
    }
    return reply.code(404).send({ statusCode: 404, code: 'ROUTE_NOT_FOUND', error: 'Not Found', message: `no route ${request.method} ${path}` });
  });
  return app;
}

/**
 * A request that arrives on an open connection while the app closes (a rolling deploy's SIGTERM)
 * is answered 503 `SHUTTING_DOWN` before anything of it is done: in the APIs' error form, with
 * `Retry-After`, its `X-Request-Id` and `Connection: close`, so that the caller retries on a new
 * connection, which reaches another instance. The requests already under way finish, and their
 * connections are closed as soon as they fall idle: Node closes the idle ones only when the close
 * begins, and a keep-alive connection whose answer comes later would hold the close for the
 * keep-alive timeout (72 s). (Fastify's own `return503OnClosing` answers before any hook: a bare
 * body without a `code`, `Retry-After` or the request id.)
 */
function refuseWhileClosing(app: FastifyInstance): void {
  let closing = false;
  let reaper: NodeJS.Timeout | undefined;
  app.addHook('preClose', (done) => {
    closing = true;
    reaper = setInterval(() => app.server.closeIdleConnections(), 25);
    reaper.unref();
    done();
  });
  app.addHook('onClose', (_instance, done) => {
    clearInterval(reaper);
    done();
  });
  app.addHook('onRequest', (_request, reply, done) => {
    if (!closing) return done();
    void reply.code(503).header('retry-after', '1').header('connection', 'close').send({
      statusCode: 503,
      code: 'SHUTTING_DOWN',
      error: 'Service Unavailable',
      message: 'this instance is shutting down and did nothing with the request; retry it',
    });
  });
}

function validationProblems(error: FastifyError): FieldProblem[] {
  const where = error.validationContext;
  return fieldProblems(error.validation as Parameters<typeof fieldProblems>[0]).map((p) => ({
    ...p,
    ...(where ? { in: where } : {}),
  }));
}

function handleError(
  this: FastifyInstance,
  error: FastifyError | ServiceError,
  request: Parameters<Parameters<FastifyInstance['setErrorHandler']>[0]>[1],
  reply: Parameters<Parameters<FastifyInstance['setErrorHandler']>[0]>[2],
) {
  if ('validation' in error && error.validation) {
    const problems = validationProblems(error);
    return reply.code(400).send({
      statusCode: 400,
      code: 'VALIDATION_FAILED',
      error: 'Bad Request',
      message: problems.map((p) => `${p.field} ${p.message}`).join('; '),
      problems,
    });
  }
  if (error instanceof ServiceError) {
    const statusCode = statusOfCode(error.code);
    if (statusCode >= 500) request.log.warn({ err: error }, 'service unavailable');
    if (error.retriable) void reply.header('retry-after', '1');
    // As `refuseWhileClosing` answers: the caller's retry must come on a new connection, which reaches another instance.
    if (error.code === 'SHUTTING_DOWN') void reply.header('connection', 'close');
    return reply.code(statusCode).send({
      statusCode,
      code: error.code,
      error: reasons[statusCode] ?? 'Error',
      message: error.message,
      ...(error instanceof ValidationError ? { problems: error.problems } : {}),
      ...('actual' in error && typeof error.actual === 'number' ? { currentRevision: error.actual } : {}),
    });
  }
  const statusCode = typeof error.statusCode === 'number' ? error.statusCode : 500;
  if (statusCode >= 400 && statusCode < 500) {
    return reply.code(statusCode).send({
      statusCode,
      code: error.code ?? 'BAD_REQUEST',
      error: reasons[statusCode] ?? 'Client Error',
      message: statusCode === 415 ? unsupportedMediaTypeMessage(request) : error.message,
    });
  }
  request.log.error({ err: error }, 'unexpected error');
  return reply.code(500).send({
    statusCode: 500,
    code: 'INTERNAL_ERROR',
    error: 'Internal Server Error',
    message: 'an unexpected error occurred; it has been logged',
  });
}
