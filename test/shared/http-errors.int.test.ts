import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { ServiceError, type ErrorCode } from '../../shared/errors.js';
import { createHttpApp, httpStatusOf } from '../../shared/http.js';

/** Every service error a route raises answers its status; any other one is a 500 that names its code. */
void t.test('service errors map to their HTTP status', async (t) => {
  const app = createHttpApp({});
  app.get<{ Params: { code: string } }>('/fail/:code', (request) => {
    const retriable = request.params.code === 'PROJECTION_PAUSED' || request.params.code === 'STORE_UNAVAILABLE';
    throw new ServiceError(request.params.code as ErrorCode, `failed with ${request.params.code}`, retriable);
  });
  t.teardown(() => app.close());

  const answers: Record<string, number> = {};
  for (const code of Object.keys(httpStatusOf)) answers[code] = (await app.inject({ url: `/fail/${code}` })).statusCode;
  t.same(answers, httpStatusOf, 'each route error answers its status');
  t.same([answers.USER_NOT_FOUND, answers.EMAIL_TAKEN, answers.CONSISTENCY_TIMEOUT, answers.EVENT_INVALID], [404, 409, 503, 500]);

  for (const code of ['PROJECTION_PAUSED', 'REBUILD_LOCKED', 'REBUILD_LOCK_LOST', 'REBUILD_ABORTED', 'STORE_MISSING', 'CONFIG_INVALID']) {
    const response = await app.inject({ url: `/fail/${code}` });
    t.equal(response.statusCode, 500, code);
    t.match(response.json(), { statusCode: 500, code, error: 'Internal Server Error', message: `failed with ${code}` });
  }
  t.equal((await app.inject({ url: '/fail/PROJECTION_PAUSED' })).headers['retry-after'], '1', 'a retriable one still says when to retry');
});

/**
 * An app listening with a `/slow` route held until `release()`, a raw connection to it, and the close
 * begun while that connection's request is under way (a keep-alive connection busy when a rolling
 * deploy's SIGTERM comes): what the connection received, when it ended, and when the close did.
 */
async function closingWithASlowRequest(routes: (app: ReturnType<typeof createHttpApp>) => void = () => {}) {
  const app = createHttpApp({});
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  let started: () => void = () => {};
  const slowStarted = new Promise<void>((resolve) => (started = resolve));
  app.get('/slow', async () => {
    started();
    await released;
    return { done: true };
  });
  routes(app);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  const socket = connect(port, '127.0.0.1');
  let answer = '';
  socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
  const ended = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
  await slowStarted;
  const closed = app.close();
  await new Promise((resolve) => setTimeout(resolve, 50));
  return { socket, release, closed, ended, answer: () => answer };
}

void t.test('a request that arrives while the app closes is 503 SHUTTING_DOWN in the error form; the one under way finishes', async (t) => {
  // A connection busy with a request when the close begins stays open: a second request on it
  // (pipelined, as a keep-alive client's next one may be) arrives while the app closes.
  const { socket, release, closed, ended, answer } = await closingWithASlowRequest((app) => app.get('/quick', () => ({ quick: true })));
  socket.write('GET /quick HTTP/1.1\r\nHost: x\r\nX-Request-Id: second-one\r\n\r\n');
  await new Promise((resolve) => setTimeout(resolve, 50));
  release();
  await closed;
  await ended;
  const [first, second] = answer().split(/(?=HTTP\/1\.1 )/);
  t.match(first, /^HTTP\/1\.1 200 /, 'the request under way finished');
  t.match(first, /\{"done":true\}/);
  t.match(second, /^HTTP\/1\.1 503 /, 'the one after it is refused');
  t.match(second, /\r\nretry-after: 1\r\n/i, 'with Retry-After');
  t.match(second, /\r\nx-request-id: second-one\r\n/i, 'with its request id');
  t.match(second, /\r\nconnection: close\r\n/i, 'and the connection closed');
  const body = JSON.parse(second!.slice(second!.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
  t.match(body, { statusCode: 503, code: 'SHUTTING_DOWN', error: 'Service Unavailable', message: /shutting down/ });
});

void t.test('a keep-alive connection whose answer comes after the close began is closed once idle: the close does not wait for the keep-alive timeout', async (t) => {
  const { release, closed, ended, answer } = await closingWithASlowRequest();
  release();
  // Fastify's keep-alive timeout is 72 s: a close that waited for it would not end within this bound.
  const bound = new Promise<'timed out'>((resolve) => setTimeout(() => resolve('timed out'), 10_000).unref());
  t.equal(await Promise.race([closed.then(() => 'closed' as const), bound]), 'closed', 'the app closed');
  t.equal(await Promise.race([ended.then(() => 'ended' as const), bound]), 'ended', "the client's connection was closed");
  t.match(answer(), /^HTTP\/1\.1 200 [\s\S]*\{"done":true\}$/, 'after its answer');
});
