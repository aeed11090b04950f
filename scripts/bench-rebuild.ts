import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { v7 as uuidv7 } from 'uuid';
import { sqliteEventStore } from '../shared/event-store/sqlite-event-store.js';
import type { DataKey } from '../shared/personal-data/key-store.js';
import { openSqliteKeyStore } from '../shared/personal-data/sqlite-key-store.js';
import { openVault, type Vault } from '../shared/personal-data/vault.js';
import { benchUserEvent } from './bench/user-events.js';
import { benchExit, onInterrupt } from './bench/interrupt.js';
import type { RunFigures } from './bench/rebuild-run.js';
import { dropDatabases, median, startChild } from './bench/stack.js';
import { rebuildNodeOptions } from './role-node-options.js';

/**
 * The rebuild's throughput against the floor it cannot beat: writing the same
 * final rows with plain multi-row INSERTs.
 *  1. Seeds BENCH_EVENTS (1,000,000) user events for BENCH_EVENTS/5 users into a
 *     fresh embedded event store: each user registers, then renames, changes
 *     email, validates and sometimes deactivates, spread over the log; personal
 *     fields sealed under one data key per user from a key store beside it, as the
 *     service stores them (BENCH_SEALED=0: in clear, as stored before sealing).
 *  2. Rebuilds USER_DATA from it into MariaDB (READ_DB_URL, default a fresh
 *     `queries_bench_<random>` on mysql://root@127.0.0.1:3306, dropped at the end),
 *     in a process of its own started as `npm run rebuild` starts, so its code, its
 *     caches and its log reader's thread are as cold as an operator's run
 *     (`bench/rebuild-run.ts`).
 *     With the MariaDB server on this machine, its CPU too, and the least wall time
 *     the CPU of both allows on this machine's cores (a rebuild cannot beat that by
 *     overlapping its work better, only by costing less).
 *  3. Inserts the rebuilt table's rows into a fresh copy of its schema with plain
 *     multi-row INSERTs in one transaction, and compares the two wall times.
 *  Steps 2 and 3 run BENCH_RUNS (3) times on the one seeded store, each in a fresh
 *  process and database; the medians are printed last (this machine's pace moves by tens of
 *  percent from one run to the next).
 * Prints the figures; asserts nothing (machines here are shared and noisy).
 */
const eventCount = Number(process.env.BENCH_EVENTS ?? 1_000_000);
const sealed = process.env.BENCH_SEALED !== '0';
const userCount = Math.max(1, Math.round(eventCount / 5));
/** Rebuilds of the one seeded store, each into a fresh database; medians printed. */
const runs = Math.max(1, Number(process.env.BENCH_RUNS ?? 3));
/** The MariaDB server each run's fresh database is made on, when READ_DB_URL names none. */
const localMariaDb = 'mysql://root@127.0.0.1:3306';

/** Events of each user at times (0..1 of the log) after registering; kinds as `benchUserEvent` reads them. */
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
      const event = benchUserEvent(kinds[index]!, user, userId, revision, new Date(start + seq * 10).toISOString());
      const data = sealed ? vault.seal(`user-${userId}`, event, keys[user]!) : event.data;
      insert.run(randomUUID(), `user-${userId}`, revision, event.type, JSON.stringify(data), JSON.stringify({ commandType: event.type }), recordedAt);
    }
  });
  for (let from = 0; from < order.length; from += 50_000) writeMany(from, Math.min(order.length, from + 50_000));
  db.close();
}

/** Seeds the store in `dir` unless it holds the events already. */
async function seedOnce(dir: string): Promise<void> {
  const store = sqliteEventStore({ file: join(dir, 'events.sqlite') });
  const keyStore = openSqliteKeyStore(join(dir, 'keys.sqlite'));
  try {
    const t = performance.now();
    if ((await store.headPosition!()) === BigInt(eventCount)) return;
    if (await store.headPosition!()) throw new Error(`${dir}/events.sqlite holds other events; use an empty BENCH_DATA_DIR`);
    seed(join(dir, 'events.sqlite'), await openVault({ keyStore }), sealed ? await keyStore.create(userCount) : []);
    console.log(`seeded ${eventCount} events for ${userCount} users in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  } finally {
    await store.close();
    await keyStore.close();
  }
}

async function main() {
  // BENCH_DATA_DIR keeps the seeded store between runs (reused when it holds BENCH_EVENTS events).
  const keep = process.env.BENCH_DATA_DIR;
  const dir = keep ?? (await mkdtemp(join(tmpdir(), 'users-bench-rebuild-')));
  if (!keep) onInterrupt(() => rm(dir, { recursive: true, force: true }));
  try {
    await seedOnce(dir);
    const figures: RunFigures[] = [];
    for (let run = 1; run <= runs; run++) {
      // Each run in a process of its own (as `npm run rebuild` runs: its code, caches and log reader
      // cold) and into a fresh database (READ_DB_URL: into that one, its USER_DATA replaced each time).
      const database = `queries_bench_${randomBytes(4).toString('hex')}`;
      const url = process.env.READ_DB_URL ?? `${localMariaDb}/${database}`;
      // The run drops its fresh database at its end; interrupted, it is stopped before it can, so this does.
      if (!process.env.READ_DB_URL) onInterrupt(() => dropDatabases(localMariaDb, [database]));
      const child = await startChild('rebuild-run.ts', { BENCH_DATA_DIR: dir, BENCH_RUN: String(run), BENCH_RUN_DB_URL: url }, rebuildNodeOptions);
      for (let line = child.line; ; line = await child.nextLine()) {
        // The run's own lines (their indent trimmed on the way), its figures last.
        if (!line.startsWith('{')) console.log(line.startsWith('run ') ? line : `  ${line}`);
        else {
          figures.push(JSON.parse(line) as RunFigures);
          break;
        }
      }
      await child.stop();
    }
    const rebuildSeconds = median(figures.map((f) => f.rebuildSeconds));
    const ratio = median(figures.map((f) => f.plainSeconds / f.rebuildSeconds));
    console.log(
      `median of ${runs} runs: rebuild ${rebuildSeconds.toFixed(2)} s (${Math.round(eventCount / rebuildSeconds)} events/s); ` +
        `rebuild rate / plain INSERT rate = ${ratio.toFixed(2)} (target >= 0.50: ${ratio >= 0.5 ? 'met' : 'missed'})`,
    );
  } finally {
    if (!keep) await rm(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => benchExit(1, error));
