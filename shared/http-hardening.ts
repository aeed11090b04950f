import { createHash } from 'node:crypto';
import bearerAuth from '@fastify/bearer-auth';
import helmet from '@fastify/helmet';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';

export interface HardeningOptions {
  /** Requests per minute per client; 0 turns rate limiting off. */
  rateLimitPerMinute: number;
}

/**
 * A client is its bearer token when it sends one (many callers may share a
 * proxy's address), else its address. The token is hashed so it never sits in
 * memory as a map key or reaches a log.
 */
function clientKey(request: FastifyRequest): string {
  const authorization = request.headers.authorization;
  if (typeof authorization === 'string' && authorization.startsWith('Bearer ')) {
    return `token:${createHash('sha256').update(authorization.slice(7)).digest('hex').slice(0, 32)}`;
  }
  return `ip:${request.ip}`;
}

/**
 * Security headers and per-client rate limiting. Call it on the root instance
 * before registering routes: both plugins are queued in order, so every route
 * (and the not-found answer) gets them.
 */
export function harden(app: FastifyInstance, options: HardeningOptions): void {
  // An API serves no HTML: the strictest policy costs nothing.
  void app.register(helmet, {
    contentSecurityPolicy: { directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    crossOriginResourcePolicy: { policy: 'same-origin' },
  });
  if (options.rateLimitPerMinute > 0) {
    void app.register(rateLimit, {
      max: options.rateLimitPerMinute,
      timeWindow: 60_000,
      keyGenerator: clientKey,
      errorResponseBuilder: (_request, context) => ({
        statusCode: 429,
        code: 'RATE_LIMITED',
        error: 'Too Many Requests',
        message: `more than ${context.max} requests a minute; retry in ${context.after}`,
      }),
    });
  }
}

/** Routes registered after this in `scope` need `Authorization: Bearer <one of tokens>`; none when empty. */
export async function requireBearerTokens(scope: FastifyInstance, tokens: readonly string[]): Promise<void> {
  if (tokens.length === 0) return;
  // Compares in constant time; a failed attempt is logged without the token.
  await scope.register(bearerAuth, {
    keys: new Set(tokens),
    verifyErrorLogLevel: 'info',
    errorResponse: (error: Error) => ({ statusCode: 401, code: 'UNAUTHORIZED', error: 'Unauthorized', message: error.message }),
  });
}
