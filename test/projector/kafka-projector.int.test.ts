import { testVault } from '../support/vault.js';
import { randomBytes } from 'node:crypto';
import type { ConsumerConfig } from 'kafkajs';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { kafkaPublisher } from '../../command-side/relay/kafka-publisher.js';
import { messageOf } from '../../command-side/relay/relay.js';
import { projectionName } from '../../shared/read-model/user-row.js';
import { readCheckpoints } from '../../shared/read-model/checkpoints.js';
import { listParked, parkedCounts } from '../../shared/read-model/dead-letters.js';
import { quarantine } from '../../projector/quarantine.js';
import { userStreamId } from '../../shared/user-events.js';
import { userProjector } from '../../projector/projector.js';
import { kafkaFeed } from '../../shared/event-feed/kafka-feed.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { createKafka } from '../../shared/kafka/kafka-client.js';
import { startKafkaTestBroker } from '../support/kafka-test-broker.js';
import { relayToKafka } from '../support/kafka-relay.js';
import { forEachReadDb, readDbsUnderTest } from '../support/read-dbs.js';
import { commandsOver, expectedRows, seedUsers, tableRows, waitFor } from '../support/seed.js';
import { mariadbBehindProxy } from '../support/mariadb-behind-proxy.js';

/**
 * The production projection path on the test broker: relay -> Kafka topic (3
 * partitions, keyed by stream) -> consumer-group projector -> read DB. With
 * KAFKA_BROKERS set, runs against that Kafka instead (topic must allow creation).
 */
const logger = pino({ level: 'silent' });
const fastGroup: Partial<ConsumerConfig> = { sessionTimeout: 3000, rebalanceTimeout: 3000, heartbeatInterval: 100, maxWaitTimeInMs: 200 };

async function kafkaFor(t: Test, topic: string) {
  if (process.env.KAFKA_BROKERS) return createKafka({ brokers: process.env.KAFKA_BROKERS.split(','), clientId: 'test', logger });
  const broker = await startKafkaTestBroker({ topics: [{ name: topic, partitions: 3 }] });
  t.teardown(() => broker.stop());
  return createKafka({ brokers: broker.brokers, clientId: 'test', logger });
}

function projectorOn(
  t: Test,
  kafka: ReturnType<typeof createKafka>,
  topic: string,
  groupId: string,
  db: Parameters<typeof userProjector>[0]['db'],
  feedLogger = logger,
  onBatch?: Parameters<typeof userProjector>[0]['onBatch'],
) {
  const feed = kafkaFeed({ kafka, topic, groupId, logger: feedLogger, consumerConfig: fastGroup });
  const projector = userProjector({ db, feed, logger, ...(onBatch ? { onBatch } : {}) });
  const running = projector.start();
  t.teardown(() => projector.stop());
  return { projector, running, feed };
}


const sameAsLog = async (db: Parameters<typeof tableRows>[0], store: EventStore) =>
  JSON.stringify(await tableRows(db)) === JSON.stringify(await expectedRows(store));

forEachReadDb(t, async (t, db, kind) => {
  const topic = `users.events.${randomBytes(4).toString('hex')}`;
  const kafka = await kafkaFor(t, topic);
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  await seedUsers(commands, 30);
  relayToKafka(t, store, kafka, topic, logger);

  await t.test('relayed events become rows equal to a fold of the log; offsets stored per partition', async (t) => {
    const { projector } = projectorOn(t, kafka, topic, 'projector-a', db);
    await waitFor(() => sameAsLog(db, store), 20_000, 'table to match the log');
    const checkpoints = await readCheckpoints(db);
    t.ok([...checkpoints.keys()].every((source) => source.startsWith(`${topic}:`)), 'sources are topic:partition');
    t.ok(checkpoints.size >= 2, `offsets for ${checkpoints.size} partitions`);
    await projector.stop();
  });

  await t.test('duplicates from the relay change nothing', async (t) => {
    const before = await tableRows(db);
    const duplicates = kafkaPublisher(kafka, topic);
    t.teardown(() => duplicates.close());
    const log = await testVault.open(await store.readAll({ maxCount: 100_000 }));
    await duplicates.publish(log.flatMap((e) => messageOf(e) ?? []));
    const { projector } = projectorOn(t, kafka, topic, 'projector-a', db);
    await waitFor(() => projector.status().eventsApplied >= log.filter((e) => e.streamId.startsWith('user-')).length, 20_000, 'duplicates consumed');
    t.same(await tableRows(db), before);
    await projector.stop();
  });

  await t.test('a broken message is parked under its key, its user held back; the others keep flowing', async (t) => {
    const [, victim] = await seedUsers(commands, 2, 'kafka-poison');
    const { projector } = projectorOn(t, kafka, topic, 'projector-a', db);
    await waitFor(() => sameAsLog(db, store), 20_000, 'caught up');
    const broken = kafkaPublisher(kafka, topic);
    t.teardown(() => broken.close());
    await broken.publish([{ key: userStreamId(victim!), value: '{"specVersion":"1"}', headers: { 'event-type': 'user.renamed.v1' } }]);
    await commands.rename(victim!, 'Held back');
    const { id: after } = await commands.register({ name: 'After the broken message', email: 'after.broken@example.org' });
    await waitFor(async () => (await db('USER_DATA').where({ ID_USER_DATA: after })).length === 1, 20_000, 'other users to flow');
    await waitFor(async () => (await parkedCounts(db, projectionName)).held === 1, 20_000, 'the rename to be held');
    t.match(await listParked(db, projectionName), [
      { STREAM_ID: userStreamId(victim!), REVISION: -1, STATE: 'failed', EVENT_TYPE: 'user.renamed.v1', ERROR: /not a v1 envelope/ },
      { STREAM_ID: userStreamId(victim!), STATE: 'held', EVENT_TYPE: 'UserRenamed' },
    ]);
    t.notMatch(await db('USER_DATA').where({ ID_USER_DATA: victim }).first(), { NAME: 'Held back' });
    t.ok(projector.status().running);
    const [failed] = await listParked(db, projectionName, { states: ['failed'] });
    t.match(await quarantine({ db }).skip(failed!.ID), { skipped: 1, applied: 1, stillParked: 0 });
    t.ok(await sameAsLog(db, store), 'released: the table is the fold of the log again');
    await projector.stop();
  });

  await t.test('two projectors in one group share the partitions; a restart resumes', async (t) => {
    const first = projectorOn(t, kafka, topic, 'projector-a', db);
    const second = projectorOn(t, kafka, topic, 'projector-a', db);
    await new Promise((resolve) => setTimeout(resolve, 500));
    await seedUsers(commands, 30, 'shared');
    await waitFor(() => sameAsLog(db, store), 20_000, 'both projectors to catch up');
    t.ok(first.projector.status().eventsApplied > 0 && second.projector.status().eventsApplied > 0, 'both did work');
    await first.projector.stop();
    await seedUsers(commands, 10, 'after-stop');
    await waitFor(() => sameAsLog(db, store), 20_000, 'the remaining projector takes every partition');
    await second.projector.stop();
    await seedUsers(commands, 5, 'while-down');
    const restarted = projectorOn(t, kafka, topic, 'projector-a', db);
    await waitFor(() => sameAsLog(db, store), 20_000, 'a restarted projector resumes');
    await restarted.projector.stop();
  });

  await t.test('a rebalance does not send a member back to where it started', async (t) => {
    /** The partitions each member was given at its latest join of the group (each rebalance). */
    const holds: number[][] = [[], []];
    const joinCounter = (member: 0 | 1) =>
      pino(
        { level: 'info' },
        {
          write(line: string) {
            const entry = JSON.parse(line) as { msg: string; partitions?: number[] };
            if (entry.msg === 'projector joined its consumer group') holds[member] = entry.partitions ?? [];
          },
        },
      );
    /** Every event either member applied (duplicates included), once the second member has started. */
    const deliveredAfter: string[] = [];
    let counting = false;
    const record: Parameters<typeof userProjector>[0]['onBatch'] = (batch) => {
      if (counting) for (const e of batch.events) deliveredAfter.push(`${e.streamId}@${e.revision}`);
    };
    const first = projectorOn(t, kafka, topic, 'projector-rejoin', db, joinCounter(0), record);
    const earlier = new Set((await seedUsers(commands, 20, 'rejoin-before')).map((id) => userStreamId(id)));
    await waitFor(() => sameAsLog(db, store), 20_000, 'the first member to catch up alone');
    // Its last batch counted too (a batch's rows are committed a moment before it is counted and recorded).
    const committed = async () => JSON.stringify(Object.fromEntries([...(await readCheckpoints(db))].sort()));
    await waitFor(async () => JSON.stringify(Object.fromEntries(Object.entries(first.projector.status().checkpoints).sort())) === (await committed()), 5000, 'its last batch to be counted');
    // Every partition is now far past where the first member found the read DB when it started.
    counting = true;
    projectorOn(t, kafka, topic, 'projector-rejoin', db, joinCounter(1), record);
    await waitFor(() => holds[0]!.length > 0 && holds[1]!.length > 0 && holds[0]!.length + holds[1]!.length === 3, 20_000, 'the group to share the partitions');
    const later = new Set((await seedUsers(commands, 12, 'rejoin-after')).map((id) => userStreamId(id)));
    await waitFor(() => sameAsLog(db, store), 20_000, 'both to catch up');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const again = deliveredAfter.filter((e) => earlier.has(e.split('@')[0]!));
    t.same(again, [], 'none of the events applied before the rebalance is delivered again');
    t.ok(deliveredAfter.some((e) => later.has(e.split('@')[0]!)), 'the new ones are');
  });

  await t.test('a new read DB is filled from the start, whatever offsets the group committed for another', async (t) => {
    // The group has committed offsets at the end of every partition (the tests above); this DB has no row.
    const { db: fresh } = await readDbsUnderTest.find((candidate) => candidate.name === kind)!.open(t);
    const { projector } = projectorOn(t, kafka, topic, 'projector-a', fresh);
    const expected = await expectedRows(store);
    await waitFor(async () => (await tableRows(fresh)).length === expected.length, 20_000, 'a row for every user of the log');
    // The broken message of the test above holds its user back here too, until it is skipped as there.
    await waitFor(async () => (await listParked(fresh, projectionName, { states: ['failed'] })).length === 1, 20_000, 'the broken message to be parked');
    const [failed] = await listParked(fresh, projectionName, { states: ['failed'] });
    await quarantine({ db: fresh }).skip(failed!.ID);
    t.same(await tableRows(fresh), expected, 'every user of the log, not only those after the offsets the group committed');
    t.same([...(await readCheckpoints(fresh)).keys()].sort(), [...(await readCheckpoints(db)).keys()].sort(), 'an offset for every partition');
    await projector.stop();
  });
});

void t.test('a MariaDB outage pauses Kafka consumption, which resumes without loss', async (t) => {
  const proxied = await mariadbBehindProxy(t);
  if (!proxied) return;
  const { proxy, db } = proxied;

  const topic = `users.events.${randomBytes(4).toString('hex')}`;
  const kafka = await kafkaFor(t, topic);
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  relayToKafka(t, store, kafka, topic, logger);
  const { projector, feed } = projectorOn(t, kafka, topic, 'projector-outage', db);
  await seedUsers(commands, 10, 'before');
  await waitFor(() => sameAsLog(db, store), 20_000, 'first rows');
  const lagged = async () => [...(await feed.lag()).values()].reduce((sum, events) => sum + events, 0);
  await waitFor(async () => (await lagged()) === 0, 10_000, 'no lag once caught up');

  const userEvents = async () => (await store.readAll({ maxCount: 100_000 })).filter((e) => e.streamId.startsWith('user-')).length;
  const caughtUp = await userEvents();
  proxy.cut();
  await seedUsers(commands, 10, 'during');
  await waitFor(() => !projector.status().readDbReachable, 10_000, 'projector to notice');
  // Nothing is applied now: the lag is read from the broker, not from the batches applied.
  await waitFor(async () => (await lagged()) === (await userEvents()) - caughtUp, 10_000, 'the lag to count every message the outage holds back');
  t.equal(await lagged(), (await userEvents()) - caughtUp, 'the lag counts every message the outage holds back');
  t.ok((await userEvents()) - caughtUp >= 10, 'at least one per user written during the outage');
  // Longer than the consumer's session timeout: the group evicts the stalled member.
  await new Promise((resolve) => setTimeout(resolve, 4000));
  proxy.restore();
  await waitFor(() => sameAsLog(db, store), 30_000, 'rows after the outage');
  // A batch handed over during the outage may still meet a connection the outage broke, and say so once
  // more before its retry succeeds: what must hold is that the projector reports the DB back.
  await waitFor(() => projector.status().readDbReachable, 10_000, 'the projector to report the read DB back');
  t.ok(projector.status().readDbReachable);
  t.ok(projector.status().running, 'the projector kept running through the outage');
});

void t.test('a Kafka outage: the projector reconnects on its own and loses nothing', async (t) => {
  const { db } = await readDbsUnderTest[0]!.open(t);
  const topic = 'users.events.v1';
  const broker = await startKafkaTestBroker({ topics: [{ name: topic, partitions: 3 }] });
  t.teardown(() => broker.stop());
  const kafka = createKafka({ brokers: broker.brokers, clientId: 'test', logger });
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  relayToKafka(t, store, kafka, topic, logger);
  const { projector } = projectorOn(t, kafka, topic, 'projector-kafka-outage', db);
  await seedUsers(commands, 10, 'before');
  await waitFor(() => sameAsLog(db, store), 20_000, 'rows before the outage');
  await broker.stop();
  await seedUsers(commands, 10, 'during');
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await broker.restart();
  await waitFor(() => sameAsLog(db, store), 30_000, 'rows after the outage');
  t.ok(projector.status().running, 'the projector kept running');
});
