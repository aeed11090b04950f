import { testEmailHashSecret, testKeyStore, testVault } from '../support/vault.js';
import { createVault } from '../../shared/personal-data/vault.js';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import type { EventPublisher, OutboundMessage } from '../../command-side/relay/publisher.js';
import { messageOf, eventRelay } from '../../command-side/relay/relay.js';
import { parseRelayCheckpoint, relayLease, relayStreamId } from '../../command-side/relay/relay-lease.js';
import { StoreUnavailableError } from '../../shared/errors.js';
import { esdbEventStore } from '../../shared/event-store/esdb-event-store.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import type { EventStore, EventToAppend } from '../../shared/event-store/port.js';
import { envelopeSchema, fromEnvelope } from '../../shared/public-events.js';
import { ajv } from '../../shared/schema-validation.js';
import { startEsdbTestServer } from '../support/esdb-test-server.js';
import { eventStoreKinds } from '../support/event-stores.js';
import { commandsOver, seedUsers, waitFor } from '../support/seed.js';

const logger = pino({ level: 'silent' });
const topic = 'users.events.v1';

/** A broker stand-in that records what it acknowledged, and can be told to fail. */
function recordingPublisher(behaviour: { failTimes?: number; crashAfterAck?: number } = {}) {
  const acknowledged: OutboundMessage[] = [];
  let failures = behaviour.failTimes ?? 0;
  let publishes = 0;
  const publisher: EventPublisher & { acknowledged: OutboundMessage[] } = {
    acknowledged,
    async publish(messages) {
      if (failures > 0) {
        failures -= 1;
        throw new StoreUnavailableError('broker down');
      }
      acknowledged.push(...messages);
      publishes += 1;
      if (behaviour.crashAfterAck === publishes) throw new Error('crash after the broker acknowledged');
    },
    close: () => Promise.resolve(),
  };
  return publisher;
}

async function userEventsIn(store: EventStore) {
  return (await store.readAll({ maxCount: 1_000_000 })).filter((e) => e.streamId.startsWith('user-'));
}

/** Every user event at least once, and each stream's revisions in order once duplicates are dropped. */
function assertComplete(t: Test, acknowledged: OutboundMessage[], expected: Awaited<ReturnType<typeof userEventsIn>>) {
  const seen = new Map<string, number>();
  let outOfOrder = 0;
  for (const message of acknowledged) {
    const { streamId, revision } = fromEnvelope(Buffer.from(message.value));
    t.equal(message.key, streamId, 'keyed by stream id');
    const last = seen.get(streamId) ?? -1;
    if (revision > last + 1) outOfOrder += 1;
    if (revision === last + 1) seen.set(streamId, revision);
  }
  t.equal(outOfOrder, 0, 'no stream skips ahead');
  const complete = expected.every((e) => (seen.get(e.streamId) ?? -1) >= e.revision);
  t.ok(complete, `every one of ${expected.length} user events acknowledged`);
}

void t.test('messageOf: the public v1 envelope, keyed by stream, with type and content-type headers', async (t) => {
  const store = inMemoryEventStore();
  await commandsOver(store).register({ name: 'Ada', email: 'ada@example.org' });
  const [event] = await userEventsIn(store);
  const message = messageOf(event!)!;
  const envelope = JSON.parse(message.value);
  t.ok(ajv.validate(envelopeSchema, envelope), 'valid against the envelope schema');
  t.match(envelope, { specVersion: '1', type: 'user.registered.v1', stream: event!.streamId, revision: 0, logPosition: event!.position.toString() });
  t.same(message.headers, { 'content-type': 'application/vnd.users.event+json; version=1', 'event-type': 'user.registered.v1', 'event-id': event!.id });
  t.equal(messageOf({ ...event!, type: 'EmailReserved' }), undefined, 'internal events are not published');
});

void t.test('the trace context a write was made under rides along as the traceparent and tracestate headers', async (t) => {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  const traced = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate: 'congo=t61rcWkgMzE' };
  const { id } = await commands.register({ name: 'Ada', email: 'ada@example.org' }, { trace: traced });
  await commands.rename(id, 'Ada L.');
  const publisher = recordingPublisher();
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 3000, batchSize: 7 });
  void relay.start();
  t.teardown(() => relay.stop());
  await waitFor(() => publisher.acknowledged.length === 2, 5000, 'both published');
  const [registered, renamed] = publisher.acknowledged;
  t.match(registered?.headers, { ...traced, 'event-type': 'user.registered.v1' });
  t.same(Object.keys(renamed!.headers).sort(), ['content-type', 'event-id', 'event-type'], 'no trace context, no header');
  // Metadata that is not a well-formed trace context (written by hand, by another tool) never reaches a header.
  const [event] = await userEventsIn(store);
  const forged = messageOf({ ...event!, metadata: { traceparent: '00-zz-00f067aa0ba902b7-01', tracestate: 'a=b' } });
  t.notOk(forged && 'traceparent' in forged.headers);
});

void t.test('publishes every user event in order, and only user events', async (t) => {
  const store = inMemoryEventStore();
  await seedUsers(commandsOver(store), 20);
  const publisher = recordingPublisher();
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 3000, batchSize: 7 });
  void relay.start();
  t.teardown(() => relay.stop());
  const expected = await userEventsIn(store);
  await waitFor(() => publisher.acknowledged.length === expected.length, 5000, 'all published');
  t.same(publisher.acknowledged.map((m) => JSON.parse(m.value).eventId), expected.map((e) => e.id), 'exactly once, in log order');
  // Live: a new write is relayed without a restart.
  await commandsOver(store).register({ name: 'Late', email: 'late@example.org' });
  await waitFor(() => publisher.acknowledged.length === expected.length + 1, 5000, 'live event');
});

void t.test('a broker outage is retried; nothing is skipped', async (t) => {
  const store = inMemoryEventStore();
  await seedUsers(commandsOver(store), 5);
  const publisher = recordingPublisher({ failTimes: 3 });
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 3000, batchSize: 4 });
  void relay.start();
  t.teardown(() => relay.stop());
  const expected = await userEventsIn(store);
  await waitFor(() => publisher.acknowledged.length === expected.length, 10_000, 'published after the outage');
  assertComplete(t, publisher.acknowledged, expected);
});

void t.test('an event store outage is retried too: the relay neither stops nor skips anything', async (t) => {
  const inner = inMemoryEventStore();
  await seedUsers(commandsOver(inner), 6);
  // The store fails the way a store that stopped answering does: a resume point's write, then the subscription mid-way.
  const failures = { relayAppends: 2, subscriptions: 1 };
  const store: EventStore = Object.assign(Object.create(inner) as EventStore, {
    async appendToStream(...args: Parameters<EventStore['appendToStream']>) {
      const [stream, events] = args;
      const resumePoint = events.some((e) => (e.data as { position?: string }).position !== undefined);
      if (stream === relayStreamId(topic) && resumePoint && failures.relayAppends > 0) {
        failures.relayAppends -= 1;
        throw new StoreUnavailableError('event store down');
      }
      return inner.appendToStream(...args);
    },
    subscribeToAll(...args: Parameters<EventStore['subscribeToAll']>) {
      const subscription = inner.subscribeToAll(...args);
      const failThis = failures.subscriptions-- > 0;
      return {
        close: () => subscription.close(),
        async *[Symbol.asyncIterator]() {
          let delivered = 0;
          for await (const event of subscription) {
            if (failThis && ++delivered > 5) throw new StoreUnavailableError('subscription dropped');
            yield event;
          }
        },
      };
    },
  });
  const publisher = recordingPublisher();
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 600, batchSize: 2 });
  const running = relay.start();
  t.teardown(() => relay.stop());
  const expected = await userEventsIn(inner);
  await waitFor(() => relay.status().position === expected.at(-1)!.position.toString(), 10_000, 'caught up after the outages');
  t.same(failures, { relayAppends: 0, subscriptions: -2 }, 'both kinds of failure happened, and the relay subscribed again');
  t.equal(relay.status().role, 'publishing');
  assertComplete(t, publisher.acknowledged, expected);
  await commandsOver(inner).register({ name: 'Later', email: 'later@example.org' });
  const later = (await userEventsIn(inner)).at(-1)!.position.toString();
  await waitFor(() => relay.status().position === later, 5000, 'live again');
  await relay.stop();
  await t.resolves(running, 'it ran until it was stopped');
});

void t.test('a resume point that fails to be written while the broker is down: the relay starts again once both answer', async (t) => {
  const inner = inMemoryEventStore();
  await seedUsers(commandsOver(inner), 3);
  // The first resume point's append hangs a while, then fails as a store that stopped answering does.
  let failedResumePoints = 0;
  const store: EventStore = Object.assign(Object.create(inner) as EventStore, {
    async appendToStream(...args: Parameters<EventStore['appendToStream']>) {
      const [stream, events] = args;
      const resumePoint = events.some((e) => (e.data as { position?: string }).position !== undefined);
      if (stream === relayStreamId(topic) && resumePoint && failedResumePoints === 0) {
        failedResumePoints += 1;
        await new Promise((resolve) => setTimeout(resolve, 250));
        throw new StoreUnavailableError('event store timed out');
      }
      return inner.appendToStream(...args);
    },
  });
  // The broker acknowledges the first batch, then is down for half a second: the relay retries a send
  // while the resume point fails, and its lease needs renewing before the broker is back.
  const acknowledged: OutboundMessage[] = [];
  let downUntil: number | undefined;
  const publisher: EventPublisher = {
    async publish(messages) {
      if (downUntil !== undefined && Date.now() < downUntil) throw new StoreUnavailableError('broker down');
      acknowledged.push(...messages);
      downUntil ??= Date.now() + 500;
    },
    close: () => Promise.resolve(),
  };
  const warnings: string[] = [];
  const recording = pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) });
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger: recording, leaseMs: 300, batchSize: 1 });
  const running = relay.start();
  t.teardown(() => relay.stop());
  const expected = await userEventsIn(inner);
  const head = expected.at(-1)!.position.toString();
  await waitFor(() => relay.status().position === head, 5000, 'the resume point at the head once the store and the broker answer');
  t.equal(failedResumePoints, 1, 'the resume point failed once');
  t.ok(warnings.includes('event store unavailable; relay retrying from its last resume point'), 'the relay stood by and said why');
  t.equal(relay.status().role, 'publishing');
  t.equal(parseRelayCheckpoint((await inner.readStream(relayStreamId(topic))).at(-1)!).position, head, 'and is written');
  assertComplete(t, acknowledged, expected);
  await relay.stop();
  await t.resolves(running, 'it ran until it was stopped');
});

void t.test('a relay that loses its lease while it retries a send through a broker outage stands by at once', async (t) => {
  const inner = inMemoryEventStore();
  await seedUsers(commandsOver(inner), 2);
  // Another relay takes the lease while the first resume point is on its way (as if this one had stalled past it),
  // late enough that the relay is retrying its next send by then.
  let usurped = false;
  const store: EventStore = Object.assign(Object.create(inner) as EventStore, {
    async appendToStream(...args: Parameters<EventStore['appendToStream']>) {
      const [stream, events] = args;
      const resumePoint = events.some((e) => (e.data as { position?: string }).position !== undefined);
      if (stream === relayStreamId(topic) && resumePoint && !usurped) {
        usurped = true;
        await new Promise((resolve) => setTimeout(resolve, 200));
        const last = (await inner.readStream(stream)).at(-1)!;
        await inner.appendToStream(stream, [{ type: 'RelayCheckpointed', data: { owner: 'usurper', leaseUntil: new Date(Date.now() + 60_000).toISOString() } }], {
          expectedRevision: last.revision,
        });
      }
      return inner.appendToStream(...args);
    },
  });
  // The broker acknowledges the first batch, then is down for good.
  const acknowledged: OutboundMessage[] = [];
  const publisher: EventPublisher = {
    async publish(messages) {
      if (acknowledged.length > 0) throw new StoreUnavailableError('broker down');
      acknowledged.push(...messages);
    },
    close: () => Promise.resolve(),
  };
  // A long lease: the relay still holds it with margin to spare, as far as it knows, all through the test.
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 60_000, batchSize: 1, owner: 'slow' });
  void relay.start();
  t.teardown(() => relay.stop());
  await waitFor(() => usurped && relay.status().role === 'standby', 5000, 'the relay to stand by');
  t.equal(acknowledged.length, 1, 'nothing more was published');
  t.equal(relay.status().position, undefined, 'no resume point of its own was written');
});

void t.test('a crash after the broker acknowledged, before the checkpoint: the restart republishes, loses nothing', async (t) => {
  const store = inMemoryEventStore();
  await seedUsers(commandsOver(store), 10);
  const publisher = recordingPublisher({ crashAfterAck: 2 });
  const first = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 200, batchSize: 5, owner: 'first' });
  await t.rejects(first.start(), { message: /crash after the broker acknowledged/ });
  const afterCrash = publisher.acknowledged.length;
  t.equal(afterCrash, 10, 'two batches reached the broker');
  const checkpoint = (await store.readStream(relayStreamId(topic))).at(-1)?.data as { position?: string };
  t.ok(checkpoint.position, 'the first batch was checkpointed');

  // A new relay must wait out the dead one's lease, then resumes from the checkpoint.
  const second = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 200, batchSize: 5, owner: 'second' });
  void second.start();
  t.teardown(() => second.stop());
  const expected = await userEventsIn(store);
  await waitFor(() => second.status().position === expected.at(-1)!.position.toString(), 10_000, 'second relay caught up');
  t.equal(publisher.acknowledged.length - expected.length, 5, 'exactly the batch acknowledged but not checkpointed came again');
  assertComplete(t, publisher.acknowledged, expected);
});

void t.test('only one relay publishes at a time; the standby takes over when the lease expires', async (t) => {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  await seedUsers(commands, 5);
  const publisher = recordingPublisher();
  const a = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 300, batchSize: 3, owner: 'a' });
  void a.start();
  await waitFor(() => a.status().role === 'publishing', 5000, 'a publishing');
  const b = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 300, batchSize: 3, owner: 'b' });
  void b.start();
  t.teardown(async () => {
    await a.stop();
    await b.stop();
  });
  await waitFor(() => b.status().role === 'standby', 5000, 'b on standby');
  await seedUsers(commands, 5, 'during');
  const expected = await userEventsIn(store);
  await waitFor(() => a.status().position === expected.at(-1)!.position.toString(), 5000, 'a caught up');
  t.equal(b.status().published, 0, 'the standby published nothing');
  t.equal(publisher.acknowledged.length, expected.length, 'no duplicates while one relay runs');

  await a.stop();
  await seedUsers(commands, 3, 'after');
  const all = await userEventsIn(store);
  await waitFor(() => b.status().position === all.at(-1)!.position.toString(), 5000, 'b took over');
  t.equal(b.status().role, 'publishing');
  t.equal(publisher.acknowledged.length, all.length, 'the takeover resumed exactly at the checkpoint');
  assertComplete(t, publisher.acknowledged, all);
});

void t.test('a relay whose lease was taken stops publishing at its next append', async (t) => {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  await seedUsers(commands, 2);
  const publisher = recordingPublisher();
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 60_000, batchSize: 10, owner: 'slow' });
  void relay.start();
  t.teardown(() => relay.stop());
  await waitFor(() => relay.status().role === 'publishing' && publisher.acknowledged.length > 0, 5000, 'publishing');
  // Another relay takes the lease (as if this one had stalled past it).
  const stream = await store.readStream(relayStreamId(topic));
  await store.appendToStream(
    relayStreamId(topic),
    [{ type: 'RelayCheckpointed', data: { owner: 'usurper', leaseUntil: new Date(Date.now() + 60_000).toISOString() } }],
    { expectedRevision: stream.at(-1)!.revision },
  );
  const before = publisher.acknowledged.length;
  await commands.register({ name: 'After', email: 'after@example.org' });
  await waitFor(() => relay.status().role === 'standby', 5000, 'relay fenced');
  t.ok(publisher.acknowledged.length <= before + 1, 'at most the batch in flight went out');
});

void t.test('a relay restarted with its identity takes its lease back at once; another identity waits for it', async (t) => {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  await seedUsers(commands, 4);
  const publisher = recordingPublisher({ crashAfterAck: 1 });
  // A long lease: waiting it out would fail the test.
  const crashed = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 60_000, batchSize: 2, owner: 'relay@host-a' });
  await t.rejects(crashed.start(), { message: /crash after the broker acknowledged/ });
  const other = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 60_000, batchSize: 2, owner: 'relay@host-b' });
  void other.start();
  t.teardown(() => other.stop());
  await waitFor(() => other.status().role === 'standby', 5000, 'a relay of another identity stands by');
  const restarted = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 60_000, batchSize: 2, owner: 'relay@host-a' });
  void restarted.start();
  t.teardown(() => restarted.stop());
  const expected = await userEventsIn(store);
  await waitFor(() => restarted.status().position === expected.at(-1)!.position.toString(), 5000, 'the restarted relay publishes at once');
  t.equal(other.status().published, 0, 'the other relay still stands by');
  assertComplete(t, publisher.acknowledged, expected);
});

void t.test('a relay that stops releases its lease: a relay of another identity starts publishing at once', async (t) => {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  await seedUsers(commands, 3);
  const publisher = recordingPublisher();
  const a = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 60_000, batchSize: 2, owner: 'a' });
  void a.start();
  const before = await userEventsIn(store);
  await waitFor(() => a.status().position === before.at(-1)!.position.toString(), 5000, 'a caught up');
  await a.stop();
  const lease = (await store.readStream(relayStreamId(topic))).at(-1)?.data as { owner: string; leaseUntil: string; position?: string };
  t.ok(Date.parse(lease.leaseUntil) <= Date.now(), 'the lease is given up');
  t.equal(lease.position, before.at(-1)!.position.toString(), 'the resume point is kept');
  await seedUsers(commands, 2, 'after');
  const b = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 60_000, batchSize: 2, owner: 'b' });
  void b.start();
  t.teardown(() => b.stop());
  const all = await userEventsIn(store);
  await waitFor(() => b.status().position === all.at(-1)!.position.toString(), 5000, 'b publishes without waiting out the lease');
  t.equal(publisher.acknowledged.length, all.length, 'b resumed exactly where a stopped');
});

void t.test("the partition count rides in the lease events' metadata: kept, taken back by the next holder, lowered for a smaller topic", async (t) => {
  const store = inMemoryEventStore();
  const streamId = relayStreamId('users.events.v1');
  let seen: number | undefined;
  const pinned: number[] = [];
  const partitions = { seen: () => seen, pin: (count: number) => void pinned.push(count) };
  const first = await relayLease({ store, streamId, owner: 'a', leaseMs: 60_000, partitions }).tryAcquire();
  if ('waitMs' in first) throw new Error('the lease was free');
  await first.renew();
  t.equal((await store.readStream(streamId)).at(-1)!.metadata.relayPartitions, undefined, 'nothing published yet: no count');
  seen = 3;
  await first.renew(10n);
  t.same(pinned, [3], 'recorded with the first resume point, and pinned');
  seen = 6;
  await first.renew(20n);
  t.equal((await store.readStream(streamId)).at(-1)!.metadata.relayPartitions, 3, 'a topic grown to 6: still 3');
  await first.renew();
  t.equal((await store.readStream(streamId)).at(-1)!.metadata.relayPartitions, 3, 'a renewal without a resume point carries it too');
  await first.release();
  t.equal((await store.readStream(streamId)).at(-1)!.metadata.relayPartitions, 3, 'and the release');

  pinned.length = 0;
  seen = undefined;
  const next = await relayLease({ store, streamId, owner: 'b', leaseMs: 60_000, partitions }).tryAcquire();
  if ('waitMs' in next) throw new Error('the lease was released');
  t.same(pinned, [3], 'the next holder pins the recorded count before it publishes');
  seen = 2;
  await next.renew(30n);
  t.same(pinned, [3, 2], 'a topic made again with 2: lowered, so growing it back moves no key either');
  t.equal((await store.readStream(streamId)).at(-1)!.metadata.relayPartitions, 2);
  for (const event of await store.readStream(streamId)) parseRelayCheckpoint(event);
  t.pass("every lease event's data still parses under the schema a relay of an earlier release reads it with");
  await next.renew();
  await next.release();
  const counts = (await store.readStream(streamId)).map((e) => e.metadata.relayPartitions);
  t.same(counts.slice(counts.findIndex((count) => count !== undefined)).filter((count) => count === undefined), [], 'once recorded, every lease event carries a count: the last one read alone suffices');
});

/** `count` lease events of a relay `owner` whose lease ran out a second ago, the n-th with resume point 1000 + n. */
function expiredLeases(owner: string, from: number, count: number, partitions: (n: number) => number | undefined): EventToAppend[] {
  const leaseUntil = new Date(Date.now() - 1000).toISOString();
  return Array.from({ length: count }, (_, i) => {
    const count = partitions(from + i);
    return {
      type: 'RelayCheckpointed',
      data: { owner, position: String(1000 + from + i), leaseUntil },
      ...(count === undefined ? {} : { metadata: { relayPartitions: count } }),
    };
  });
}

void t.test("taking the lease reads the relay stream's last event, however long the stream", async (t) => {
  for (const kind of eventStoreKinds) {
    await t.test(kind.name, async (t) => {
      const inner = await kind.open(t);
      const streamId = relayStreamId(topic);
      // 10,000 lease events, as hours of an idle relay's renewals or minutes of a busy one's resume points leave;
      // the count recorded with the 10th resume point, lowered to 3 (a topic made again) half-way.
      const partitionsAt = (n: number) => (n < 10 ? undefined : n < 5000 ? 6 : 3);
      for (let from = 0; from < 10_000; from += 500) {
        await inner.appendToStream(streamId, expiredLeases('gone', from, 500, partitionsAt), { expectedRevision: from === 0 ? 'no_stream' : from - 1 });
      }
      let read = 0;
      const store: EventStore = Object.assign(Object.create(inner) as EventStore, {
        async readStream(...args: Parameters<EventStore['readStream']>) {
          const events = await inner.readStream(...args);
          read += events.length;
          return events;
        },
      });
      const pinned: number[] = [];
      const partitions = { seen: () => undefined, pin: (count: number) => void pinned.push(count) };
      const acquired = await relayLease({ store, streamId, owner: 'next', leaseMs: 60_000, partitions }).tryAcquire();
      t.ok(read <= 1, `${read} events read to take the lease`);
      if ('waitMs' in acquired) throw new Error('the lease had run out');
      t.equal(acquired.position(), 10_999n, 'it resumes where the last holder stopped');
      t.same(pinned, [3], 'over the partition count of its last append');
      const [taken] = await inner.readStream(streamId, { backwards: true, maxCount: 1 });
      t.same(
        [taken?.revision, (taken?.data as { owner?: string }).owner, (taken?.data as { position?: string }).position, taken?.metadata.relayPartitions],
        [10_000, 'next', '10999', 3],
        'appended at the real revision, carrying the resume point and the count on',
      );

      read = 0;
      const standby = await relayLease({ store, streamId, owner: 'other', leaseMs: 60_000 }).tryAcquire();
      t.ok('waitMs' in standby, 'another relay stands by');
      t.ok(read <= 1, `${read} events read by its look at the lease`);
    });
  }
});

void t.test('on EventStoreDB the relay caps its stream at the last 1,000 events, once; leases go on at the real revision', async (t) => {
  const server = await startEsdbTestServer();
  t.teardown(() => server.stop());
  const store = esdbEventStore({ connectionString: server.connectionString });
  t.teardown(() => store.close());
  const streamId = relayStreamId(topic);
  const metadataEvents = async () => (await store.readStream(`$$${streamId}`)).map((e) => e.data);
  const start = async (owner: string) => {
    const relay = eventRelay({ store, vault: testVault, publisher: recordingPublisher(), topic, logger, leaseMs: 60_000, batchSize: 10, owner });
    void relay.start();
    await waitFor(() => relay.status().role === 'publishing', 5000, `${owner} publishing`);
    return relay;
  };
  const first = await start('a');
  t.same(await metadataEvents(), [{ $maxCount: 1000 }], 'the cap is set in the stream\'s metadata');
  await first.stop();
  // 1,500 more lease events.
  for (let from = 0; from < 1500; from += 500) {
    const [last] = await store.readStream(streamId, { backwards: true, maxCount: 1 });
    await store.appendToStream(streamId, expiredLeases('a', from, 500, () => 4), { expectedRevision: last!.revision });
  }
  const kept = await store.readStream(streamId);
  t.equal(kept.length, 1000, 'a read of the stream finds the last 1,000');
  const head = kept.at(-1)!.revision;
  t.equal(head, 1501, 'revisions go on counting');
  const pinned: number[] = [];
  const acquired = await relayLease({ store, streamId, owner: 'b', leaseMs: 60_000, partitions: { seen: () => undefined, pin: (count) => void pinned.push(count) } }).tryAcquire();
  if ('waitMs' in acquired) throw new Error('the lease had run out');
  t.same([acquired.position(), pinned], [2499n, [4]], 'the next holder resumes from the last event, with its count');
  t.equal((await store.readStream(streamId, { backwards: true, maxCount: 1 }))[0]?.revision, head + 1, 'and appends at the real revision');
  await acquired.release();
  const second = await start('a');
  await second.stop();
  t.equal((await metadataEvents()).length, 1, 'a stream already capped is left as it is');
});

void t.test('a cap the store refuses is reported, and the relay publishes all the same', async (t) => {
  const inner = inMemoryEventStore();
  await seedUsers(commandsOver(inner), 2);
  const store: EventStore = Object.assign(Object.create(inner) as EventStore, {
    capStream: () => Promise.reject(new Error('access denied to $$relay-users.events.v1')),
  });
  const warnings: string[] = [];
  const recording = pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) });
  const publisher = recordingPublisher();
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger: recording, leaseMs: 60_000, batchSize: 10 });
  void relay.start();
  t.teardown(() => relay.stop());
  const expected = await userEventsIn(inner);
  await waitFor(() => relay.status().position === expected.at(-1)!.position.toString(), 5000, 'published');
  t.same(warnings, ['could not cap the relay stream; it keeps every lease event'], 'said once');
});

void t.test('a batch held back by a broker outage is opened again at each try: a person forgotten meanwhile is not published in clear', async (t) => {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  const { id } = await commands.register({ name: 'Held Back Person', email: 'held.back@example.org' });
  // The relay's own vault over the same key store, keeping a key it read for 100 ms (KEY_CACHE_MS).
  const relayVault = createVault({ keyStore: testKeyStore, emailHashSecret: testEmailHashSecret, cacheMs: 100 });
  let brokerDown = true;
  let attempts = 0;
  const acknowledged: OutboundMessage[] = [];
  const publisher: EventPublisher = {
    publish(messages) {
      attempts += 1;
      if (brokerDown) return Promise.reject(new StoreUnavailableError('broker down'));
      acknowledged.push(...messages);
      return Promise.resolve();
    },
    close: () => Promise.resolve(),
  };
  const relay = eventRelay({ store, vault: relayVault, publisher, topic, logger, leaseMs: 3000, batchSize: 10 });
  void relay.start();
  t.teardown(() => relay.stop());
  await waitFor(() => attempts > 0, 5000, 'the relay to try to send the registration');
  // The person is forgotten while the registration waits for the broker.
  await commands.forget(id);
  await new Promise((resolve) => setTimeout(resolve, 300));
  brokerDown = false;
  await waitFor(() => acknowledged.some((m) => JSON.parse(m.value).type === 'user.forgotten.v1'), 10_000, 'the forget published');
  const clear = acknowledged.filter((m) => m.value.includes('Held Back Person') || m.value.includes('held.back@example.org'));
  t.same(clear.map((m) => JSON.parse(m.value).type), [], 'no message carries the name or the address');
  t.equal(JSON.parse(acknowledged[0]!.value).revision, 0, 'the registration went out all the same, in its place (as forgotten)');
});
