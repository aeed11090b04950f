import { createRequire } from 'node:module';
import { connect } from 'node:net';
import t, { type Test } from 'tap';
import { Kafka, logLevel, type Batch, type Consumer, type ConsumerConfig } from 'kafkajs';
import { startKafkaTestBroker, type KafkaTestBrokerOptions } from '../support/kafka-test-broker.js';

/**
 * The in-repo Kafka test broker against the real kafkajs 2.2.4 client over TCP: an
 * idempotent producer, consumer groups with manual commits, rebalances, session timeouts,
 * an outage, and fetches that wait instead of spinning.
 *
 * Consumer timings matter: kafkajs heartbeats only between fetches, so it notices a
 * rebalance up to maxWaitTimeInMs + heartbeatInterval late (5 s + 3 s by default).
 */
const fastGroup: Partial<ConsumerConfig> = {
  sessionTimeout: 3000,
  rebalanceTimeout: 3000,
  heartbeatInterval: 100,
  maxWaitTimeInMs: 200,
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once `check()` holds, polling every 10 ms; fails after `ms` with `what`. */
async function until(what: string, check: () => boolean, ms = 8000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A broker, plus a list of closers run newest first, then the broker's stop, when the test ends. */
async function setup(t: Test, options: KafkaTestBrokerOptions = {}) {
  const broker = await startKafkaTestBroker(options);
  const closers: Array<() => Promise<unknown>> = [];
  t.teardown(async () => {
    for (const close of closers.reverse()) await close().catch(() => undefined);
    await broker.stop();
  });
  const kafka = new Kafka({
    clientId: 'kafka-test-broker-test',
    brokers: broker.brokers,
    // KAFKAJS_LOG_LEVEL=debug (or info, warn, error) shows kafkajs's own logs when a test fails.
    logLevel: logLevel[(process.env.KAFKAJS_LOG_LEVEL ?? 'nothing').toUpperCase() as keyof typeof logLevel] ?? logLevel.NOTHING,
    retry: { initialRetryTime: 100, maxRetryTime: 1000, retries: 8 },
  });
  const producer = async () => {
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
    await producer.connect();
    closers.push(() => producer.disconnect());
    return producer;
  };
  return { broker, kafka, closers, producer };
}

interface Received {
  partition: number;
  offset: bigint;
  key: string;
  value: string;
  headers: Record<string, string>;
}

/**
 * A consumer in `groupId` reading `topic` from the beginning with autoCommit off: each
 * batch is committed (next offset, unless `commit` is false) before its messages count
 * as received.
 */
async function consume(
  env: { kafka: Kafka; closers: Array<() => Promise<unknown>> },
  groupId: string,
  topic: string,
  options: Partial<ConsumerConfig> & { beforeBatch?: (batch: Batch) => Promise<void>; commit?: boolean } = {},
) {
  const { beforeBatch, commit = true, ...config } = options;
  const consumer: Consumer = env.kafka.consumer({ groupId, allowAutoTopicCreation: false, ...fastGroup, ...config });
  const state = {
    consumer,
    received: [] as Received[],
    assigned: [] as number[],
    joins: 0,
    fetches: 0,
    crashes: [] as Array<{ error: Error; restart: boolean }>,
  };
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    state.crashes.push({ error: payload.error, restart: payload.restart });
  });
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    state.assigned = [...(payload.memberAssignment[topic] ?? [])].sort();
    state.joins += 1;
  });
  consumer.on(consumer.events.FETCH_START, () => {
    state.fetches += 1;
  });
  await consumer.connect();
  env.closers.push(() => consumer.disconnect());
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      if (batch.messages.length === 0) return;
      await beforeBatch?.(batch);
      const last = batch.messages[batch.messages.length - 1]!;
      if (commit) await consumer.commitOffsets([{ topic, partition: batch.partition, offset: (BigInt(last.offset) + 1n).toString() }]);
      for (const m of batch.messages) {
        state.received.push({
          partition: batch.partition,
          offset: BigInt(m.offset),
          key: m.key?.toString() ?? '',
          value: m.value?.toString() ?? '',
          headers: Object.fromEntries(Object.entries(m.headers ?? {}).map(([k, v]) => [k, String(v)])),
        });
      }
    },
  });
  return state;
}

const values = (received: readonly Received[]) => received.map((r) => r.value);
const duplicates = (items: readonly string[]) => items.filter((item, i) => items.indexOf(item) !== i);

void t.test('keyed messages from an idempotent producer come back per key in order, with headers', async (t) => {
  const env = await setup(t, { autoCreateTopics: false });
  const admin = env.kafka.admin();
  await admin.connect();
  env.closers.push(() => admin.disconnect());
  t.equal(await admin.createTopics({ topics: [{ topic: 'users', numPartitions: 3 }] }), true, 'CreateTopics creates');
  t.equal(await admin.createTopics({ topics: [{ topic: 'users', numPartitions: 3 }] }), false, 'and reports an existing topic');

  const producer = await env.producer();
  const keys = Array.from({ length: 12 }, (_, k) => `user-${k}`);
  for (let seq = 0; seq < 5; seq++) {
    await producer.send({
      topic: 'users',
      acks: -1,
      messages: keys.map((key) => ({ key, value: `${key}#${seq}`, headers: { 'event-type': 'UserRenamed', seq: String(seq) } })),
    });
  }

  // Broker side: the client's partitioner routed by key, so each key lives in one partition.
  const partitionOf = new Map<string, number>();
  const misplaced: string[] = [];
  let stored = 0;
  for (let partition = 0; partition < 3; partition++) {
    for (const record of env.broker.records('users', partition)) {
      const key = record.key?.toString() ?? '';
      if ((partitionOf.get(key) ?? partition) !== partition) misplaced.push(key);
      partitionOf.set(key, partition);
      stored += 1;
    }
  }
  t.same(misplaced, [], 'each key stays in one partition');
  t.equal(stored, 60, 'every message stored once');
  t.ok(new Set(partitionOf.values()).size > 1, 'keys spread over partitions');
  const offsets = await admin.fetchTopicOffsets('users');
  t.equal(
    offsets.reduce((sum, p) => sum + Number(p.high), 0),
    60,
    'ListOffsets: high watermarks add up',
  );

  const consumer = await consume(env, 'users-readers', 'users');
  await until('60 messages', () => consumer.received.length >= 60);
  t.same(duplicates(values(consumer.received)), [], 'no message twice');
  for (const key of keys) {
    const mine = consumer.received.filter((r) => r.key === key);
    t.same(
      mine.map((r) => r.value),
      [0, 1, 2, 3, 4].map((seq) => `${key}#${seq}`),
      `${key} in order`,
    );
    t.ok(
      mine.every((r, seq) => r.partition === partitionOf.get(key) && r.headers['event-type'] === 'UserRenamed' && r.headers.seq === String(seq)),
      `${key}: partition and headers intact`,
    );
  }
});

void t.test('manual commits: a restarted consumer resumes after the committed offset', async (t) => {
  const env = await setup(t, { topics: [{ name: 'resume', partitions: 2 }] });
  const producer = await env.producer();
  const send = (from: number, count: number) =>
    producer.send({
      topic: 'resume',
      acks: -1,
      messages: Array.from({ length: count }, (_, i) => ({ key: `k${from + i}`, value: `m${from + i}` })),
    });
  await send(0, 10);

  const first = await consume(env, 'resumers', 'resume');
  await until('the first 10', () => first.received.length >= 10);
  await first.consumer.disconnect();
  const committed = env.broker.committedOffsets('resumers');
  t.equal([...committed.values()].reduce((a, b) => a + b, 0n), 10n, 'offsets committed for all 10');
  t.same([...committed.keys()].sort(), ['resume:0', 'resume:1'], 'by topic:partition');

  await send(10, 5);
  const next = ['m10', 'm11', 'm12', 'm13', 'm14'];
  const second = await consume(env, 'resumers', 'resume', { commit: false });
  await until('the next 5', () => second.received.length >= 5);
  await sleep(300); // time for anything already committed to show up (it must not)
  t.same(values(second.received).sort(), next, 'only what came after the commit');
  await second.consumer.disconnect();

  // The second committed nothing, so the third gets the same 5 again, and only them.
  const third = await consume(env, 'resumers', 'resume');
  await until('the 5 again', () => third.received.length >= 5);
  await sleep(300);
  t.same(values(third.received).sort(), next, 'uncommitted messages are delivered again');
  t.equal([...env.broker.committedOffsets('resumers').values()].reduce((a, b) => a + b, 0n), 15n, 'now committed up to 15');
});

void t.test('two consumers in one group split the partitions and see every message once', async (t) => {
  const env = await setup(t, { topics: [{ name: 'shared', partitions: 4 }] });
  const producer = await env.producer();
  const send = (from: number, count: number) =>
    producer.send({
      topic: 'shared',
      acks: -1,
      messages: Array.from({ length: count }, (_, i) => ({ key: `k${from + i}`, value: `m${from + i}` })),
    });

  const a = await consume(env, 'pair', 'shared');
  t.same(a.assigned, [0, 1, 2, 3], 'alone, the first consumer has every partition');
  const b = await consume(env, 'pair', 'shared');
  await until('a rebalance over both', () => a.assigned.length > 0 && b.assigned.length > 0 && a.assigned.length + b.assigned.length === 4);
  t.same([...a.assigned, ...b.assigned].sort(), [0, 1, 2, 3], 'partitions split without overlap');

  await send(0, 40);
  await until('40 messages between them', () => a.received.length + b.received.length >= 40);
  t.ok(a.received.length > 0 && b.received.length > 0, 'both consumed');
  t.ok(a.received.every((r) => a.assigned.includes(r.partition)), 'the first read only its partitions');
  t.ok(b.received.every((r) => b.assigned.includes(r.partition)), 'the second read only its partitions');

  // The second leaves (LeaveGroup): the first takes every partition over, from the committed offsets.
  await b.consumer.disconnect();
  await until('the first to get every partition back', () => a.assigned.length === 4);
  await send(40, 20);
  await until('60 messages in all', () => a.received.length + b.received.length >= 60);
  await sleep(300);
  const all = [...values(a.received), ...values(b.received)];
  t.equal(all.length, 60, 'nothing more');
  t.same(duplicates(all), [], 'every message once');
});

void t.test('a member that stops heartbeating is evicted after its session timeout', async (t) => {
  const env = await setup(t, { topics: [{ name: 'evict', partitions: 2 }] });
  const producer = await env.producer();
  let release!: () => void;
  const stuck = new Promise<void>((resolve) => {
    release = resolve;
  });
  t.teardown(() => release());

  const a = await consume(env, 'evictors', 'evict');
  const b = await consume(env, 'evictors', 'evict', { sessionTimeout: 1000, beforeBatch: () => stuck });
  await until('a rebalance over both', () => a.assigned.length === 1 && b.assigned.length === 1);
  const joinsBefore = a.joins;
  // Its eachBatch never returns, so it sends no heartbeats.
  await producer.send({ topic: 'evict', acks: -1, messages: [{ partition: b.assigned[0]!, value: 'for the stuck one' }] });
  const started = Date.now();
  await until('the healthy consumer to take both partitions', () => a.assigned.length === 2, 6000);
  const waited = Date.now() - started;
  t.ok(a.joins > joinsBefore, 'a rebalance happened');
  t.ok(waited >= 700 && waited < 3000, `evicted after about the 1000 ms session timeout (${waited} ms)`);
  await until('the uncommitted message to reach the survivor', () => values(a.received).includes('for the stuck one'));

  // Released, the evicted consumer's commit is refused with UNKNOWN_MEMBER_ID, which
  // kafkajs turns into a crash without restart when it comes from commitOffsets.
  release();
  await until('the evicted consumer to crash', () => b.crashes.length > 0);
  t.match(b.crashes[0]!.error.message, /not aware of this member/, 'its commit: UNKNOWN_MEMBER_ID');
  t.equal(b.crashes[0]!.restart, false, 'kafkajs does not restart it');
  t.equal(a.crashes.length, 0, 'the survivor is unaffected');
});

void t.test('stop() and restart() mid-stream lose no acknowledged message', async (t) => {
  const env = await setup(t, { topics: [{ name: 'outage', partitions: 3 }] });
  const producer = await env.producer();
  const consumer = await consume(env, 'survivors', 'outage');

  const acknowledged: string[] = [];
  const failed: string[] = [];
  let slowest = 0;
  let outageSeen = false;
  const outage = (async () => {
    await until('some traffic', () => acknowledged.length >= 20);
    await env.broker.stop();
    await sleep(800);
    outageSeen = true;
    await env.broker.restart();
  })();
  for (let i = 0; i < 30; i++) {
    const messages = [0, 1].map((j) => ({ key: `k${(2 * i + j) % 7}`, value: `m${2 * i + j}` }));
    const sentAt = Date.now();
    try {
      await producer.send({ topic: 'outage', acks: -1, messages });
      slowest = Math.max(slowest, Date.now() - sentAt);
      acknowledged.push(...messages.map((m) => m.value));
    } catch {
      failed.push(...messages.map((m) => m.value));
    }
    await sleep(20);
  }
  await outage;
  t.ok(outageSeen, 'the broker was down in between');
  t.same(failed, [], 'every send succeeded, retrying through the outage');
  t.ok(slowest >= 400, `a send waited out the outage (${slowest} ms)`);

  const stored = [0, 1, 2].flatMap((p) => env.broker.records('outage', p).map((r) => r.value?.toString() ?? ''));
  t.same(duplicates(stored), [], 'no batch written twice');
  t.same(acknowledged.filter((v) => !stored.includes(v)), [], 'every acknowledged message is stored');
  await until('the consumer to see every acknowledged message', () => {
    const seen = new Set(values(consumer.received));
    return acknowledged.every((v) => seen.has(v));
  });
  t.pass(`the consumer reconnected and saw all ${acknowledged.length}`);
});

void t.test('an idle consumer waits in Fetch and wakes as soon as data arrives', async (t) => {
  const env = await setup(t, { topics: [{ name: 'idle', partitions: 1 }] });
  const producer = await env.producer();
  const consumer = await consume(env, 'sleepers', 'idle', { maxWaitTimeInMs: 1500, heartbeatInterval: 500 });
  await until('the first fetch', () => consumer.fetches > 0);

  const fetchesBefore = consumer.fetches;
  const cpuBefore = process.cpuUsage();
  const startedAt = Date.now();
  await sleep(2000);
  const cpu = process.cpuUsage(cpuBefore);
  const wall = Date.now() - startedAt;
  const fetches = consumer.fetches - fetchesBefore;
  t.ok(fetches <= 3, `${fetches} fetches in ${wall} ms on an empty partition with maxWaitTimeInMs 1500`);
  t.ok((cpu.user + cpu.system) / 1000 < wall * 0.2, `CPU ${Math.round((cpu.user + cpu.system) / 1000)} ms in ${wall} ms`);

  // Send while a fetch is parked, well before its 1500 ms run out.
  const fetchesNow = consumer.fetches;
  await until('a new fetch', () => consumer.fetches > fetchesNow, 3000);
  await sleep(200);
  const sentAt = Date.now();
  await producer.send({ topic: 'idle', acks: -1, messages: [{ key: 'k', value: 'wake up' }] });
  await until('the message', () => consumer.received.length > 0, 3000);
  const latency = Date.now() - sentAt;
  t.ok(latency < 700, `delivered ${latency} ms after the send, not at the end of the wait`);
});

void t.test('idempotence on the wire: a retried batch is acknowledged once and written once', async (t) => {
  const { broker } = await setup(t, { topics: [{ name: 'dedup', partitions: 1 }] });
  // kafkajs's own request encoders and response decoders, independent of the broker's code.
  const require = createRequire(import.meta.url);
  const produceRequest = require('kafkajs/src/protocol/requests/produce/v3/request.js');
  const produceResponse = require('kafkajs/src/protocol/requests/produce/v3/response.js');
  const createRequest = require('kafkajs/src/protocol/request.js');
  const Long = require('kafkajs/src/utils/long.js');

  const socket = connect(broker.port, '127.0.0.1');
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  t.teardown(() => socket.destroy());
  let correlationId = 0;
  let inbox = Buffer.alloc(0);
  const produce = async (firstSequence: number, values: string[]) => {
    const request = produceRequest({
      acks: -1,
      timeout: 1000,
      producerId: Long.fromNumber(77),
      producerEpoch: 0,
      topicData: [{ topic: 'dedup', partitions: [{ partition: 0, firstSequence, messages: values.map((value) => ({ value })) }] }],
    });
    const frame = await createRequest({ request, correlationId: ++correlationId, clientId: 'raw' });
    socket.write(frame.buffer);
    while (inbox.length < 4 || inbox.length < 4 + inbox.readInt32BE(0)) {
      const chunk: Buffer = await new Promise((resolve) => socket.once('data', resolve));
      inbox = Buffer.concat([inbox, chunk]);
    }
    const size = inbox.readInt32BE(0);
    const payload = inbox.subarray(8, 4 + size); // after size and correlation id
    t.equal(inbox.readInt32BE(4), correlationId, 'answer to this request');
    inbox = inbox.subarray(4 + size);
    const decoded = await produceResponse.decode(payload);
    const { errorCode, baseOffset } = decoded.topics[0].partitions[0];
    return { errorCode, baseOffset: Number(baseOffset) };
  };

  t.same(await produce(0, ['a', 'b']), { errorCode: 0, baseOffset: 0 }, 'first batch');
  t.same(await produce(0, ['a', 'b']), { errorCode: 0, baseOffset: 0 }, 'its retry: same offset');
  t.same(await produce(2, ['c']), { errorCode: 0, baseOffset: 2 }, 'the next sequence');
  t.same(await produce(5, ['x']), { errorCode: 45, baseOffset: -1 }, 'a gap: OUT_OF_ORDER_SEQUENCE_NUMBER');
  t.same(
    broker.records('dedup', 0).map((r) => [r.offset, r.value?.toString()]),
    [
      [0n, 'a'],
      [1n, 'b'],
      [2n, 'c'],
    ],
    'written once each',
  );
});
