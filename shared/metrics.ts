import { createServer, type Server } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import client, { type Registry } from 'prom-client';
import type { Logger } from 'pino';

/**
 * Prometheus metrics (prom-client). Each process has one registry holding
 * Node's and the process's own metrics (CPU, memory, heap, GC, event-loop lag:
 * prom-client's defaults) and what its role adds; every series carries a
 * `role` label. Names follow Prometheus conventions: snake case, base units
 * (seconds), `_total` for counters. The service's own metrics start `users_`.
 */
export function createMetricsRegistry(role: string): Registry {
  const registry = new client.Registry();
  registry.setDefaultLabels({ role });
  client.collectDefaultMetrics({ register: registry });
  eventLoopBusyTime(registry);
  return registry;
}

/**
 * `users_event_loop_busy_seconds_total`: the time this process's event loop has
 * spent running callbacks rather than waiting for I/O (Node's event-loop
 * utilization, `performance.eventLoopUtilization()`), read when Prometheus scrapes.
 * Its rate is the loop's busy share. One thread runs all of a role's JavaScript, so
 * near 1 the role is at its ceiling however many cores are free; prom-client's
 * defaults give the loop's lag, not this.
 */
function eventLoopBusyTime(registry: Registry): void {
  counterOfTotal(
    registry,
    'users_event_loop_busy_seconds_total',
    "Time this process's event loop has spent running callbacks rather than waiting for I/O, in seconds; its rate is the loop's busy share (near 1: the role is at its ceiling, whatever the cores)",
    () => performance.eventLoopUtilization().active / 1000,
  );
}

/**
 * A counter that reports a total something else keeps (`total()`, never falling),
 * read when Prometheus scrapes: nothing is paid where the total grows.
 */
export function counterOfTotal(registry: Registry, name: string, help: string, total: () => number): void {
  let reported = 0;
  new client.Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const now = total();
      this.inc(Math.max(0, now - reported));
      reported = Math.max(reported, now);
    },
  });
}

/** Request latencies in seconds: from 1 ms (a read) to 10 s (a write waiting out a store outage). */
const httpBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * `GET /metrics` on an API, and a latency histogram of every request by method,
 * route (the route's pattern, e.g. `/users/:id`, so ids do not explode the
 * series; `unmatched` for requests no route took) and status code. The
 * histogram's `_count` is the request count. One hook per request: its cost is a
 * label lookup and a bucket increment.
 */
export function serveHttpMetrics(app: FastifyInstance, registry: Registry): void {
  const duration = new client.Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP requests by method, route and status code: latency from arrival to the response sent, in seconds (its _count: the number of requests)',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: httpBuckets,
    registers: [registry],
  });
  app.addHook('onResponse', (request, reply, done) => {
    duration.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status_code: reply.statusCode },
      reply.elapsedTime / 1000,
    );
    done();
  });
  app.get('/metrics', { config: { rateLimit: false }, logLevel: 'warn' }, async (_request, reply) =>
    reply.type(registry.contentType).send(await registry.metrics()),
  );
}

/**
 * The probes of an API: `/health/live` (200 while the process answers),
 * `/health/ready` and `/health` (200 with `readiness`'s detail when its
 * dependencies answer, else 503 with `Retry-After`). The same bodies as the
 * projector's and the relay's ports.
 */
export function serveProbes(app: FastifyInstance, readiness: () => Promise<Readiness>): void {
  const ready = async (_request: FastifyRequest, reply: FastifyReply) => {
    const { ready: isReady, detail } = await readiness();
    if (isReady) return { status: 'ok', ...detail };
    return reply.code(503).header('retry-after', '1').send({ status: 'unavailable', ...detail });
  };
  // Outside the rate limit, as `/metrics` is: a load balancer's probes share an address (its own, or a
  // proxy's) with the traffic it balances, and a probe answered 429 would take every replica out of rotation.
  const probe = { config: { rateLimit: false } } as const;
  app.get('/health', probe, ready);
  app.get('/health/ready', probe, ready);
  app.get('/health/live', probe, () => ({ status: 'ok' }));
}

export interface Readiness {
  ready: boolean;
  /** Shown in the probe's JSON body: which dependency failed, how far behind... */
  detail: Record<string, unknown>;
}

/**
 * The small HTTP port of a role without an API (the projector, the relay):
 * `GET /metrics` (Prometheus text), `GET /health/live` (200 while the process
 * runs its event loop), `GET /health/ready` and `GET /health` (200 when `ready`
 * says so, else 503 with the reason). Nothing else; it listens on `host`.
 */
export async function startOpsServer(options: {
  host: string;
  port: number;
  registry: Registry;
  ready: () => Promise<Readiness>;
  logger: Logger;
}): Promise<{ port: number; close(): Promise<void> }> {
  const json = (status: number, body: unknown) => ({ status, type: 'application/json', body: JSON.stringify(body) });
  const answer = async (url: string): Promise<{ status: number; type: string; body: string }> => {
    const path = url.split('?')[0];
    if (path === '/metrics') return { status: 200, type: options.registry.contentType, body: await options.registry.metrics() };
    if (path === '/health/live') return json(200, { status: 'ok' });
    if (path === '/health/ready' || path === '/health') {
      const { ready, detail } = await options.ready().catch((error: unknown) => ({
        ready: false,
        detail: { error: error instanceof Error ? error.message : String(error) },
      }));
      return json(ready ? 200 : 503, { status: ready ? 'ok' : 'unavailable', ...detail });
    }
    return json(404, { statusCode: 404, code: 'ROUTE_NOT_FOUND', error: 'Not Found', message: `no route ${path}` });
  };
  const server: Server = createServer((request, response) => {
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'application/json' }).end(
        JSON.stringify({ statusCode: 405, code: 'METHOD_NOT_ALLOWED', error: 'Method Not Allowed', message: 'only GET' }),
      );
      return;
    }
    answer(request.url ?? '/').then(
      ({ status, type, body }) => response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' }).end(request.method === 'HEAD' ? undefined : body),
      (error: unknown) => {
        options.logger.error({ err: error }, 'metrics port: request failed');
        response.writeHead(500).end();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  options.logger.info({ port }, 'metrics and health probes listening');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
