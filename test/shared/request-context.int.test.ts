import t, { type Test } from 'tap';
import { buildCommandApp } from '../../command-side/app.js';
import { messageOf } from '../../command-side/relay/relay.js';
import { buildQueryApp } from '../../query-side/app.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { tracingOn } from '../../shared/tracing.js';
import { readDbsUnderTest } from '../support/read-dbs.js';
import { commandsOver } from '../support/seed.js';

/** Request ids and trace context with tracing off (no OTLP endpoint): the default. */
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

function commandApp(t: Test) {
  const store = inMemoryEventStore();
  const app = buildCommandApp({ commands: commandsOver(store), store });
  t.teardown(() => app.close());
  return { app, store };
}

async function queryApp(t: Test) {
  const { db } = await readDbsUnderTest.find((kind) => kind.name === 'sqlite')!.open(t);
  const app = buildQueryApp({ db, consistencyWaitMs: 100 });
  t.teardown(() => app.close());
  return app;
}

void t.test('tracing is off without an OTLP endpoint', async (t) => {
  t.notOk(tracingOn());
});

void t.test('every answer of both APIs carries x-request-id: generated when absent, a well-formed one reused', async (t) => {
  const { app: writes } = commandApp(t);
  const reads = await queryApp(t);
  const requests = [
    { app: writes, what: 'write 201', options: { method: 'POST' as const, url: '/users', payload: { name: 'Ada', email: 'ada@example.org' } } },
    { app: writes, what: 'write 400', options: { method: 'POST' as const, url: '/users', payload: { name: 42 } } },
    { app: writes, what: 'write 415', options: { method: 'POST' as const, url: '/users', payload: 'name=Ada', headers: { 'content-type': 'application/x-www-form-urlencoded' } } },
    { app: writes, what: 'write 404', options: { method: 'PUT' as const, url: '/users/0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001/name', payload: { name: 'X' } } },
    { app: writes, what: 'write health', options: { url: '/health' } },
    { app: reads, what: 'read 404 user', options: { url: '/users/0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001' } },
    { app: reads, what: 'read list', options: { url: '/users?limit=1' } },
    { app: reads, what: 'read 400', options: { url: '/users?limit=1000' } },
    { app: reads, what: 'read no route', options: { url: '/nowhere' } },
  ];
  const generated = new Set<string>();
  for (const { app, what, options } of requests) {
    const answer = await app.inject(options);
    const id = answer.headers['x-request-id'];
    t.match(id, uuid, `${what} (${answer.statusCode}): a generated id`);
    generated.add(String(id));
    const reused = await app.inject({ ...options, headers: { ...('headers' in options ? options.headers : {}), 'x-request-id': 'checkout-7f3a:retry=1' } });
    t.equal(reused.headers['x-request-id'], 'checkout-7f3a:retry=1', `${what} (${reused.statusCode}): the caller's id`);
  }
  t.equal(generated.size, requests.length, 'each request has an id of its own');
});

void t.test('an X-Request-Id that is too long or not printable is replaced, and the request still served', async (t) => {
  const { app } = commandApp(t);
  for (const given of ['x'.repeat(129), 'two words', 'tab\there', '']) {
    const answer = await app.inject({ url: '/health', headers: { 'x-request-id': given } });
    t.equal(answer.statusCode, 200);
    t.match(answer.headers['x-request-id'], uuid, JSON.stringify(given.slice(0, 20)));
  }
});

void t.test('a server error carries it too', async (t) => {
  const store = { ...inMemoryEventStore(), readStream: () => Promise.reject(new Error('disk on fire')) };
  const app = buildCommandApp({ commands: commandsOver(store), store });
  t.teardown(() => app.close());
  const answer = await app.inject({ method: 'PUT', url: '/users/0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001/name', payload: { name: 'X' }, headers: { 'x-request-id': 'req-500' } });
  t.equal(answer.statusCode, 500);
  t.equal(answer.headers['x-request-id'], 'req-500');
});

void t.test("a write's X-Request-Id becomes its events' correlation id", async (t) => {
  const { app, store } = commandApp(t);
  const answer = await app.inject({ method: 'POST', url: '/users', payload: { name: 'Ada', email: 'ada@example.org' }, headers: { 'x-request-id': 'order-42' } });
  const [event] = await store.readStream(`user-${answer.json().id}`);
  t.match(event?.metadata, { correlationId: 'order-42', causationId: 'order-42' });
});

void t.test("a write's traceparent and tracestate land in its events' metadata and in their Kafka headers", async (t) => {
  const { app, store } = commandApp(t);
  const tracestate = 'congo=t61rcWkgMzE';
  const registered = await app.inject({
    method: 'POST',
    url: '/users',
    payload: { name: 'Ada', email: 'ada@example.org' },
    headers: { traceparent, tracestate },
  });
  t.equal(registered.statusCode, 201);
  const { id } = registered.json();
  const renamed = await app.inject({
    method: 'PUT',
    url: `/users/${id}/name`,
    payload: { name: 'Ada L.' },
    headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00' },
  });
  t.equal(renamed.statusCode, 200);

  const [registration, rename] = await store.readStream(`user-${id}`);
  t.match(registration?.metadata, { traceparent, tracestate });
  t.match(rename?.metadata, { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00' });
  t.notOk('tracestate' in rename!.metadata, 'no tracestate when none was sent');
  const claims = (await store.readAll({ maxCount: 100 })).filter((e) => e.streamId.startsWith('email-'));
  t.ok(claims.every((e) => e.metadata.traceparent === traceparent || e.metadata.traceparent === rename?.metadata.traceparent), 'the email claims carry it too');

  t.match(messageOf(registration!)?.headers, { traceparent, tracestate, 'event-type': 'user.registered.v1' });
  t.same(Object.keys(messageOf(rename!)!.headers).sort(), ['content-type', 'event-id', 'event-type', 'traceparent']);
});

void t.test('a malformed traceparent is ignored, never refused', async (t) => {
  const { app, store } = commandApp(t);
  const malformed = ['00-00000000000000000000000000000000-00f067aa0ba902b7-01', 'not a trace', `${traceparent}-x`, '00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01'];
  for (const [i, value] of malformed.entries()) {
    const answer = await app.inject({ method: 'POST', url: '/users', payload: { name: 'Ada', email: `ada${i}@example.org` }, headers: { traceparent: value, tracestate: 'a=b' } });
    t.equal(answer.statusCode, 201, value);
    const [event] = await store.readStream(`user-${answer.json().id}`);
    t.notOk('traceparent' in event!.metadata || 'tracestate' in event!.metadata, 'no trace context kept');
    t.same(Object.keys(messageOf(event!)!.headers).sort(), ['content-type', 'event-id', 'event-type'], 'and none in the Kafka headers');
  }
});
