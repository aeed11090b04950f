import { randomUUID } from 'node:crypto';
import { createServer as createHttp2Server, type Http2Session, type Settings } from 'node:http2';
import { createServer, type Socket } from 'node:net';
import t, { type Test } from 'tap';
import { EventStoreDBClient, jsonEvent } from '@eventstore/db-client';
import sharedPb from '@eventstore/db-client/generated/shared_pb.js';
import streamsPb from '@eventstore/db-client/generated/streams_pb.js';
import type { BatchAppendReq } from '@eventstore/db-client/generated/streams_pb.js';
import { StoreUnavailableError } from '../../shared/errors.js';
import { esdbEventStore } from '../../shared/event-store/esdb-event-store.js';
import type { EventStore, RecordedEvent } from '../../shared/event-store/port.js';
import { eventStoreContract } from '../contracts/event-store.contract.js';
import { startEsdbTestServer } from '../support/esdb-test-server.js';

/**
 * The EventStoreDB adapter against the in-repo gRPC test server, which the real
 * client reaches over TCP. With EVENTSTORE_URL set (e.g.
 * `esdb://127.0.0.1:2113?tls=false`), the contract and the conflict test run
 * against that real server instead; the outage tests always use the test server.
 */
const realServer = process.env.EVENTSTORE_URL;

const event = (n: number) => ({ type: 'Counted', data: { n } });
const numbers = (events: readonly RecordedEvent[]) => events.map((e) => (e.data as { n: number }).n);

/** Opens a store and closes it when the test ends. */
function openStore(t: Test, connectionString: string, options: Partial<Parameters<typeof esdbEventStore>[0]> = {}) {
  const store = esdbEventStore({ connectionString, ...options });
  t.teardown(() => store.close());
  return store;
}

/** The next `count` events of `stream`, failing the test after `ms` instead of hanging. */
async function next(iterator: AsyncIterator<RecordedEvent>, stream: string, count: number, ms = 10_000) {
  const taken: RecordedEvent[] = [];
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`only ${taken.length} of ${count} events within ${ms} ms`)), ms);
  });
  try {
    while (taken.length < count) {
      const result = await Promise.race([iterator.next(), timeout]);
      if (result.done) throw new Error('the subscription ended');
      if (result.value.streamId === stream) taken.push(result.value);
    }
    return taken;
  } finally {
    clearTimeout(timer);
  }
}

for (const batchAppend of realServer ? [] : [true, false]) {
  void t.test(`contract against the test server (${batchAppend ? 'BatchAppend' : 'Append only'})`, async (t) => {
    const server = await startEsdbTestServer({ batchAppend });
    t.teardown(() => server.stop());
    eventStoreContract(t, () => {
      const store = esdbEventStore({ connectionString: server.connectionString });
      return Promise.resolve({ store, cleanup: () => store.close() });
    }, { readsByStream: false, appendsToStreams: false, capsStreams: true });
  });
}

if (realServer) {
  void t.test('contract against EVENTSTORE_URL', (t) => {
    eventStoreContract(t, () => {
      const store = esdbEventStore({ connectionString: realServer });
      return Promise.resolve({ store, cleanup: () => store.close() });
    }, { readsByStream: false, appendsToStreams: false, capsStreams: true });
    // A promise, so that tap waits for the subtests queued above.
    return Promise.resolve();
  });
}

void t.test('a conflict is a ConcurrencyError naming the current revision, with the vendor error as cause', async (t) => {
  const server = realServer ? undefined : await startEsdbTestServer();
  t.teardown(() => server?.stop());
  const store = openStore(t, realServer ?? server!.connectionString);
  const id = `conflict-${randomUUID()}`;
  await t.rejects(store.appendToStream(id, [event(1)], { expectedRevision: 'stream_exists' }), {
    name: 'ConcurrencyError',
    streamId: id,
    expected: 'stream_exists',
    actual: -1,
    retriable: false,
  });
  await store.appendToStream(id, [event(1), event(2)], { expectedRevision: 'no_stream' });
  const error = await store.appendToStream(id, [event(3)], { expectedRevision: 0 }).catch((e: unknown) => e);
  t.match(error, { name: 'ConcurrencyError', code: 'REVISION_CONFLICT', expected: '0', actual: 1 });
  t.match((error as Error).cause, { name: 'Error', type: 'wrong-expected-version' });
  t.same(numbers(await store.readStream(id)), [1, 2], 'nothing was written');
});

void t.test('closing one store leaves the appends of another store on the same server alone', async (t) => {
  const server = await startEsdbTestServer();
  t.teardown(() => server.stop());
  const first = esdbEventStore({ connectionString: server.connectionString });
  const second = openStore(t, server.connectionString);
  await first.appendToStream(`a-${randomUUID()}`, [event(1)], { expectedRevision: 'no_stream' });
  await second.appendToStream(`b-${randomUUID()}`, [event(1)], { expectedRevision: 'no_stream' });
  const pending = second.appendToStream(`b-${randomUUID()}`, [event(2)], { expectedRevision: 'no_stream' });
  await first.close();
  t.equal((await pending).nextExpectedRevision, 0);
  t.same(numbers(await second.readAll({ maxCount: 10 })), [1, 1, 2], 'and the other store keeps working');
});

void t.test('system events are neither read nor delivered, and do not shorten pages', async (t) => {
  const server = await startEsdbTestServer();
  t.teardown(() => server.stop());
  const store = openStore(t, server.connectionString);
  const id = `sys-${randomUUID()}`;
  const first = await store.appendToStream(id, [event(1)], { expectedRevision: 'no_stream' });
  server.appendSystemEvent();
  await store.appendToStream(id, [event(2)], { expectedRevision: 0 });
  server.appendSystemEvent();
  server.appendSystemEvent();
  await store.appendToStream(id, [event(3)], { expectedRevision: 1 });
  const page = await store.readAll({ after: first.position, maxCount: 2 });
  t.same(numbers(page), [2, 3]);
  server.appendSystemEvent();
  t.equal(await store.headPosition!(), page[1]!.position, 'the head is the last event a reader can read, not a system event after it');
  const all = await store.readAll({ maxCount: 1000 });
  t.notOk(all.some((e) => e.streamId.startsWith('$') || e.type.startsWith('$')));
  const subscription = store.subscribeToAll();
  t.teardown(() => subscription.close());
  const seen: RecordedEvent[] = [];
  for await (const e of subscription) {
    seen.push(e);
    if (e.streamId === id && e.revision === 2) break;
  }
  t.ok(seen.some((e) => e.streamId === id && e.revision === 2), 'the subscription read up to the last event');
  t.notOk(seen.some((e) => e.streamId.startsWith('$')));
});

void t.test('a catch-up subscription over a long history, with appends and a dropped subscription while it goes out: every event once, in order', async (t) => {
  const server = await startEsdbTestServer();
  t.teardown(() => server.stop());
  const store = openStore(t, server.connectionString);
  const id = `long-${randomUUID()}`;
  // Enough history that the server pauses on a full buffer (the client takes it as it reads).
  for (let n = 0; n < 4000; n += 500) {
    await store.appendToStream(id, Array.from({ length: 500 }, (_, i) => event(n + i)), { expectedRevision: n === 0 ? 'no_stream' : n - 1 });
  }
  const subscription = store.subscribeToAll();
  t.teardown(() => subscription.close());
  const iterator = subscription[Symbol.asyncIterator]();
  const early = await next(iterator, id, 100);
  // Appended while most of the history is still to go out: they come after it, once each.
  for (let n = 4000; n < 4100; n += 20) {
    await store.appendToStream(id, Array.from({ length: 20 }, (_, i) => event(n + i)), { expectedRevision: n - 1 });
  }
  // A node dropping subscriptions drops one still going through the history too: the adapter resubscribes.
  server.dropSubscriptions();
  const rest = await next(iterator, id, 4000);
  const all = [...early, ...rest];
  t.same(numbers(all), Array.from({ length: 4100 }, (_, n) => n), 'history and the appends made during it, in order, none twice');
  t.ok(all.every((e, i) => i === 0 || e.position > all[i - 1]!.position), 'positions ascend');
});

void t.test('the client lets a server send 1 MiB ahead on a connection and on each stream (patches/@eventstore+db-client+6.2.1.patch)', async (t) => {
  // A bare HTTP/2 server in place of a node: only the settings and window the client sends are looked at.
  const sessions: Http2Session[] = [];
  const server = createHttp2Server();
  let settings: Settings | undefined;
  server.on('session', (session) => {
    sessions.push(session);
    session.once('remoteSettings', (remote) => (settings = remote));
  });
  // The connection-level window comes as a WINDOW_UPDATE after the settings: looked at once a request is in.
  const seen = new Promise<number>((resolve) => {
    server.on('stream', (stream, _headers) => {
      setTimeout(() => {
        resolve(stream.session?.state.remoteWindowSize ?? 0);
        stream.respond({ ':status': 503 }, { endStream: true });
      }, 100);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const session of sessions) session.destroy();
    server.close();
  });
  const port = (server.address() as { port: number }).port;
  const store = openStore(t, `esdb://127.0.0.1:${port}?tls=false`, { operationTimeoutMs: 1000 });
  void store.readAll({ maxCount: 1 }).catch(() => {});
  const window = await seen;
  t.equal(settings?.initialWindowSize, 1024 * 1024, 'each stream: 1 MiB');
  t.ok(window >= 1024 * 1024, `the connection: ${window} bytes`);
});

void t.test('the client sends each event as the unpatched client did, in requests within batchAppendSize (patches/@eventstore+db-client+6.2.1.patch)', async (t) => {
  const server = await startEsdbTestServer();
  const client = EventStoreDBClient.connectionString(server.connectionString);
  t.teardown(async () => {
    await client.dispose();
    await server.stop();
  });
  // Every request the client serialises for BatchAppend, as it goes out.
  const sent: BatchAppendReq[] = [];
  const serialize = streamsPb.BatchAppendReq.prototype.serializeBinary;
  streamsPb.BatchAppendReq.prototype.serializeBinary = function (this: BatchAppendReq) {
    sent.push(this);
    return serialize.call(this);
  };
  t.teardown(() => void (streamsPb.BatchAppendReq.prototype.serializeBinary = serialize));

  const events = Array.from({ length: 40 }, (_, i) =>
    jsonEvent({
      id: randomUUID(),
      type: i % 2 ? 'UserRegistered' : 'Zählung',
      data: { n: i, name: `Zoë ${'x'.repeat(i * 20)}`, nested: { ok: true } },
      metadata: { correlationId: `c-${i}`, note: 'ünïcødé' },
    }),
  );
  const stream = `patched-${randomUUID()}`;
  await client.appendToStream(stream, events, { expectedRevision: 'no_stream', batchAppendSize: 4096 });
  streamsPb.BatchAppendReq.prototype.serializeBinary = serialize;

  // As the client built each message before the patch: data and metadata as base64 text.
  const base64Json = (value: unknown) => Buffer.from(JSON.stringify(value), 'utf8').toString('base64');
  const unpatched = events.map((e) => {
    const message = new streamsPb.BatchAppendReq.ProposedMessage();
    message.setId(new sharedPb.UUID().setString(e.id));
    message.getMetadataMap().set('type', e.type);
    message.getMetadataMap().set('content-type', e.contentType);
    message.setData(base64Json(e.data));
    message.setCustomMetadata(base64Json(e.metadata));
    return Buffer.from(message.serializeBinary());
  });
  const proposed = sent.flatMap((request) => request.getProposedMessagesList());
  t.equal(proposed.length, events.length, 'every event sent once');
  t.same(
    proposed.map((message) => Buffer.from(message.serializeBinary())),
    unpatched,
    'each message the same bytes as the unpatched client sent',
  );
  t.ok(sent.length > 1, `the batch split over ${sent.length} requests`);
  for (const request of sent) {
    // The batch's options and correlation id take under 200 bytes beside the messages.
    const bytes = request.serializeBinary().length;
    t.ok(bytes < 4096 + 200, `a request of ${bytes} bytes`);
  }
  const read: unknown[] = [];
  for await (const resolved of client.readStream(stream)) read.push(resolved.event?.data);
  t.same(read, events.map((e) => e.data), 'read back as appended');
});

void t.test("a cap joins what the stream's metadata already says; the metadata is left alone once it names one", async (t) => {
  const server = realServer ? undefined : await startEsdbTestServer();
  t.teardown(() => server?.stop());
  const connectionString = realServer ?? server!.connectionString;
  const store = openStore(t, connectionString);
  const client = EventStoreDBClient.connectionString(connectionString);
  t.teardown(() => client.dispose());
  const metadataOf = async (stream: string) => (await client.getStreamMetadata(stream)).metadata;

  const governed = `acl-${randomUUID()}`;
  await client.setStreamMetadata(governed, { acl: { readRoles: ['ops'] }, owner: 'team-a' });
  await store.capStream!(governed, 10);
  t.same(await metadataOf(governed), { acl: { readRoles: ['ops'] }, owner: 'team-a', maxCount: 10 }, "an operator's ACL and own keys are kept");

  const chosen = `chosen-${randomUUID()}`;
  await client.setStreamMetadata(chosen, { maxCount: 50 });
  await store.capStream!(chosen, 10);
  t.same(await metadataOf(chosen), { maxCount: 50 }, "an operator's cap stands");
});

void t.test('an unreachable store fails fast with a retriable StoreUnavailableError, and recovers', async (t) => {
  const server = await startEsdbTestServer();
  t.teardown(() => server.stop());
  const store = openStore(t, server.connectionString, { operationTimeoutMs: 2_000 });
  const id = `down-${randomUUID()}`;
  await store.appendToStream(id, [event(1)], { expectedRevision: 'no_stream' });
  await server.stop();
  const attempts: [string, () => Promise<unknown>][] = [
    ['append', () => store.appendToStream(id, [event(2)], { expectedRevision: 0 })],
    ['readStream', () => store.readStream(id)],
    ['readAll', () => store.readAll({ maxCount: 10 })],
  ];
  for (const [name, attempt] of attempts) {
    const started = Date.now();
    const error = await attempt().then(
      () => undefined,
      (e: unknown) => e,
    );
    t.type(error, StoreUnavailableError, `${name} rejects with StoreUnavailableError`);
    t.match(error, { code: 'STORE_UNAVAILABLE', retriable: true });
    t.ok((error as Error).cause, `${name} keeps the vendor error as cause`);
    t.ok(Date.now() - started < 1_000, `${name} failed fast (${Date.now() - started} ms)`);
  }
  await server.restart();
  await store.appendToStream(id, [event(2)], { expectedRevision: 0 });
  t.same(numbers(await store.readStream(id)), [1, 2], 'works again once the server is back');
});

void t.test('a node that accepts connections but never answers is bounded by operationTimeoutMs', async (t) => {
  const sockets = new Set<Socket>();
  const silent = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const { port } = silent.address() as { port: number };
  // Registered first so it runs after the store closed: cutting the sockets ends the client's pending calls.
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        silent.close(() => resolve());
      }),
  );
  const store = openStore(t, `esdb://127.0.0.1:${port}?tls=false`, { operationTimeoutMs: 300 });
  const attempts: [string, () => Promise<unknown>][] = [
    ['append', () => store.appendToStream('x', [event(1)], { expectedRevision: 'any' })],
    ['readStream', () => store.readStream('x')],
  ];
  for (const [name, attempt] of attempts) {
    const started = Date.now();
    await t.rejects(attempt(), { name: 'StoreUnavailableError', retriable: true }, name);
    const took = Date.now() - started;
    t.ok(took >= 250 && took < 1_500, `${name} gave up after the timeout (${took} ms)`);
  }
});

void t.test('a subscription survives dropped subscriptions and a server restart: no gaps, no duplicates', async (t) => {
  const server = await startEsdbTestServer();
  t.teardown(() => server.stop());
  const drops: unknown[] = [];
  const store: EventStore = openStore(t, server.connectionString, {
    resubscribeDelayMs: { initial: 20, max: 200 },
    onSubscriptionDropped: (error) => drops.push(error),
  });
  const prefix = `resub-${randomUUID()}-`;
  const id = `${prefix}a`;
  const subscription = store.subscribeToAll({ streamPrefixes: [prefix] });
  t.teardown(() => subscription.close());
  const iterator = subscription[Symbol.asyncIterator]();

  await store.appendToStream(id, [event(1), event(2)], { expectedRevision: 'no_stream' });
  t.same(numbers(await next(iterator, id, 2)), [1, 2]);

  server.dropSubscriptions();
  // Appended while the subscription is down or resubscribing: must still arrive, once.
  await store.appendToStream(id, [event(3), event(4)], { expectedRevision: 1 });
  t.same(numbers(await next(iterator, id, 2)), [3, 4], 'after a drop');

  await server.stop();
  await new Promise((r) => setTimeout(r, 300));
  await server.restart();
  await store.appendToStream(id, [event(5)], { expectedRevision: 3 });
  await store.appendToStream(id, [event(6)], { expectedRevision: 4 });
  const after = await next(iterator, id, 2);
  t.same(numbers(after), [5, 6], 'after a restart');
  t.same(
    after.map((e) => e.revision),
    [4, 5],
  );
  await store.appendToStream(id, [event(7)], { expectedRevision: 5 });
  t.same(numbers(await next(iterator, id, 1)), [7], 'nothing was pending twice');
  t.ok(drops.length >= 2, `the drops were reported (${drops.length})`);
  t.ok(drops.every((e) => e instanceof Error));
});
