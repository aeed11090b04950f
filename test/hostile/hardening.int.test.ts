import { connect } from 'node:net';
import t from 'tap';
import { buildCommandApp } from '../../command-side/app.js';
import { userCommands } from '../../command-side/user-commands.js';
import { buildQueryApp } from '../../query-side/app.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { readDbsUnderTest } from '../support/read-dbs.js';

const writeApp = (options: { rateLimitPerMinute?: number } = {}) => {
  const store = inMemoryEventStore();
  return buildCommandApp({ commands: userCommands({ store, emailGraceMs: 60_000 }), store, ...options });
};

/** Sends raw bytes and returns what the server answered before closing. */
function raw(port: number, bytes: string, waitMs = 2000): Promise<string> {
  return new Promise((resolve) => {
    let answer = '';
    const socket = connect(port, '127.0.0.1', () => socket.write(bytes));
    socket.on('data', (chunk) => (answer += chunk.toString()));
    socket.on('close', () => resolve(answer));
    socket.on('error', () => resolve(answer));
    setTimeout(() => socket.destroy(), waitMs);
  });
}

void t.test('security headers on every answer', async (t) => {
  const app = writeApp();
  t.teardown(() => app.close());
  for (const url of ['/health', '/users/not-a-uuid/name', '/nowhere']) {
    const response = await app.inject({ method: url === '/health' ? 'GET' : 'PUT', url });
    t.equal(response.headers['x-content-type-options'], 'nosniff', url);
    t.match(response.headers['content-security-policy'], /default-src 'none'/, url);
    t.ok(response.headers['strict-transport-security'], url);
    t.equal(response.headers['x-powered-by'], undefined, url);
  }
});

void t.test('rate limiting per client: 429 with Retry-After and a JSON body; clients are counted apart', async (t) => {
  const app = writeApp({ rateLimitPerMinute: 5 });
  t.teardown(() => app.close());
  const post = (headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/users', payload: { name: 'A', email: 'bad' }, headers });
  const codes = [];
  for (let i = 0; i < 7; i++) codes.push((await post()).statusCode);
  t.same(codes, [400, 400, 400, 400, 400, 429, 429]);
  const limited = await post();
  t.match(limited.json(), { statusCode: 429, code: 'RATE_LIMITED', error: 'Too Many Requests' });
  t.ok(Number(limited.headers['retry-after']) > 0, 'Retry-After set');
  t.equal((await post({ authorization: 'Bearer another-client' })).statusCode, 400, 'another client has its own budget');
});

void t.test('the read API can require bearer tokens too', async (t) => {
  const { db } = await readDbsUnderTest[0]!.open(t);
  const app = buildQueryApp({ db, consistencyWaitMs: 100, readApiTokens: ['reader'] });
  t.teardown(() => app.close());
  t.equal((await app.inject({ url: '/users' })).statusCode, 401);
  t.equal((await app.inject({ url: '/users', headers: { authorization: 'Bearer nope' } })).statusCode, 401);
  t.equal((await app.inject({ url: '/users', headers: { authorization: 'Bearer reader' } })).statusCode, 200);
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, 'health stays open for load balancers');
});

void t.test('broken HTTP and slow clients are cut off; the server keeps serving', async (t) => {
  const app = writeApp();
  t.teardown(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as { port: number }).port;
  t.match(await raw(port, 'GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400/, 'not HTTP');
  t.match(await raw(port, 'GET /health HTTP/1.1\r\nHost: x\r\nBad Header: \u0001\r\n\r\n'), /^HTTP\/1\.1 400/, 'invalid header');
  t.match(await raw(port, `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`), /^HTTP\/1\.1 431/, 'oversized headers');
  t.match(
    await raw(port, 'POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{"na":1,"x":2}'),
    /^HTTP\/1\.1 400/,
    'body longer than its Content-Length',
  );
  const health = await fetch(`http://127.0.0.1:${port}/health`);
  t.equal(health.status, 200, 'still serving');
});
