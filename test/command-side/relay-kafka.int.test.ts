import { testVault } from '../support/vault.js';
import { pino } from 'pino';
import t from 'tap';
import { kafkaPublisher } from '../../command-side/relay/kafka-publisher.js';
import { eventRelay } from '../../command-side/relay/relay.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { createKafka } from '../../shared/kafka/kafka-client.js';
import { fromEnvelope } from '../../shared/public-events.js';
import { startKafkaTestBroker } from '../support/kafka-test-broker.js';
import { commandsOver, seedUsers, waitFor } from '../support/seed.js';

/** The relay with the real kafkajs producer, through a broker outage. */
void t.test('everything appended reaches Kafka at least once, in per-stream order, across a broker outage', async (t) => {
  const topic = 'users.events.v1';
  const broker = await startKafkaTestBroker({ topics: [{ name: topic, partitions: 3 }] });
  t.teardown(() => broker.stop());
  const logger = pino({ level: 'silent' });
  const kafka = createKafka({ brokers: broker.brokers, clientId: 'relay-test', logger });
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  const publisher = kafkaPublisher(kafka, topic);
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 3000, batchSize: 20 });
  void relay.start();
  t.teardown(async () => {
    await relay.stop();
    await publisher.close();
  });

  await seedUsers(commands, 10, 'before');
  const head = async () => (await store.readAll({ maxCount: 100_000 })).filter((e) => e.streamId.startsWith('user-')).at(-1)!.position.toString();
  await waitFor(async () => relay.status().position === (await head()), 10_000, 'relay before the outage');

  await broker.stop();
  await seedUsers(commands, 10, 'during');
  await new Promise((resolve) => setTimeout(resolve, 1500));
  t.not(relay.status().position, await head(), 'nothing is acknowledged while the broker is down');
  await broker.restart();
  await seedUsers(commands, 5, 'after');
  await waitFor(async () => relay.status().position === (await head()), 30_000, 'relay after the outage');

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
});

void t.test('the traceparent and tracestate of a write reach its Kafka message as headers', async (t) => {
  const topic = 'users.events.v1';
  const broker = await startKafkaTestBroker({ topics: [{ name: topic, partitions: 1 }] });
  t.teardown(() => broker.stop());
  const logger = pino({ level: 'silent' });
  const kafka = createKafka({ brokers: broker.brokers, clientId: 'relay-test', logger });
  const store = inMemoryEventStore();
  const publisher = kafkaPublisher(kafka, topic);
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 3000, batchSize: 20 });
  void relay.start();
  t.teardown(async () => {
    await relay.stop();
    await publisher.close();
  });
  const trace = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate: 'congo=t61rcWkgMzE' };
  await commandsOver(store).register({ name: 'Ada', email: 'ada@example.org' }, { trace });
  await waitFor(() => broker.records(topic, 0).length === 1, 10_000, 'the message in Kafka');
  const [record] = broker.records(topic, 0);
  t.equal(record?.headers.traceparent?.toString(), trace.traceparent);
  t.equal(record?.headers.tracestate?.toString(), trace.tracestate);
  t.equal(record?.headers['event-type']?.toString(), 'user.registered.v1');
});
