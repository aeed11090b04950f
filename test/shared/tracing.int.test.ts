import { testVault } from '../support/vault.js';
import { randomBytes } from 'node:crypto';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-node';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { buildCommandApp } from '../../command-side/app.js';
import { kafkaPublisher } from '../../command-side/relay/kafka-publisher.js';
import { eventRelay } from '../../command-side/relay/relay.js';
import { userProjector } from '../../projector/projector.js';
import { buildQueryApp } from '../../query-side/app.js';
import { eventStoreFeed } from '../../shared/event-feed/event-store-feed.js';
import { kafkaFeed } from '../../shared/event-feed/kafka-feed.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { createKafka } from '../../shared/kafka/kafka-client.js';
import { stopTracing, tracingOn, useTracerProvider } from '../../shared/tracing.js';
import { openEmbeddedStore } from '../support/event-stores.js';
import { startKafkaTestBroker } from '../support/kafka-test-broker.js';
import { readDbsUnderTest } from '../support/read-dbs.js';
import { commandsOver, waitFor } from '../support/seed.js';

/**
 * With tracing on (spans kept in memory): one trace from a write request through
 * its events to the projector's batch span, on the embedded path and through Kafka.
 */
const logger = pino({ level: 'silent' });
const exporter = new InMemorySpanExporter();
useTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
t.teardown(() => stopTracing());

const callerTraceId = '4bf92f3577b34da6a3ce929d0e0e4736';
const callerSpanId = '00f067aa0ba902b7';
const traceparent = `00-${callerTraceId}-${callerSpanId}-01`;

const spans = (name: string | RegExp) => exporter.getFinishedSpans().filter((s) => (typeof name === 'string' ? s.name === name : name.test(s.name)));
const idsOf = (span: ReadableSpan) => ({ traceId: span.spanContext().traceId, spanId: span.spanContext().spanId });
const linksOf = (span: ReadableSpan) => span.links.map((l) => ({ traceId: l.context.traceId, spanId: l.context.spanId }));

async function writeSide(t: Test) {
  const store = await openEmbeddedStore(t);
  const app = buildCommandApp({ commands: commandsOver(store), store });
  t.teardown(() => app.close());
  return { store, app };
}

async function readDb(t: Test) {
  return (await readDbsUnderTest.find((kind) => kind.name === 'sqlite')!.open(t)).db;
}

/** The server span of the write and the append span under it. */
function writeSpans(t: Test, name: string, requestId: string) {
  const server = spans(name).find((s) => s.attributes['users.request.id'] === requestId);
  t.ok(server, `a server span ${name}`);
  const append = spans('append').find((s) => s.parentSpanContext?.spanId === server?.spanContext().spanId);
  t.ok(append, 'an append span under it');
  return { server: server!, append: append! };
}

void t.test('tracing is on once a provider is in use', async (t) => {
  t.ok(tracingOn());
});

void t.test('embedded path: the write continues the caller\'s trace; the projector\'s batch span links to it', async (t) => {
  const { store, app } = await writeSide(t);
  const db = await readDb(t);
  const projector = userProjector({ db, feed: eventStoreFeed(store, { vault: testVault, batchSize: 50 }), logger });
  void projector.start();
  t.teardown(() => projector.stop());

  const answer = await app.inject({
    method: 'POST',
    url: '/users',
    payload: { name: 'Ada', email: 'ada@example.org' },
    headers: { traceparent, tracestate: 'congo=t61rcWkgMzE', 'x-request-id': 'req-embedded' },
  });
  t.equal(answer.statusCode, 201);
  const { id } = answer.json();

  const { server, append } = writeSpans(t, 'POST /users', 'req-embedded');
  t.equal(server.kind, SpanKind.SERVER);
  t.same(idsOf(server).traceId, callerTraceId, "the server span is in the caller's trace");
  t.equal(server.parentSpanContext?.spanId, callerSpanId, "a child of the caller's span");
  t.match(server.attributes, { 'http.request.method': 'POST', 'http.route': '/users', 'url.path': '/users', 'http.response.status_code': 201 });
  t.equal(append.spanContext().traceId, callerTraceId);
  t.match(append.attributes, { 'users.command': 'RegisterUser', 'users.stream.id': `user-${id}`, 'users.stream.revision': 0 });

  const [event] = await store.readStream(`user-${id}`);
  t.same(
    { traceparent: event?.metadata.traceparent, tracestate: event?.metadata.tracestate },
    { traceparent: `00-${callerTraceId}-${append.spanContext().spanId}-01`, tracestate: 'congo=t61rcWkgMzE' },
    'the event carries the append span as its parent, and the caller\'s tracestate',
  );

  await waitFor(() => spans('process $all').some((s) => linksOf(s).some((l) => l.spanId === append.spanContext().spanId)), 10_000, 'a batch span linked to the write');
  const batch = spans('process $all').find((s) => linksOf(s).some((l) => l.spanId === append.spanContext().spanId))!;
  t.equal(batch.kind, SpanKind.CONSUMER);
  t.same(linksOf(batch).filter((l) => l.traceId === callerTraceId), [idsOf(append)], 'linked once, to the write\'s trace');
  t.match(batch.attributes, { 'messaging.operation.type': 'process', 'messaging.batch.message_count': Number });
  t.not(batch.status.code, SpanStatusCode.ERROR);
  t.ok((await db('USER_DATA').where('ID_USER_DATA', id)).length === 1, 'and the row is there');
});

void t.test('without a caller traceparent the request starts the trace, and the events still carry it', async (t) => {
  const { store, app } = await writeSide(t);
  const db = await readDb(t);
  const projector = userProjector({ db, feed: eventStoreFeed(store, { vault: testVault, batchSize: 50 }), logger });
  void projector.start();
  t.teardown(() => projector.stop());

  const answers: ReadableSpan[] = [];
  for (const [i, header] of [undefined, 'not-a-traceparent'].entries()) {
    const answer = await app.inject({
      method: 'POST',
      url: '/users',
      payload: { name: 'Alan', email: `alan${i}@example.org` },
      headers: { 'x-request-id': `req-new-${i}`, ...(header ? { traceparent: header } : {}) },
    });
    t.equal(answer.statusCode, 201, header ?? 'no traceparent');
    const { server, append } = writeSpans(t, 'POST /users', `req-new-${i}`);
    t.equal(server.parentSpanContext, undefined, 'a root span: a malformed traceparent is ignored');
    const [event] = await store.readStream(`user-${answer.json().id}`);
    t.equal(event?.metadata.traceparent, `00-${server.spanContext().traceId}-${append.spanContext().spanId}-01`);
    answers.push(append);
  }
  await waitFor(() => answers.every((append) => spans('process $all').some((s) => linksOf(s).some((l) => l.spanId === append.spanContext().spanId))), 10_000, 'batch spans linked to both writes');
  for (const append of answers) {
    const batch = spans('process $all').find((s) => linksOf(s).some((l) => l.spanId === append.spanContext().spanId))!;
    t.ok(linksOf(batch).some((l) => l.traceId === append.spanContext().traceId), 'the batch links into the write\'s trace');
  }
});

void t.test('a change route, a failed write and the read API are server spans too', async (t) => {
  const { app } = await writeSide(t);
  const reads = buildQueryApp({ db: await readDb(t), consistencyWaitMs: 100 });
  t.teardown(() => reads.close());
  const { id } = (await app.inject({ method: 'POST', url: '/users', payload: { name: 'Grace', email: 'grace@example.org' } })).json();

  const renamed = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'Grace H.' }, headers: { traceparent, 'x-request-id': 'req-rename' } });
  t.equal(renamed.statusCode, 200);
  const { server, append } = writeSpans(t, 'PUT /users/:id/name', 'req-rename');
  t.equal(server.spanContext().traceId, callerTraceId);
  t.match(append.attributes, { 'users.command': 'RenameUser', 'users.stream.revision': 1 });

  const conflict = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'Again' }, headers: { 'if-match': '"0"', 'x-request-id': 'req-conflict' } });
  t.equal(conflict.statusCode, 409);
  const failed = writeSpans(t, 'PUT /users/:id/name', 'req-conflict');
  t.equal(failed.server.attributes['http.response.status_code'], 409);
  t.not(failed.server.status.code, SpanStatusCode.ERROR, 'a 4xx is not a server error');
  t.equal(failed.append.attributes['error.type'], 'ConcurrencyError', 'the append says why it failed');

  const read = await reads.inject({ url: `/users/${id}`, headers: { traceparent, 'x-request-id': 'req-read' } });
  t.equal(read.headers['x-request-id'], 'req-read');
  const readSpan = spans('GET /users/:id').find((s) => s.attributes['users.request.id'] === 'req-read');
  t.equal(readSpan?.spanContext().traceId, callerTraceId);
  t.equal(readSpan?.kind, SpanKind.SERVER);

  for (const url of ['/health', '/health/live', '/health/ready']) {
    const probe = await reads.inject({ url, headers: { 'x-request-id': `req-probe${url}` } });
    t.equal(probe.headers['x-request-id'], `req-probe${url}`, `${url} answers with its request id`);
  }
  t.notOk(exporter.getFinishedSpans().some((s) => String(s.attributes['users.request.id']).startsWith('req-probe')), 'probes are not traced');

  await reads.inject({ url: '/nowhere', headers: { 'x-request-id': 'req-nowhere' } });
  t.ok(spans('GET').some((s) => s.attributes['users.request.id'] === 'req-nowhere' && s.attributes['http.response.status_code'] === 404), 'no route: named by its method only');
});

void t.test('through Kafka: the relay\'s send span and the projector\'s batch span both link to the write', async (t) => {
  const topic = `users.events.${randomBytes(4).toString('hex')}`;
  const broker = await startKafkaTestBroker({ topics: [{ name: topic, partitions: 3 }] });
  t.teardown(() => broker.stop());
  const kafka = createKafka({ brokers: broker.brokers, clientId: 'tracing-test', logger });
  const { store, app } = await writeSide(t);
  const db = await readDb(t);
  relayTo(t, store, kafkaPublisher(kafka, topic), topic);
  const projector = userProjector({
    db,
    feed: kafkaFeed({ kafka, topic, groupId: 'tracing-test', logger, consumerConfig: { sessionTimeout: 3000, rebalanceTimeout: 3000, heartbeatInterval: 100, maxWaitTimeInMs: 100 } }),
    logger,
  });
  void projector.start();
  t.teardown(() => projector.stop());

  const answer = await app.inject({ method: 'POST', url: '/users', payload: { name: 'Ada', email: 'ada@example.org' }, headers: { traceparent, 'x-request-id': 'req-kafka' } });
  t.equal(answer.statusCode, 201);
  const { append } = writeSpans(t, 'POST /users', 'req-kafka');
  const linked = (s: ReadableSpan) => linksOf(s).some((l) => l.traceId === callerTraceId && l.spanId === append.spanContext().spanId);

  await waitFor(() => spans(`process ${topic}`).some(linked), 20_000, 'the projector to apply the write from Kafka');
  const send = spans(`send ${topic}`).find(linked);
  t.equal(send?.kind, SpanKind.PRODUCER, 'the relay published it in a producer span linked to the write');
  t.match(send?.attributes, { 'messaging.destination.name': topic, 'messaging.operation.type': 'send' });
  t.equal(spans(`process ${topic}`).find(linked)?.kind, SpanKind.CONSUMER, 'the projector applied it in a consumer span linked to the write');

  const records = [0, 1, 2].flatMap((p) => broker.records(topic, p)).filter((r) => r.key?.toString() === `user-${answer.json().id}`);
  t.equal(records[0]?.headers.traceparent?.toString(), `00-${callerTraceId}-${append.spanContext().spanId}-01`, 'the Kafka message carries the traceparent header');
});

function relayTo(t: Test, store: EventStore, publisher: ReturnType<typeof kafkaPublisher>, topic: string) {
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 3000, batchSize: 50 });
  void relay.start();
  t.teardown(async () => {
    await relay.stop();
    await publisher.close();
  });
}
