import { createHash } from 'node:crypto';
import bearerAuth from '@fastify/bearer-auth';
import helmet, { type HelmetOptions } from 'helmet';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';

export interface HardeningOptions {
  /** Requests per minute per client; 0 turns rate limiting off. */
  rateLimitPerMinute: number;
  /** The API's bearer tokens: a request with one of them is counted as that token's client. */
  tokens?: readonly string[];
}

const digestOf = (token: string): string => createHash('sha256').update(token).digest('hex').slice(0, 32);

/**
 * A client is its bearer token when it sends one of the API's tokens (many
 * callers may share a proxy's address), else its address (`request.ip`, from
 * X-Forwarded-For when TRUST_PROXY trusts the proxy). A token the API does not
 * know counts as the address: made-up tokens must not buy fresh budgets. Tokens
 * are compared and kept as digests, so none sits in memory as a map key or
 * reaches a log.
 */
function clientKeyOf(tokens: readonly string[]): (request: FastifyRequest) => string {
  const known = new Set(tokens.map(digestOf));
  return (request) => {
    const authorization = request.headers.authorization;
    if (known.size > 0 && typeof authorization === 'string' && authorization.startsWith('Bearer ')) {
      // Trimmed as @fastify/bearer-auth trims it: the client is the token it authenticates as.
      const digest = digestOf(authorization.slice(7).trim());
      if (known.has(digest)) return `token:${digest}`;
    }
    return `ip:${request.ip}`;
  };
}

/**
 * Fastify's `trustProxy` for the TRUST_PROXY setting. A hop count trusts that
 * many hops in front of the server whoever they are (as Express does); Fastify
 * itself no longer takes a bare number, because a client that reaches the
 * server directly can then write its own X-Forwarded-For.
 */
export function trustProxyOption(trust: boolean | number | readonly string[] | undefined): boolean | string[] | ((address: string, hop: number) => boolean) {
  if (typeof trust === 'number') return (_address, hop) => hop < trust;
  if (typeof trust === 'object') return [...trust];
  return trust ?? false;
}

/**
 * The headers a JSON API needs (OWASP REST Security Cheat Sheet): a policy that
 * allows nothing and no framing, HSTS, nosniff, no referrer, same-origin
 * resources (helmet's), and `Cache-Control: no-store` (`securityHeaders`).
 * Helmet's headers that only mean something to an HTML document
 * (opener policy, origin-agent-cluster, DNS prefetch, download options, Flash
 * cross-domain policies, the legacy XSS auditor) are left out: every header is
 * work on every response, and these protect nothing here.
 */
const helmetOptions: HelmetOptions = {
  contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
  crossOriginResourcePolicy: { policy: 'same-origin' },
  frameguard: { action: 'deny' },
  crossOriginOpenerPolicy: false,
  originAgentCluster: false,
  xDnsPrefetchControl: false,
  xDownloadOptions: false,
  xPermittedCrossDomainPolicies: false,
  xXssProtection: false,
};

/**
 * The headers helmet sets for these options. With a fixed policy (no nonces)
 * they are the same for every response, so helmet runs once, at start, against
 * a response that only records them, instead of once per request.
 */
export function securityHeadersOf(options: HelmetOptions): Readonly<Record<string, string>> {
  const headers: Record<string, string> = {};
  const recorder = {
    setHeader: (name: string, value: string) => void (headers[name.toLowerCase()] = String(value)),
    removeHeader: (name: string) => void delete headers[name.toLowerCase()],
  };
  let failure: unknown;
  helmet(options)({} as never, recorder as never, (error?: unknown) => void (failure = error));
  if (failure !== undefined) throw failure instanceof Error ? failure : new Error('helmet refused its options', { cause: failure });
  return Object.freeze(headers);
}

/**
 * Every answer of both APIs: helmet's headers and `Cache-Control: no-store`. The
 * answers carry personal data (a user's name and address, an access export), so no
 * browser or shared cache may keep a copy: a copy would outlive the person's erasure,
 * and a stale one would show what a later write changed. Nothing here is worth
 * caching (an id's row changes with each write; read-your-writes needs the API).
 */
export const securityHeaders: Readonly<Record<string, string>> = Object.freeze({ ...securityHeadersOf(helmetOptions), 'cache-control': 'no-store' });

/**
 * Security headers and per-client rate limiting. Call it on the root instance
 * before registering routes: hooks on the root reach every route (and the
 * not-found answer).
 */
export function harden(app: FastifyInstance, options: HardeningOptions): void {
  app.addHook('onRequest', (_request, reply, done) => {
    void reply.headers(securityHeaders);
    done();
  });
  if (options.rateLimitPerMinute > 0) {
    void app.register(rateLimit, {
      max: options.rateLimitPerMinute,
      timeWindow: 60_000,
      keyGenerator: clientKeyOf(options.tokens ?? []),
      errorResponseBuilder: (_request, context) => ({
        statusCode: 429,
        code: 'RATE_LIMITED',
        error: 'Too Many Requests',
        message: `more than ${context.max} requests a minute; retry in ${context.after}`,
      }),
    });
    // The plugin limits the routes; requests no route takes (unknown paths, and known ones
    // asked with a method they do not have) count against the same budget, or a client
    // could probe for paths at any pace (the plugin's own advice for 404s).
    app.after(() => {
      const limitUnmatched = app.rateLimit();
      app.addHook('onRequest', (request, reply, done) => {
        if (!request.is404) return done();
        limitUnmatched.call(app, request, reply).then(() => done(), done);
      });
    });
  }
}

/**
 * What a 401 asks for (RFC 9110, section 11.6.1: a 401 must carry it; RFC 6750, section 3):
 * a bearer token, and `invalid_token` when the request sent one that is not the API's.
 */
const bearerChallenge = (authorization: string | undefined): string =>
  authorization === undefined ? 'Bearer realm="users"' : 'Bearer realm="users", error="invalid_token"';

/** Routes registered after this in `scope` need `Authorization: Bearer <one of tokens>`; none when empty. */
export async function requireBearerTokens(scope: FastifyInstance, tokens: readonly string[]): Promise<void> {
  if (tokens.length === 0) return;
  scope.addHook('onSend', (request, reply, payload, done) => {
    if (reply.statusCode === 401) void reply.header('www-authenticate', bearerChallenge(request.headers.authorization));
    done(null, payload);
  });
  // Compares in constant time; a failed attempt is logged without the token.
  await scope.register(bearerAuth, {
    keys: new Set(tokens),
    verifyErrorLogLevel: 'info',
    errorResponse: (error: Error) => ({ statusCode: 401, code: 'UNAUTHORIZED', error: 'Unauthorized', message: error.message }),
  });
}
