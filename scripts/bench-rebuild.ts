import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import { migrateReadDb } from '../shared/read-model/migrations.js';
import { userDataRebuild } from '../projector/rebuild.js';
import type { UserRow } from '../shared/read-model/user-row.js';
import { sqliteEventStore } from '../shared/event-store/sqlite-event-store.js';
import { openReadDb } from '../shared/read-db.js';
import type { DataKey } from '../shared/personal-data/key-store.js';
import { openSqliteKeyStore } from '../shared/personal-data/sqlite-key-store.js';
import { openVault, type Vault } from '../shared/personal-data/vault.js';
import { cores, cpuMicros, leastSeconds, localMariaDbServer, profilePhase } from './bench/stack.js';

/**
 * The rebuild's throughput against the floor it cannot beat: writing the same
 * final rows with plain multi-row INSERTs.
 *  1. Seeds BENCH_EVENTS (1,000,000) user events for BENCH_EVENTS/5 users into a
 *     fresh embedded event store: each user registers, then renames, changes
 *     email, validates and sometimes deactivates, spread over the log; personal
 *     fields sealed under one data key per user from a key store beside it, as the
 *     service stores them (BENCH_SEALED=0: in clear, as stored before sealing).
 *  2. Rebuilds USER_DATA from it into MariaDB (READ_DB_URL, default a fresh
 *     `queries_bench_<random>` on mysql://root@127.0.0.1:3306, dropped at the end).
 *     With the MariaDB server on this machine, its CPU too, and the least wall time
 *     the CPU of both allows on this machine's cores (a rebuild cannot beat that by
 *     overlapping its work better, only by costing less).
 *  3. Inserts the rebuilt table's rows into a fresh copy of its schema with plain
 *     multi-row INSERTs in one transaction, and compares the two wall times.
 * Prints the figures; asserts nothing (machines here are shared and noisy).
 */
const eventCount = Number(process.env.BENCH_EVENTS ?? 1_000_000);
const sealed = process.env.BENCH_SEALED !== '0';
const userCount = Math.max(1, Math.round(eventCount / 5));
const rowsPerInsert = 2000;

/** Events of each user at times (0..1 of the log) after registering; kinds 1 rename, 2 email, 3 validate, 4 deactivate. */
function timeline() {
  const times = new Float64Array(eventCount);
  const users = new Int32Array(eventCount);
  const kinds = new Uint8Array(eventCount);
  let n = 0;
  const push = (time: number, user: number, kind: number) => {
    times[n] = time;
    users[n] = user;
    kinds[n++] = kind;
  };
  const followUps = eventCount - userCount;
  for (let user = 0; user < userCount; user++) {
    const registered = user / userCount;
    push(registered, user, 0);
    // Spread the other events over users; activity decays after registering.
    const share = Math.floor(followUps / userCount) + (user < followUps % userCount ? 1 : 0);
    let at = registered;
    for (let i = 0; i < share; i++) {
      at += -Math.log(1 - Math.random()) * 0.05;
      const last = i === share - 1;
      push(at, user, last && user % 7 === 0 ? 4 : i === 1 ? 3 : 1 + (i % 2));
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => times[a]! - times[b]!);
  return { order, users, kinds };
}

function eventOf(kind: number, user: number, userId: string, revision: number, occurredAt: string): { type: string; data: Record<string, unknown> } {
  switch (kind) {
    case 0:
      return { type: 'UserRegistered', data: { userId, name: `User ${user}`, email: `user${user}@bench.example.org`, occurredAt } };
    case 1:
      return { type: 'UserRenamed', data: { userId, name: `User ${user} r${revision}`, occurredAt } };
    case 2:
      return {
        type: 'UserEmailChanged',
        data: { userId, email: `user${user}.${revision}@bench.example.org`, previousEmail: `user${user}@bench.example.org`, occurredAt },
      };
    case 3:
      return { type: 'UserValidated', data: { userId, occurredAt } };
    default:
      return { type: 'UserDeactivated', data: { userId, occurredAt } };
  }
}

/**
 * Writes straight into the embedded store's table (created by the store): nothing else has the file open, so big
 * transactions without fsync are safe. Personal fields are sealed under one key per user from the bench's key
 * store, as the service stores them (BENCH_SEALED=0: in clear, as stored before sealing existed).
 */
function seed(file: string, vault: Vault, keys: DataKey[]) {
  const db = new Database(file);
  db.pragma('synchronous = OFF');
  const insert = db.prepare(
    'INSERT INTO events (event_id, stream_id, revision, type, data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );
  const { order, users, kinds } = timeline();
  const start = Date.parse('2025-01-01T00:00:00Z');
  const ids = Array.from({ length: userCount }, (_, i) => uuidv7({ msecs: start + i }));
  const revisions = new Int32Array(userCount);
  const recordedAt = new Date().toISOString();
  const writeMany = db.transaction((from: number, to: number) => {
    for (let seq = from; seq < to; seq++) {
      const index = order[seq]!;
      const user = users[index]!;
      const userId = ids[user]!;
      const revision = revisions[user]!;
      revisions[user] = revision + 1;
      const event = eventOf(kinds[index]!, user, userId, revision, new Date(start + seq * 10).toISOString());
      const data = sealed ? vault.seal(`user-${userId}`, event, keys[user]!) : event.data;
      insert.run(randomUUID(), `user-${userId}`, revision, event.type, JSON.stringify(data), JSON.stringify({ commandType: event.type }), recordedAt);
    }
  });
  for (let from = 0; from < order.length; from += 50_000) writeMany(from, Math.min(order.length, from + 50_000));
  db.close();
}

async function main() {
  // BENCH_DATA_DIR keeps the seeded store between runs (reused when it holds BENCH_EVENTS events).
  const keep = process.env.BENCH_DATA_DIR;
  const dir = keep ?? (await mkdtemp(join(tmpdir(), 'users-bench-rebuild-')));
  const database = `queries_bench_${randomBytes(4).toString('hex')}`;
  const url = process.env.READ_DB_URL ?? `mysql://root@127.0.0.1:3306/${database}`;
  const db = await openReadDb({ client: 'mysql', url });
  const store = sqliteEventStore({ file: join(dir, 'events.sqlite'), readAllInWorker: true });
  const keyStore = openSqliteKeyStore(join(dir, 'keys.sqlite'));
  const vault = await openVault({ keyStore });
  try {
    let t = performance.now();
    if ((await store.headPosition!()) !== BigInt(eventCount)) {
      if (await store.headPosition!()) throw new Error(`${dir}/events.sqlite holds other events; use an empty BENCH_DATA_DIR`);
      seed(join(dir, 'events.sqlite'), vault, sealed ? await keyStore.create(userCount) : []);
      console.log(`seeded ${eventCount} events for ${userCount} users in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    }
    await migrateReadDb(db);

    const rebuild = userDataRebuild({ vault, store, db, logger: pino({ level: 'warn' }) });
    // BENCH_PROFILE_DIR: a CPU profile of the rebuild alone (this process's main thread), `rebuild.cpuprofile`.
    const profiling = await profilePhase(process.env.BENCH_PROFILE_DIR, 'rebuild.cpuprofile');
    // The MariaDB server's CPU too, when it runs on this machine: it shares the cores with the rebuild.
    const server = localMariaDbServer(url);
    const serverBefore = server === undefined ? 0 : cpuMicros(server);
    t = performance.now();
    const cpu = process.cpuUsage();
    const result = await rebuild.run();
    const rebuildSeconds = (performance.now() - t) / 1000;
    const { user, system } = process.cpuUsage(cpu);
    const serverSeconds = server === undefined ? undefined : (cpuMicros(server) - serverBefore) / 1e6;
    await profiling.stop();
    const rebuildRate = result.events / rebuildSeconds;
    const cpuSeconds = (user + system) / 1e6;
    console.log(
      `rebuild: ${result.events} events -> ${result.rows} rows in ${rebuildSeconds.toFixed(2)} s: ` +
        `${Math.round(rebuildRate)} events/s, ${Math.round(result.rows / rebuildSeconds)} rows/s ` +
        `(this process: ${cpuSeconds.toFixed(2)} s CPU, peak RSS ${Math.round(process.memoryUsage().rss / 2 ** 20)} MiB)`,
    );
    if (serverSeconds !== undefined) {
      console.log(
        `  MariaDB server: ${serverSeconds.toFixed(2)} s CPU; this process's and the server's CPU spread over all ${cores} cores ` +
          `would take at least ${leastSeconds(cpuSeconds + serverSeconds).toFixed(2)} s`,
      );
    }
    const { readMs, foldMs, writeMs } = result.timings;
    console.log(
      `  of which: waiting for the log ${(readMs / 1000).toFixed(2)} s, validate+fold ${(foldMs / 1000).toFixed(2)} s ` +
        `(with background writes), final writes ${(writeMs / 1000).toFixed(2)} s; ${result.rowsWritten} row writes for ${result.rows} rows; ` +
        `live projector held ${Math.round(result.pausedMs)} ms`,
    );

    const rows = await db<UserRow>('USER_DATA').select('*').orderBy('ID_USER_DATA');
    await db.raw('DROP TABLE IF EXISTS USER_DATA_PLAIN');
    await db.raw('CREATE TABLE USER_DATA_PLAIN LIKE USER_DATA');
    t = performance.now();
    await db.transaction(async (trx) => {
      for (let i = 0; i < rows.length; i += rowsPerInsert) await trx('USER_DATA_PLAIN').insert(rows.slice(i, i + rowsPerInsert));
    });
    const plainSeconds = (performance.now() - t) / 1000;
    await db.raw('DROP TABLE USER_DATA_PLAIN');
    console.log(
      `plain INSERT of the same ${rows.length} rows (${rowsPerInsert} per statement, one transaction): ${plainSeconds.toFixed(2)} s: ` +
        `${Math.round(rows.length / plainSeconds)} rows/s, ${Math.round(result.events / plainSeconds)} events/s equivalent`,
    );
    const ratio = plainSeconds / rebuildSeconds;
    console.log(`rebuild rate / plain INSERT rate = ${ratio.toFixed(2)} (target >= 0.50: ${ratio >= 0.5 ? 'met' : 'missed'})`);
  } finally {
    await store.close();
    await keyStore.close();
    if (!process.env.READ_DB_URL) await db.raw('DROP DATABASE IF EXISTS ??', [database]);
    await db.destroy();
    if (!keep) await rm(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
