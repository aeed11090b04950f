import { testVault } from '../support/vault.js';
import { connect } from 'node:net';
import t from 'tap';
import { buildCommandApp } from '../../command-side/app.js';
import { userCommands } from '../../command-side/user-commands.js';
import { buildQueryApp } from '../../query-side/app.js';
import { loadConfig } from '../../shared/config.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { readDbsUnderTest } from '../support/read-dbs.js';

const writeApp = (options: { rateLimitPerMinute?: number; trustProxy?: boolean | number | readonly string[]; writeApiTokens?: string[] } = {}) => {
  const store = inMemoryEventStore();
  return buildCommandApp({ commands: userCommands({ store, vault: testVault, emailGraceMs: 60_000 }), store, ...options });
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
    t.equal(response.headers['cache-control'], 'no-store', `${url}: no cache keeps a copy`);
  }
});

void t.test("the read API's answers, which carry personal data, are never cached", async (t) => {
  const { db } = await readDbsUnderTest[0]!.open(t);
  const app = buildQueryApp({ db, consistencyWaitMs: 100 });
  t.teardown(() => app.close());
  for (const url of ['/users', '/users?email=ada@example.org', '/users/0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001', '/users/not-a-uuid', '/health']) {
    const response = await app.inject({ url });
    t.equal(response.headers['cache-control'], 'no-store', `${url} (${response.statusCode})`);
    t.equal(response.headers['x-content-type-options'], 'nosniff', url);
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
  t.equal((await post({ authorization: 'Bearer another-client' })).statusCode, 429, 'a token the API does not know is counted by address');
});

void t.test('unknown paths and wrong methods count against the rate limit too', async (t) => {
  const app = writeApp({ rateLimitPerMinute: 3 });
  t.teardown(() => app.close());
  const codes = [];
  for (const [method, url] of [['GET', '/nowhere'], ['DELETE', '/users'], ['GET', '/admin'], ['GET', '/nowhere'], ['POST', '/users']] as const) {
    codes.push((await app.inject({ method, url })).statusCode);
  }
  t.same(codes, [404, 405, 404, 429, 429], 'the fourth request of the minute is refused, whatever it asked for');
  const limited = await app.inject({ url: '/etc/passwd' });
  t.match(limited.json(), { statusCode: 429, code: 'RATE_LIMITED' });
  t.ok(Number(limited.headers['retry-after']) > 0, 'with Retry-After');
  t.equal((await app.inject({ url: '/nowhere', headers: { authorization: 'Bearer x' } })).statusCode, 429, 'an unknown token is still the same address');
});

void t.test('the health probes are outside the rate limit: a balancer behind one address is never told 429', async (t) => {
  const { db } = await readDbsUnderTest[0]!.open(t);
  const apps = { 'write API': writeApp({ rateLimitPerMinute: 2 }), 'read API': buildQueryApp({ db, consistencyWaitMs: 100, rateLimitPerMinute: 2 }) };
  for (const [name, app] of Object.entries(apps)) {
    t.teardown(() => app.close());
    for (const url of ['/health/live', '/health/ready', '/health']) {
      const codes = [];
      for (let i = 0; i < 4; i++) codes.push((await app.inject({ url })).statusCode);
      t.same(codes, [200, 200, 200, 200], `${name} ${url}`);
    }
    const limited = [];
    for (let i = 0; i < 3; i++) limited.push((await app.inject({ url: '/nowhere' })).statusCode);
    t.same(limited, [404, 404, 429], `${name}: the budget still holds for everything else`);
  }
});

void t.test('each of the API\'s tokens is a client with its own budget', async (t) => {
  const app = writeApp({ rateLimitPerMinute: 3, writeApiTokens: ['client-a', 'client-b'] });
  t.teardown(() => app.close());
  const post = (token: string) =>
    app.inject({ method: 'POST', url: '/users', payload: { name: 'A', email: 'bad' }, headers: { authorization: `Bearer ${token}` } });
  const codes = async (tokens: string[]) => {
    const answers = [];
    for (const token of tokens) answers.push((await post(token)).statusCode);
    return answers;
  };
  t.same(await codes(['client-a', 'client-a', 'client-a', 'client-a']), [400, 400, 400, 429]);
  t.same(await codes(['client-b', 'client-b']), [400, 400], 'another token, another budget');
  t.same(await codes(['client-a ']), [429], 'a token with trailing space is the token it authenticates as (bearer-auth trims it), not a fresh address budget');
});

void t.test('no rate limit unless one is configured: many requests from one address all answer', async (t) => {
  const app = writeApp({ rateLimitPerMinute: loadConfig({}).rateLimitPerMinute });
  t.teardown(() => app.close());
  const codes = new Set<number>();
  for (let i = 0; i < 300; i++) codes.add((await app.inject({ method: 'POST', url: '/users', payload: { name: 'A', email: 'bad' } })).statusCode);
  t.same([...codes], [400]);
});

void t.test('behind a trusted proxy the rate limit counts each client apart, by X-Forwarded-For', async (t) => {
  const budget = 2;
  /** Status codes of requests sent in turn, each from `peer` with the X-Forwarded-For it names. */
  const codesOf = async (trustProxy: boolean | number | readonly string[] | undefined, requests: Array<{ peer: string; forwardedFor: string }>) => {
    const app = writeApp({ rateLimitPerMinute: budget, ...(trustProxy === undefined ? {} : { trustProxy }) });
    t.teardown(() => app.close());
    const codes = [];
    for (const { peer, forwardedFor } of requests) {
      const response = await app.inject({ method: 'POST', url: '/users', payload: { name: 'A', email: 'bad' }, remoteAddress: peer, headers: { 'x-forwarded-for': forwardedFor } });
      codes.push(response.statusCode);
    }
    return codes;
  };
  const balancer = '10.0.0.5';
  const threeClients = ['203.0.113.1', '203.0.113.2', '203.0.113.3'].flatMap((client) => [0, 1].map(() => ({ peer: balancer, forwardedFor: client })));

  t.same(await codesOf(undefined, threeClients), [400, 400, 429, 429, 429, 429], 'not trusted: every client shares the balancer\'s budget');
  t.same(await codesOf(['10.0.0.0/8'], threeClients), [400, 400, 400, 400, 400, 400], 'the balancer\'s range trusted: each client has its own');
  t.same(await codesOf(1, threeClients), [400, 400, 400, 400, 400, 400], 'one hop trusted: the same');

  // A client writes its own X-Forwarded-For; the balancer appends the address it saw.
  const spoofing = ['198.51.100.1', '198.51.100.2', '198.51.100.3'].map((made) => ({ peer: balancer, forwardedFor: `${made}, 203.0.113.9` }));
  t.same(await codesOf(['10.0.0.0/8'], spoofing), [400, 400, 429], 'made-up entries in front of the balancer\'s do not give new budgets');
  t.same(await codesOf(1, spoofing), [400, 400, 429], 'nor with a hop count');
  const direct = ['198.51.100.1', '198.51.100.2', '198.51.100.3'].map((made) => ({ peer: '192.0.2.77', forwardedFor: made }));
  t.same(await codesOf(['10.0.0.0/8'], direct), [400, 400, 429], 'a client that is not a trusted proxy is counted by its own address');
});

void t.test('the read API can require bearer tokens too', async (t) => {
  const { db } = await readDbsUnderTest[0]!.open(t);
  const app = buildQueryApp({ db, consistencyWaitMs: 100, readApiTokens: ['reader'] });
  t.teardown(() => app.close());
  const missing = await app.inject({ url: '/users' });
  t.equal(missing.statusCode, 401);
  t.equal(missing.headers['www-authenticate'], 'Bearer realm="users"', 'a 401 says what it asks for');
  const wrong = await app.inject({ url: '/users', headers: { authorization: 'Bearer nope' } });
  t.equal(wrong.statusCode, 401);
  t.equal(wrong.headers['www-authenticate'], 'Bearer realm="users", error="invalid_token"', 'and that the token sent is not one');
  t.equal((await app.inject({ url: '/users', headers: { authorization: 'Bearer reader' } })).statusCode, 200);
  const health = await app.inject({ url: '/health' });
  t.equal(health.statusCode, 200, 'health stays open for load balancers');
  t.equal(health.headers['www-authenticate'], undefined, 'and asks for nothing');
});

void t.test('broken HTTP is refused; the server keeps serving', async (t) => {
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
