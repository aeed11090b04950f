import { testVault } from '../support/vault.js';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { kafkaPublisher } from '../../command-side/relay/kafka-publisher.js';
import { eventRelay } from '../../command-side/relay/relay.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { createKafka } from '../../shared/kafka/kafka-client.js';
import { fromEnvelope } from '../../shared/public-events.js';
import { startKafkaTestBroker } from '../support/kafka-test-broker.js';
import { commandsOver, seedUsers, waitFor } from '../support/seed.js';

const topic = 'users.events.v1';
const logger = pino({ level: 'silent' });

/**
 * A Kafka test broker with the topic, a producer to it and an empty store, all
 * stopped in teardown; `relay` starts a relay (over this store unless told another).
 */
async function onTestBroker(t: Test, partitions: number) {
  const broker = await startKafkaTestBroker({ topics: [{ name: topic, partitions }] });
  t.teardown(() => broker.stop());
  const publisher = kafkaPublisher(createKafka({ brokers: broker.brokers, clientId: 'relay-test', logger }), topic);
  const store = inMemoryEventStore();
  const relays: ReturnType<typeof eventRelay>[] = [];
  t.teardown(async () => {
    for (const running of relays) await running.stop();
    await publisher.close();
  });
  const relay = (over: EventStore = store, owner?: string) => {
    const started = eventRelay({ store: over, vault: testVault, publisher, topic, logger, leaseMs: 3000, batchSize: 20, ...(owner ? { owner } : {}) });
    relays.push(started);
    void started.start();
    return started;
  };
  return { broker, store, relay };
}

/** The position of the log's last user event: where a relay that has published everything stands. */
const userHead = async (store: EventStore) => (await store.readAll({ maxCount: 100_000 })).filter((e) => e.streamId.startsWith('user-')).at(-1)!.position.toString();

/**
 * The relay with the real kafkajs producer, through a broker down for `downMs` while users are
 * written: it keeps running, acknowledges nothing meanwhile, catches up once the broker is back,
 * and every event reaches Kafka at least once, each stream in one partition and in order.
 */
async function throughBrokerOutage(t: Test, downMs: number) {
  const { broker, store, relay: start } = await onTestBroker(t, 3);
  const commands = commandsOver(store);
  const relay = start();
  let stopped: unknown;
  relay.start().catch((error: unknown) => (stopped = error));

  await seedUsers(commands, 10, 'before');
  const head = () => userHead(store);
  await waitFor(async () => relay.status().position === (await head()), 10_000, 'relay before the outage');

  const beforeOutage = relay.status().position;
  await broker.stop();
  await seedUsers(commands, 10, 'during');
  await new Promise((resolve) => setTimeout(resolve, downMs));
  t.equal(relay.status().position, beforeOutage, 'nothing is acknowledged while the broker is down');
  t.equal(stopped, undefined, 'the relay is still running');
  await broker.restart();
  await seedUsers(commands, 5, 'after');
  await waitFor(async () => stopped !== undefined || relay.status().position === (await head()), 30_000, 'relay after the outage');
  t.equal(stopped, undefined, 'the relay did not stop on the outage');
  t.equal(relay.status().position, await head(), 'the relay caught up');

  const records = [0, 1, 2].flatMap((p) => broker.records(topic, p).map((r) => ({ partition: p, ...fromEnvelope(r.value), key: r.key?.toString() })));
  const expected = (await store.readAll({ maxCount: 100_000 })).filter((e) => e.streamId.startsWith('user-'));
  const delivered = new Set(records.map((r) => `${r.streamId}@${r.revision}`));
  t.equal(expected.filter((e) => !delivered.has(`${e.streamId}@${e.revision}`)).length, 0, `all ${expected.length} events delivered`);
  const partitionOf = new Map<string, number>();
  let misordered = 0;
  const lastRevision = new Map<string, number>();
  for (const p of [0, 1, 2]) {
    for (const r of records.filter((x) => x.partition === p)) {
      t.equal(r.key, r.streamId);
      if ((partitionOf.get(r.streamId) ?? p) !== p) t.fail(`${r.streamId} spread over partitions`);
      partitionOf.set(r.streamId, p);
      const last = lastRevision.get(r.streamId) ?? -1;
      if (r.revision > last + 1) misordered += 1;
      lastRevision.set(r.streamId, Math.max(last, r.revision));
    }
  }
  t.equal(misordered, 0, 'within each partition every stream is in order (duplicates allowed, gaps not)');
}

void t.test('everything appended reaches Kafka at least once, in per-stream order, across a broker outage', (t) => throughBrokerOutage(t, 1500));

/**
 * An outage longer than kafkajs's own retries of a send (with `createKafka`'s settings, 5.5
 * to 6 s against the test broker): the producer finds the cluster disconnected, its
 * reconnection gives up, and the send fails with a KafkaJSNonRetriableError whose cause is
 * the connection error. That is an outage too: the relay must not stop on it.
 */
void t.test('a broker outage longer than the producer retries a send for: the relay waits it out and loses nothing', (t) => throughBrokerOutage(t, 8000));

void t.test('the traceparent and tracestate of a write reach its Kafka message as headers', async (t) => {
  const { broker, store, relay } = await onTestBroker(t, 1);
  relay();
  const trace = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate: 'congo=t61rcWkgMzE' };
  await commandsOver(store).register({ name: 'Ada', email: 'ada@example.org' }, { trace });
  await waitFor(() => broker.records(topic, 0).length === 1, 10_000, 'the message in Kafka');
  const [record] = broker.records(topic, 0);
  t.equal(record?.headers.traceparent?.toString(), trace.traceparent);
  t.equal(record?.headers.tracestate?.toString(), trace.tracestate);
  t.equal(record?.headers['event-type']?.toString(), 'user.registered.v1');
});

void t.test('forgetting through Kafka: user.forgotten.v1 is on the topic and nothing later for the user carries personal data', async (t) => {
  const { broker, store, relay: start } = await onTestBroker(t, 1);
  const commands = commandsOver(store);
  const relay = start(store, 'first');

  const name = 'Hedy Lamarr';
  const email = 'hedy.lamarr@frequency-hopping.example';
  const { id } = await commands.register({ name, email });
  await commands.rename(id, 'Hedy Kiesler Markey');
  await commands.changeEmail(id, 'hedy@markey.example');
  const stream = `user-${id}`;
  const onTopic = () => broker.records(topic, 0).map((r) => ({ ...fromEnvelope(r.value), raw: r.value?.toString() ?? '' }));
  await waitFor(() => onTopic().filter((m) => m.streamId === stream).length === 3, 10_000, 'the three events on the topic');
  t.ok(onTopic().some((m) => m.raw.includes(name)), 'before forgetting, consumers get the personal data (they need it)');

  await commands.forget(id);
  await waitFor(() => onTopic().some((m) => m.streamId === stream && m.type === 'UserForgotten'), 10_000, 'user.forgotten.v1 on the topic');
  const forgottenAt = onTopic().findIndex((m) => m.streamId === stream && m.type === 'UserForgotten');
  const forgotten = broker.records(topic, 0)[forgottenAt]!;
  t.equal(forgotten.headers['event-type']?.toString(), 'user.forgotten.v1');
  t.same(Object.keys(JSON.parse(forgotten.value!.toString()).data as object).sort(), ['occurredAt', 'userId'], 'it carries no personal data');
  await relay.stop();

  // A relay that starts from the beginning (a lost resume point) publishes the user's whole stream again:
  // here, the same user events in a store without the first relay's resume point.
  const before = onTopic().length;
  const fresh = inMemoryEventStore();
  for (const e of await store.readAll({ maxCount: 10_000 })) {
    if (e.streamId.startsWith('user-')) await fresh.appendToStream(e.streamId, [{ id: e.id, type: e.type, data: e.data, metadata: e.metadata }], { expectedRevision: e.revision === 0 ? 'no_stream' : e.revision - 1 });
  }
  start(fresh, 'replay');
  await waitFor(() => onTopic().length >= before + 4, 10_000, 'the replayed stream on the topic');
  const later = onTopic().slice(before).filter((m) => m.streamId === stream);
  t.equal(later.length, 4, 'every event of the user was published again');
  for (const m of later) {
    t.equal(m.type, 'UserForgotten', `revision ${m.revision} arrives as user.forgotten.v1`);
    for (const secret of [name, email, 'Hedy Kiesler Markey', 'hedy@markey.example']) t.notOk(m.raw.includes(secret), `revision ${m.revision} does not carry "${secret}"`);
  }
});

void t.test('partitions added to the topic move no user: the relay keeps to the count it began with, recorded with its resume point', async (t) => {
  const broker = await startKafkaTestBroker({ topics: [{ name: topic, partitions: 3 }] });
  t.teardown(() => broker.stop());
  const kafka = createKafka({ brokers: broker.brokers, clientId: 'relay-test', logger });
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  const head = () => userHead(store);
  const relayWith = (publisher: ReturnType<typeof kafkaPublisher>) => {
    const relay = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 3000, batchSize: 20, owner: 'relay-a' });
    void relay.start();
    return relay;
  };

  const ids = await seedUsers(commands, 40, 'before');
  const first = kafkaPublisher(kafka, topic);
  const relay = relayWith(first);
  await waitFor(async () => relay.status().position === (await head()), 10_000, 'the relay to publish the first users');
  await relay.stop();
  await first.close();
  const recorded = (await store.readStream('relay-' + topic)).map((e) => e.metadata.relayPartitions);
  t.equal(recorded.at(-1), 3, "the partition count recorded with the resume point, in the event's metadata");
  t.ok(
    (await store.readStream('relay-' + topic)).every((e) => !('partitions' in (e.data as object))),
    'not in its data, which relays of an earlier release read against a closed schema',
  );

  // The operator adds partitions; a relay started afterwards sees six.
  broker.addPartitions(topic, 6);
  const warnings: string[] = [];
  const recording = pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) });
  const second = kafkaPublisher(kafka, topic, { logger: recording });
  const again = relayWith(second);
  t.teardown(async () => {
    await again.stop();
    await second.close();
  });
  // Each user's next events (some users are deactivated by the seeding and refuse them).
  for (const id of ids) await commands.rename(id, 'Renamed After The Growth').catch(() => {});
  await waitFor(async () => again.status().position === (await head()), 10_000, 'the relay to publish the renames');
  t.equal(second.partitions?.seen(), 6, 'the producer saw the six partitions');
  t.ok(warnings.some((w) => w.includes('the topic has 6 partitions; the relay goes on publishing over the first 3')), 'and says it keeps to three');

  const partitionsOf = new Map<string, Set<number>>();
  for (let p = 0; p < 6; p++) {
    for (const r of broker.records(topic, p)) {
      const key = r.key?.toString() ?? '';
      partitionsOf.set(key, (partitionsOf.get(key) ?? new Set()).add(p));
    }
  }
  t.equal(partitionsOf.size, 40, 'every user on the topic');
  t.same([...partitionsOf.values()].filter((set) => set.size > 1).length, 0, "no user's events in two partitions");
  t.equal([3, 4, 5].reduce((n, p) => n + broker.records(topic, p).length, 0), 0, 'nothing in the partitions added');
});
