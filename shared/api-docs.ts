import { existsSync, readFileSync } from 'node:fs';
import swagger, { type FastifyDynamicSwaggerOptions, type SwaggerTransform } from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance, FastifySchema } from 'fastify';
import { errorBodySchema } from './http.js';

/** The service's package.json: one folder up from the sources, two from a build in dist/. */
function servicePackage(): { name: string; version: string } {
  const candidates = ['../package.json', '../../package.json'].map((path) => new URL(path, import.meta.url));
  const found = candidates.find((url) => existsSync(url));
  if (!found) throw new Error('package.json not found next to the sources');
  return JSON.parse(readFileSync(found, 'utf8')) as { name: string; version: string };
}
const pkg = servicePackage();

const openApiPath = '/openapi.json';
const docsPath = '/docs';

/**
 * The documentation page loads its own scripts, styles and the document from this
 * server and nothing else: no inline code, no other origin. Every other answer keeps
 * the API's `default-src 'none'`.
 */
const docsPagePolicy = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

type ErrorBodySchema = typeof errorBodySchema;
export type ErrorResponseSchema = ErrorBodySchema & { readonly description: string; readonly headers?: object };

const retryAfter = {
  'Retry-After': { type: 'integer', minimum: 1, description: 'Seconds to wait before trying again.' },
} as const;

const wwwAuthenticate = {
  'WWW-Authenticate': { type: 'string', description: 'The scheme asked for: `Bearer realm="users"`, with `error="invalid_token"` when the token sent is not one of the API\'s.' },
} as const;

/**
 * The error answers a route gives, each described by when it happens. They go into
 * the route's `response` like any other: Fastify serialises an error body with the
 * same schema it is documented by, so the document cannot claim a shape the wire
 * does not have. `Retry-After` is documented on 429 and 503, where it is always sent,
 * and `WWW-Authenticate` on 401.
 */
export function errorResponses<const D extends Record<number, string>>(descriptions: D): { [S in keyof D]: ErrorResponseSchema } {
  const responses: Record<string, ErrorResponseSchema> = {};
  for (const [status, description] of Object.entries<string>(descriptions)) {
    const headers = status === '429' || status === '503' ? retryAfter : status === '401' ? wwwAuthenticate : undefined;
    responses[status] = { ...errorBodySchema, description, ...(headers ? { headers } : {}) };
  }
  return responses as { [S in keyof D]: ErrorResponseSchema };
}

/** Answers every route of both APIs may give, whatever it does. */
export const commonErrorDescriptions = {
  429: '`RATE_LIMITED`: more than `RATE_LIMIT_PER_MINUTE` requests this minute from this client (its bearer token, else its address).',
  500: '`INTERNAL_ERROR`: an unexpected failure; it has been logged.',
} as const;

/** The bearer tokens are optional: required only when the API is configured with some. */
export const optionalBearerToken = [{ bearerAuth: [] }, {}] as const;

/** A readiness or liveness answer: `status` and whatever the probe reports about its dependencies. */
const probeAnswer = (status: string, description: string) => ({
  type: 'object',
  description,
  properties: { status: { type: 'string', enum: [status] } },
  required: ['status'],
  additionalProperties: true,
});

/**
 * The health probes have no response schema of their own (a serialiser would drop
 * whatever a probe reports beyond it), so they are described here, in the document
 * only.
 */
function healthProbe(url: string): FastifySchema {
  if (url === '/health/live') {
    return { summary: 'Liveness: the process answers', tags: ['health'], response: { 200: probeAnswer('ok', 'The process is running.') } };
  }
  return {
    summary: "Readiness: the API's store answers",
    description: 'The write API checks its event store, the read API its read database. `/health` and `/health/ready` answer alike. No bearer token needed.',
    tags: ['health'],
    response: {
      200: probeAnswer('ok', 'Ready.'),
      503: { ...probeAnswer('unavailable', 'The store cannot be reached; the body names it.'), headers: retryAfter },
    },
  };
}

/**
 * In the document only: each error answer points at one `ErrorBody` component
 * instead of repeating the body's schema, with its own description and headers.
 * The health probes are described simply; `/metrics` (Prometheus text, for
 * scrapers rather than API clients) is left out.
 */
const documentedRoute: SwaggerTransform = ({ schema, url }) => {
  if (url === '/metrics') return { schema: { ...schema, hide: true }, url };
  if (url === '/health' || url.startsWith('/health/')) return { schema: { ...schema, ...healthProbe(url) }, url };
  const response = schema?.response as Record<string, { properties?: unknown; description?: string; headers?: object }> | undefined;
  if (!response) return { schema, url };
  // An error answer made by `errorResponses` shares the `properties` of errorBodySchema.
  const documented = Object.fromEntries(
    Object.entries(response).map(([status, answer]): [string, object] =>
      answer.properties === errorBodySchema.properties
        ? [status, { $ref: 'ErrorBody#', description: answer.description, ...(answer.headers ? { headers: answer.headers } : {}) }]
        : [status, answer],
    ),
  );
  return { schema: { ...schema, response: documented }, url };
};

export interface ApiDocsOptions {
  /** Which API this is, e.g. "write API". */
  name: string;
  description: string;
}

/**
 * The OpenAPI document of the app's routes at `GET /openapi.json` and a page to
 * browse and try them at `GET /docs`. Call it before registering routes: only the
 * routes registered after it are seen. Both are open (no bearer token) and count
 * against the client's rate limit like any request.
 */
export function registerApiDocs(app: FastifyInstance, options: ApiDocsOptions): void {
  app.addSchema({ $id: 'ErrorBody', title: 'ErrorBody', ...errorBodySchema });
  const swaggerOptions: FastifyDynamicSwaggerOptions = {
    openapi: {
      openapi: '3.1.0',
      info: { title: `${pkg.name}: ${options.name}`, version: pkg.version, description: options.description },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } } },
    },
    // Shared schemas become components named by their $id.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
    transform: documentedRoute,
  };
  void app.register(swagger, swaggerOptions);
  void app.register(swaggerUi, {
    routePrefix: docsPath,
    staticCSP: docsPagePolicy,
    // The base layout leaves out the top bar: its logo carries an inline <style> the
    // policy refuses, and its box for loading other documents has nothing to offer here.
    uiConfig: { layout: 'BaseLayout', deepLinking: true, displayRequestDuration: true },
  });
  // In a plugin, so that it loads after the rate limiter, like every other route.
  void app.register((docs, _options, done) => {
    docs.get(openApiPath, { schema: { hide: true } }, () => app.swagger());
    done();
  });
}
