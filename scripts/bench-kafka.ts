import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { kafkaPublisher } from '../command-side/relay/kafka-publisher.js';
import type { EventPublisher, OutboundMessage } from '../command-side/relay/publisher.js';
import { eventRelay } from '../command-side/relay/relay.js';
import { toUserEvent } from '../projector/classify.js';
import { migrateReadDb } from '../shared/read-model/migrations.js';
import { userRowFrom } from '../projector/user-row.js';
import type { UserRow } from '../shared/read-model/user-row.js';
import { esdbEventStore } from '../shared/event-store/esdb-event-store.js';
import type { EventStore } from '../shared/event-store/port.js';
import { createKafka } from '../shared/kafka/kafka-client.js';
import type { Kafka } from 'kafkajs';
import { openReadDb } from '../shared/read-db.js';
import { userStreamId } from '../shared/user-events.js';
import { openSqliteKeyStore } from '../shared/personal-data/sqlite-key-store.js';
import { openVault, type Vault } from '../shared/personal-data/vault.js';
import { roleEnvironment, roleNodeOptions } from './role-node-options.js';
import { benchExit, onInterrupt } from './bench/interrupt.js';
import { cores, cpuMicros, dropDatabases, leastSeconds, localMariaDbServer, mainThreadCpuMicros, median, percentile, profilePhase, send, startChild, startStack } from './bench/stack.js';

/**
 * The production path on the protocol test servers (EventStoreDB gRPC test server,
 * in-repo Kafka broker; each a process of its own) and the machine's MariaDB:
 *  1. seeds BENCH_EVENTS (100,000) user events into EventStoreDB, then reads the
 *     whole log back through the client: the test server's own pace;
 *  2. relay: events/s from the log to Kafka (acknowledged), and its ratio to that read;
 *     before it, its two halves apart (reading and opening the log with a publisher
 *     that only keeps the messages; publishing those batches alone, to a topic of
 *     their own), and the pace of the two one after the other on one thread; with
 *     the CPU each phase cost this process and each test server (Linux /proc), and
 *     the most the relay could do if both halves' CPU were spread over every core,
 *     and if its own work cost nothing (the bare read's CPU and the publishing
 *     half's, spread over every core: the ceiling the client and servers set);
 *     and the relay's thread's CPU (all its JavaScript runs on one thread), with
 *     the most one thread could carry at that cost;
 *  3. projector: events/s from Kafka into MariaDB, each run in a process of its own
 *     with the role's Node options (`scripts/bench/projector-run.ts`, warmed up by
 *     projecting the same events once first, untimed), followed by a plain
 *     multi-row INSERT of the same final rows (rows/s) for comparison; the
 *     projector's CPU per event, and the MariaDB server's CPU in each when it runs on
 *     this machine; BENCH_PROJECTOR_RUNS (3) runs and their median, beside the
 *     ceiling the client sets (the bare consume's time against the INSERT's) and
 *     the one its own cost sets (its CPU and the servers', spread over every core);
 *     before them, a bare consume of the topic through kafkajs (the broker's and
 *     client's pace);
 *  4. the four roles as processes at a steady BENCH_RATE (100) writes/s for
 *     BENCH_SECONDS (20): time from the write's 201 to the row being readable
 *     (writes of the first BENCH_WARMUP_SECONDS (3) not sampled), split at the
 *     moment another consumer group sees the message in Kafka.
 */
const totalEvents = Number(process.env.BENCH_EVENTS ?? 100_000);
const rate = Number(process.env.BENCH_RATE ?? 100);
const seconds = Number(process.env.BENCH_SECONDS ?? 20);
const warmupSeconds = Number(process.env.BENCH_WARMUP_SECONDS ?? 3);
const projectorRuns = Number(process.env.BENCH_PROJECTOR_RUNS ?? 3);
const mariadbUrl = process.env.MARIADB_URL ?? 'mysql://root@127.0.0.1:3306';
/** Where each relay phase's and projector run's CPU profile goes (`relay.cpuprofile`, `projector-run-N.cpuprofile`...), when set. */
const profileDir = process.env.BENCH_PROFILE_DIR;
const logger = pino({ level: 'silent' });
const topic = 'users.events.v1';
/** Where the relay's publishing half is timed alone, away from the topic the projector reads. */
const dryTopic = 'users.events.bench-dry-run';

/** The user events as the service writes them: personal fields sealed under one key per user. */
async function seed(store: EventStore, vault: Vault): Promise<void> {
  // Four events per user: registered, renamed, email changed, validated.
  const users = Math.ceil(totalEvents / 4);
  const at = new Date().toISOString();
  for (let i = 0; i < users; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, users - i) }, (_, j) => {
        const userId = randomUUID();
        const n = i + j;
        return vault.newKey().then((key) => store.appendToStream(
          userStreamId(userId),
          ([
            { type: 'UserRegistered', data: { userId, name: `Bench ${n}`, email: `b${n}@bench.example.org`, occurredAt: at } },
            { type: 'UserRenamed', data: { userId, name: `Bench ${n} renamed`, occurredAt: at } },
            { type: 'UserEmailChanged', data: { userId, email: `c${n}@bench.example.org`, previousEmail: `b${n}@bench.example.org`, occurredAt: at } },
            { type: 'UserValidated', data: { userId, occurredAt: at } },
          ] as const).map((event) => ({ type: event.type, data: vault.seal(userStreamId(userId), event, key) })),
          { expectedRevision: 'no_stream' },
        ));
      }),
    );
  }
}

/** Reads the whole log through the client, keeping nothing but how many events and the last position. */
async function readWholeLog(store: EventStore): Promise<{ count: number; head: string }> {
  let count = 0;
  let head = '';
  for (let after: bigint | undefined; ; ) {
    const page = await store.readAll({ ...(after === undefined ? {} : { after }), maxCount: 5000 });
    count += page.length;
    if (page.length > 0) head = page[page.length - 1]!.position.toString();
    if (page.length < 5000) return { count, head };
    after = page[page.length - 1]!.position;
  }
}

async function finalRows(store: EventStore, vault: Vault): Promise<UserRow[]> {
  const rows = new Map<string, UserRow>();
  for (let after: bigint | undefined; ; ) {
    const page = await store.readAll({ ...(after === undefined ? {} : { after }), maxCount: 5000 });
    for (const e of await vault.open(page)) {
      const event = toUserEvent(e);
      const row = event && userRowFrom(rows.get(event.data.userId), event, e.revision);
      if (row) rows.set(row.ID_USER_DATA, row);
    }
    if (page.length < 5000) break;
    after = page[page.length - 1]!.position;
  }
  return [...rows.values()];
}

/** Seconds for a consumer of a new group to fetch `count` messages of the topic, doing nothing with them. */
async function consumeOnly(kafka: Kafka, count: number): Promise<number> {
  const consumer = kafka.consumer({ groupId: `bench-bare-${randomUUID()}`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let seen = 0;
  const started = performance.now();
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  await consumer.run({
    partitionsConsumedConcurrently: 4,
    eachBatch: ({ batch }) => {
      seen += batch.messages.length;
      if (seen >= count) done();
      return Promise.resolve();
    },
  });
  await all;
  const seconds = (performance.now() - started) / 1000;
  await consumer.disconnect();
  return seconds;
}

const freshDb = async (name: string) => {
  // As the projector role opens it (`batchStatements`): its batches take two round trips.
  const db = await openReadDb({ client: 'mysql', url: `${mariadbUrl}/${name}` }, { batchStatements: true });
  await migrateReadDb(db);
  return db;
};

/** The two test servers, each a process of its own, so that their work does not share a thread with the code measured. */
async function startServers() {
  const esdb = await startChild('esdb-server.ts');
  const broker = await startChild('kafka-broker.ts', { BENCH_TOPICS: `${topic}:6,${dryTopic}:6` });
  return {
    eventstoreUrl: esdb.line,
    brokers: broker.line.split(','),
    pids: { esdb: esdb.pid, broker: broker.pid },
    stop: () => Promise.all([esdb.stop(), broker.stop()]),
  };
}

/** The processes whose CPU a phase counts besides this one: the test servers, and MariaDB and the projector's run when given. */
type Pids = { esdb: number; broker: number; mariadb?: number; projector?: number };
/** This process's CPU usage, and each of `Pids`' CPU (µs) under the same name, when the mark was taken. */
type CpuMark = Pids & { self: NodeJS.CpuUsage };
/** CPU seconds spent by this process and by each of `pids` since `cpuNow()` was taken. */
function cpuSince(mark: CpuMark, pids: Pids) {
  const self = process.cpuUsage(mark.self);
  const since = (pid: number, at: number) => (cpuMicros(pid) - at) / 1e6;
  const sinceIfCounted = (pid: number | undefined, at: number | undefined) => (pid === undefined || at === undefined ? undefined : since(pid, at));
  const [mariadb, projector] = [sinceIfCounted(pids.mariadb, mark.mariadb), sinceIfCounted(pids.projector, mark.projector)];
  return {
    self: (self.user + self.system) / 1e6,
    esdb: since(pids.esdb, mark.esdb),
    broker: since(pids.broker, mark.broker),
    ...(mariadb === undefined ? {} : { mariadb }),
    ...(projector === undefined ? {} : { projector }),
  };
}
const cpuNow = (pids: Pids): CpuMark => ({
  self: process.cpuUsage(),
  esdb: cpuMicros(pids.esdb),
  broker: cpuMicros(pids.broker),
  ...(pids.mariadb === undefined ? {} : { mariadb: cpuMicros(pids.mariadb) }),
  ...(pids.projector === undefined ? {} : { projector: cpuMicros(pids.projector) }),
});
const cpuText = (c: ReturnType<typeof cpuSince>) =>
  `CPU ${c.self.toFixed(2)} s here, ${c.esdb.toFixed(2)} s EventStoreDB test server, ${c.broker.toFixed(2)} s Kafka test broker`;
const cpuTotal = (c: ReturnType<typeof cpuSince>) => c.self + c.esdb + c.broker + (c.mariadb ?? 0) + (c.projector ?? 0);

/** The throughput part, on servers of its own that are stopped whatever happens (a failed start included). */
async function main() {
  const servers = await startServers();
  try {
    await throughput(servers);
  } finally {
    await servers.stop();
  }
}

async function throughput(servers: Awaited<ReturnType<typeof startServers>>) {
  const { pids } = servers;
  const store = esdbEventStore({ connectionString: servers.eventstoreUrl });
  const keyDir = await mkdtemp(join(tmpdir(), 'users-bench-keys-'));
  const keyStore = openSqliteKeyStore(join(keyDir, 'keys.sqlite'));
  const vault = await openVault({ keyStore });
  const kafka = createKafka({ brokers: servers.brokers, clientId: 'bench', logger });
  const suffix = randomBytes(4).toString('hex');
  const databases: string[] = [];
  const removeData = async () => {
    await rm(keyDir, { recursive: true, force: true });
    await dropDatabases(mariadbUrl, databases);
  };
  onInterrupt(removeData);
  try {
    let started = performance.now();
    await seed(store, vault);
    console.log(`seeded ${totalEvents} events into the EventStoreDB test server in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    // The test server's own pace: the whole log read through the client, nothing else done with it.
    started = performance.now();
    let mark = cpuNow(pids);
    // Only its length and head are kept: the roles measured below run with no copy of the log on their heap.
    const { count: logLength, head } = await readWholeLog(store);
    const bareReadRate = logLength / ((performance.now() - started) / 1000);
    const bareReadCpu = cpuSince(mark, pids);
    console.log(`bare read of the log through the client: ${bareReadRate.toFixed(0)} events/s (${cpuText(bareReadCpu)})`);

    // The relay's two halves apart, for what bounds it: reading and opening the log with a publisher that only
    // keeps the messages (a lease of its own), then publishing the kept batches alone, to a topic of their own.
    const kept: OutboundMessage[][] = [];
    const keeper: EventPublisher = { publish: (messages) => Promise.resolve(void kept.push([...messages])), close: () => Promise.resolve() };
    const readingRelay = eventRelay({ store, vault, publisher: keeper, topic: dryTopic, logger, leaseMs: 15_000, batchSize: 1000 });
    let profiling = await profilePhase(profileDir, 'relay-reading-half.cpuprofile');
    started = performance.now();
    mark = cpuNow(pids);
    void readingRelay.start();
    while (readingRelay.status().position !== head) await new Promise((resolve) => setTimeout(resolve, 20));
    const readingRate = logLength / ((performance.now() - started) / 1000);
    const readingCpu = cpuSince(mark, pids);
    await profiling.stop();
    await readingRelay.stop();
    const dryPublisher = kafkaPublisher(kafka, dryTopic);
    profiling = await profilePhase(profileDir, 'relay-publishing-half.cpuprofile');
    started = performance.now();
    mark = cpuNow(pids);
    for (const batch of kept) await dryPublisher.publish(batch);
    const publishingRate = logLength / ((performance.now() - started) / 1000);
    const publishingCpu = cpuSince(mark, pids);
    await profiling.stop();
    await dryPublisher.close();
    const keptBatches = kept.length;
    kept.length = 0;
    const oneAfterOther = 1 / (1 / readingRate + 1 / publishingRate);
    /** Events/s if these phases' CPU (this process's and the test servers') were spread perfectly over every core. */
    const spreadOverCores = (...phases: ReturnType<typeof cpuSince>[]) => logLength / leastSeconds(phases.reduce((sum, phase) => sum + cpuTotal(phase), 0));
    const cpuBound = spreadOverCores(readingCpu, publishingCpu);
    console.log(
      `relay's halves apart: reading and opening the log ${readingRate.toFixed(0)} events/s (${(readingRate / bareReadRate).toFixed(2)}x the bare read; ${cpuText(readingCpu)}), ` +
        `publishing the same ${keptBatches} batches to Kafka ${publishingRate.toFixed(0)} events/s (${cpuText(publishingCpu)}); one after the other at most ` +
        `${oneAfterOther.toFixed(0)} events/s (${(oneAfterOther / bareReadRate).toFixed(2)}x the bare read); both halves' CPU spread over all ${cores} cores at most ` +
        `${cpuBound.toFixed(0)} events/s (${(cpuBound / bareReadRate).toFixed(2)}x the bare read)`,
    );
    // The ceiling with none of the relay's own work (opening, the envelope, the schema check, batching): only what the
    // EventStoreDB client and test server spend on a bare read and what kafkajs and the broker spend on the publishing.
    const librariesBound = spreadOverCores(bareReadCpu, publishingCpu);
    console.log(
      `a relay whose own work cost nothing (the bare read's CPU and the publishing half's, spread over all ${cores} cores): at most ` +
        `${librariesBound.toFixed(0)} events/s (${(librariesBound / bareReadRate).toFixed(2)}x the bare read)`,
    );

    const publisher = kafkaPublisher(kafka, topic);
    const relay = eventRelay({ store, vault, publisher, topic, logger, leaseMs: 15_000, batchSize: 1000 });
    profiling = await profilePhase(profileDir, 'relay.cpuprofile');
    started = performance.now();
    mark = cpuNow(pids);
    const threadMark = mainThreadCpuMicros(process.pid);
    void relay.start();
    while (relay.status().position !== head) await new Promise((resolve) => setTimeout(resolve, 20));
    const relaySeconds = (performance.now() - started) / 1000;
    const relayRate = logLength / relaySeconds;
    const relayCpu = cpuSince(mark, pids);
    const threadSeconds = (mainThreadCpuMicros(process.pid) - threadMark) / 1e6;
    await profiling.stop();
    console.log(
      `relay: ${relayRate.toFixed(0)} events/s (${logLength} events to Kafka, acknowledged, in ${relaySeconds.toFixed(1)} s; ` +
        `${(relayRate / bareReadRate).toFixed(2)}x the bare read; ${cpuText(relayCpu)})`,
    );
    // Its JavaScript (both halves, and the clients' share of each) runs on this one thread: a bound the cores' cannot lift.
    const oneThread = logLength / threadSeconds;
    console.log(
      `  the relay's thread (its JavaScript, the EventStoreDB client's and kafkajs's): ${threadSeconds.toFixed(2)} s of CPU in ` +
        `${relaySeconds.toFixed(1)} s (${Math.round((100 * threadSeconds) / relaySeconds)}% of a core); at that cost one thread ` +
        `carries at most ${oneThread.toFixed(0)} events/s (${(oneThread / bareReadRate).toFixed(2)}x the bare read)`,
    );
    await relay.stop();
    await publisher.close();

    // The broker's and the client's own pace: every message fetched through kafkajs, nothing done with it.
    mark = cpuNow(pids);
    const bareConsumeRate = logLength / (await consumeOnly(kafka, logLength));
    const consumeCpu = cpuSince(mark, pids);
    console.log(`bare consume of the topic through kafkajs (6 partitions, one group member): ${bareConsumeRate.toFixed(0)} events/s (${cpuText(consumeCpu)})`);

    // The projector and its baseline, BENCH_PROJECTOR_RUNS (3) times in turn, each into fresh databases with a
    // fresh consumer group: single runs on these machines vary by a quarter, so the median is what is compared.
    const rows = await finalRows(store, vault);
    // The MariaDB server's own CPU in each, when it runs on this machine: its share is the projector's idle time.
    const server = localMariaDbServer(mariadbUrl);
    const withServer: Pids = { ...pids, ...(server === undefined ? {} : { mariadb: server }) };
    const serverText = (cpu: ReturnType<typeof cpuSince>) => (cpu.mariadb === undefined ? '' : `; MariaDB server ${cpu.mariadb.toFixed(2)} s CPU`);
    const projected: { seconds: number; cpuSeconds: number; leastSeconds: number; transactions: number; plainSeconds: number }[] = [];
    for (let run = 1; run <= projectorRuns; run++) {
      const [projectedDb, warmUpDb, plainDb] = ['proj', 'warm', 'plain'].map((name) => `queries_bench_${name}_${suffix}_${run}`) as [string, string, string];
      databases.push(projectedDb, warmUpDb, plainDb);
      for (const name of [projectedDb, warmUpDb]) await (await freshDb(name)).destroy();
      // The projector in a process of its own with the role's Node options (its young generation), as it runs.
      const child = await startChild(
        'projector-run.ts',
        {
          BENCH_BROKERS: servers.brokers.join(','),
          BENCH_TOPIC: topic,
          BENCH_GROUP: `bench-${run}`,
          BENCH_READ_DB_URL: `${mariadbUrl}/${projectedDb}`,
          BENCH_WARMUP_READ_DB_URL: `${mariadbUrl}/${warmUpDb}`,
          BENCH_EVENTS: String(logLength),
          BENCH_PROFILE_NAME: `projector-run-${run}.cpuprofile`,
          // The role's allocator settings too (`scripts/role-node-options.ts`).
          GLIBC_TUNABLES: roleEnvironment('projector', process.env).GLIBC_TUNABLES!,
        },
        roleNodeOptions.projector,
      );
      const withProjector: Pids = { ...withServer, projector: child.pid };
      let cpu: ReturnType<typeof cpuSince>;
      let outcome: { seconds: number; transactions: number };
      try {
        mark = cpuNow(withProjector);
        child.send('go');
        outcome = JSON.parse(await child.nextLine()) as { seconds: number; transactions: number };
        cpu = cpuSince(mark, withProjector);
        await child.nextLine(); // stopped
      } finally {
        await child.stop();
      }
      const { seconds, transactions } = outcome;

      const plain = await freshDb(plainDb);
      mark = cpuNow(withServer);
      started = performance.now();
      for (let i = 0; i < rows.length; i += 500) await plain('USER_DATA').insert(rows.slice(i, i + 500));
      const plainSeconds = (performance.now() - started) / 1000;
      const plainCpu = cpuSince(mark, withServer);
      await plain.destroy();
      // The least time the run's CPU (this process, the test servers, MariaDB when counted) allows on this machine's cores.
      const result = { seconds, cpuSeconds: cpu.projector ?? 0, leastSeconds: leastSeconds(cpuTotal(cpu)), transactions, plainSeconds };
      projected.push(result);
      console.log(
        `projector run ${run}: ${(logLength / seconds).toFixed(0)} events/s from Kafka into MariaDB (${rows.length} rows in ${seconds.toFixed(2)} s, ` +
          `${transactions} transactions, ${((result.cpuSeconds * 1e6) / logLength).toFixed(1)} µs of the projector's CPU per event${serverText(cpu)}); ` +
          `plain multi-row INSERT of the same rows in ${plainSeconds.toFixed(2)} s (${(rows.length / plainSeconds).toFixed(0)} rows/s${serverText(plainCpu)}): ` +
          `${(plainSeconds / seconds).toFixed(2)}x the INSERT's pace, ${(logLength / seconds / bareConsumeRate).toFixed(2)}x the bare consume`,
      );
    }
    console.log(
      `projector, median of ${projected.length} runs: ${median(projected.map((r) => r.plainSeconds / r.seconds)).toFixed(2)}x the plain INSERT's pace ` +
        `(target 0.5), ${median(projected.map((r) => logLength / r.seconds / bareConsumeRate)).toFixed(2)}x the bare consume, ` +
        `${median(projected.map((r) => (r.cpuSeconds * 1e6) / logLength)).toFixed(1)} µs of CPU per event; ` +
        // The ceiling its own cost sets: the same CPU, perfectly overlapped over every core.
        `its CPU and the servers' spread over all ${cores} cores would allow at most ` +
        `${median(projected.map((r) => r.plainSeconds / r.leastSeconds)).toFixed(2)}x the INSERT's pace; ` +
        // The ceiling set by the client: a projector that only fetched its input, doing nothing with it.
        `the bare consume alone would be ${median(projected.map((r) => (r.plainSeconds * bareConsumeRate) / logLength)).toFixed(2)}x the INSERT's pace`,
    );
  } finally {
    await store.close();
    await keyStore.close();
    await removeData();
  }
}

async function lagAtSteadyRate(eventstoreUrl: string, brokers: string[]) {
  const database = `queries_bench_lag_${randomBytes(4).toString('hex')}`;
  const dropDatabase = () => dropDatabases(mariadbUrl, [database]);
  onInterrupt(dropDatabase);
  const stack = await startStack({
    EVENTSTORE_URL: eventstoreUrl,
    KAFKA_BROKERS: brokers.join(','),
    KAFKA_TOPIC: topic,
    KAFKA_GROUP_ID: 'bench-lag',
    READ_DB_URL: `${mariadbUrl}/${database}`,
  });
  const lags: number[] = [];
  const toKafka: number[] = [];
  const fromKafka: number[] = [];
  // A consumer of its own (another group) notes when each stream's message reaches Kafka,
  // which splits the lag in two: command side + EventStoreDB + relay, then consumer + projector + read.
  const inKafka = new Map<string, number>();
  const watcher = createKafka({ brokers, clientId: 'bench-watcher', logger }).consumer({ groupId: `bench-watcher-${randomUUID()}`, maxWaitTimeInMs: 100 });
  await watcher.connect();
  await watcher.subscribe({ topic, fromBeginning: true });
  await watcher.run({ eachMessage: ({ message }) => Promise.resolve(void inKafka.set(message.key?.toString() ?? '', performance.now())) });
  const statuses = new Map<string, number>();
  const pending: Promise<void>[] = [];
  const started = performance.now();
  try {
    for (let n = 0; n < rate * seconds; n++) {
      const due = started + (n * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      pending.push(
        (async () => {
          const tag = randomUUID();
          const count = (status: string) => statuses.set(status, (statuses.get(status) ?? 0) + 1);
          try {
            const body = JSON.stringify({ name: `Lag ${tag}`, email: `${tag}@lag.example.org` });
            const written = await send(`${stack.write}/users`, 'POST', { 'content-type': 'application/json' }, body);
            count(String(written.status));
            if (written.status !== 201) return;
            const { id, consistencyToken } = JSON.parse(written.body) as { id: string; consistencyToken: string };
            const acknowledged = performance.now();
            // The first BENCH_WARMUP_SECONDS (3) are not followed: they measure JIT and connection pools warming up,
            // not the steady state. Every later write is read once with its consistency token (the read waits in
            // the read API until the row is there), which loads the stack far less than polling for the row.
            if (n < rate * warmupSeconds) return;
            const read = await send(`${stack.read}/users/${id}`, 'GET', { 'consistency-token': consistencyToken });
            count(`read ${read.status}`);
            if (read.status !== 200) return;
            const visible = performance.now();
            lags.push(visible - acknowledged);
            const published = inKafka.get(`user-${id}`);
            if (published !== undefined) {
              toKafka.push(published - acknowledged);
              fromKafka.push(visible - published);
            }
          } catch {
            // A connection the overloaded stack dropped: counted, not fatal to the run.
            count('connection error');
          }
        })(),
      );
    }
    await Promise.all(pending);
    const achieved = (rate * seconds) / ((performance.now() - started) / 1000);
    for (const list of [lags, toKafka, fromKafka]) list.sort((a, b) => a - b);
    const split = (list: number[]) => `p50 ${percentile(list, 50).toFixed(1)} ms, p99 ${percentile(list, 99).toFixed(1)} ms`;
    console.log(
      `end-to-end at ${rate} writes/s for ${seconds} s (achieved ${achieved.toFixed(0)}/s, statuses ${JSON.stringify(Object.fromEntries(statuses))}): ` +
        `201 -> read with its token answered p50 ${percentile(lags, 50).toFixed(1)} ms, p99 ${percentile(lags, 99).toFixed(1)} ms over ${lags.length} samples\n` +
        `  of which 201 -> in Kafka (seen by a consumer of another group; ${toKafka.length} samples) ${split(toKafka)}; ` +
        `in Kafka -> row visible ${split(fromKafka)}`,
    );
  } finally {
    await watcher.disconnect();
    await stack.stop();
    await dropDatabase();
  }
}

/** BENCH_PARTS=throughput,lag (both by default) runs only those parts. */
const parts = (process.env.BENCH_PARTS ?? 'throughput,lag').split(',');

async function benchmarks() {
  if (parts.includes('throughput')) await main();
  if (!parts.includes('lag')) return;
  // Fresh servers, so the lag is not spent catching up with the first part's 100,000 events.
  const servers = await startServers();
  try {
    await lagAtSteadyRate(servers.eventstoreUrl, servers.brokers);
  } finally {
    await servers.stop();
  }
}

benchmarks().then(
  () => benchExit(0),
  (error: unknown) => benchExit(1, error),
);
