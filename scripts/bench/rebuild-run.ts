import { join } from 'node:path';
import { pino } from 'pino';
import { userDataRebuild } from '../../projector/rebuild.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { sqliteEventStore } from '../../shared/event-store/sqlite-event-store.js';
import { openSqliteKeyStore } from '../../shared/personal-data/sqlite-key-store.js';
import { openVault, type Vault } from '../../shared/personal-data/vault.js';
import { openReadDb } from '../../shared/read-db.js';
import { migrateReadDb } from '../../shared/read-model/migrations.js';
import type { UserRow } from '../../shared/read-model/user-row.js';
import { cores, cpuMicros, leastSeconds, localMariaDbServer, machineIdleSeconds, mainThreadCpuMicros, profilePhase, requiredEnv } from './stack.js';

/**
 * One run of `npm run bench:rebuild`, in a process of its own started with the
 * rebuild's Node options: the embedded store seeded in BENCH_DATA_DIR (its key
 * store beside it) rebuilt into the MariaDB database at BENCH_RUN_DB_URL (created
 * and migrated here; dropped at the end unless READ_DB_URL named it), then the same
 * rows inserted with plain multi-row INSERTs. Prints its figures as lines of text,
 * then `{ rebuildSeconds, plainSeconds }` as JSON, and exits.
 */
const rowsPerInsert = 2000;

/** One run's figures, the last line it prints (JSON). */
export interface RunFigures {
  rebuildSeconds: number;
  plainSeconds: number;
}

/**
 * One rebuild of the seeded store into `url`'s database (migrated first), then the plain
 * INSERT of the rows it made into a copy of the schema; prints both.
 */
async function runOnce(run: number, url: string, store: EventStore, vault: Vault): Promise<RunFigures> {
  const db = await openReadDb({ client: 'mysql', url });
  try {
    await migrateReadDb(db);
    const rebuild = userDataRebuild({ vault, store, db, logger: pino({ level: 'warn' }) });
    // BENCH_PROFILE_DIR: a CPU profile of the rebuild alone (this process's main thread), `rebuild-<run>.cpuprofile`.
    const profiling = await profilePhase(process.env.BENCH_PROFILE_DIR, `rebuild-${run}.cpuprofile`);
    // The MariaDB server's CPU too, when it runs on this machine: it shares the cores with the rebuild.
    const server = localMariaDbServer(url);
    const serverBefore = server === undefined ? 0 : cpuMicros(server);
    let t = performance.now();
    const cpu = process.cpuUsage();
    const mainBefore = mainThreadCpuMicros(process.pid);
    const idleBefore = machineIdleSeconds();
    const result = await rebuild.run();
    const mainSeconds = (mainThreadCpuMicros(process.pid) - mainBefore) / 1e6;
    const idleSeconds = machineIdleSeconds() - idleBefore;
    const rebuildSeconds = (performance.now() - t) / 1000;
    const { user, system } = process.cpuUsage(cpu);
    const serverSeconds = server === undefined ? undefined : (cpuMicros(server) - serverBefore) / 1e6;
    await profiling.stop();
    const cpuSeconds = (user + system) / 1e6;
    console.log(
      `run ${run}: rebuild: ${result.events} events -> ${result.rows} rows in ${rebuildSeconds.toFixed(2)} s: ` +
        `${Math.round(result.events / rebuildSeconds)} events/s, ${Math.round(result.rows / rebuildSeconds)} rows/s ` +
        `(this process: ${cpuSeconds.toFixed(2)} s CPU, peak RSS ${Math.round(process.memoryUsage().rss / 2 ** 20)} MiB)`,
    );
    // Which thread holds the rebuild back: the main thread (taking the pages in, opening, folding, the writes' client)
    // against the others together (the log reader's, V8's and libuv's helpers); /proc counts in hundredths of a second.
    // The main thread's time off a core is waiting: for a page, for a write, or for a core the other threads hold.
    console.log(
      `  this process's CPU by thread: main ${mainSeconds.toFixed(2)} s (off a core ${Math.max(0, rebuildSeconds - mainSeconds).toFixed(2)} s of the wall time), ` +
        `the others (log reader, V8's and libuv's helpers) ${Math.max(0, cpuSeconds - mainSeconds).toFixed(2)} s`,
    );
    if (serverSeconds !== undefined) {
      console.log(
        `  MariaDB server: ${serverSeconds.toFixed(2)} s CPU; this process's and the server's CPU spread over all ${cores} cores ` +
          `would take at least ${leastSeconds(cpuSeconds + serverSeconds).toFixed(2)} s`,
      );
    }
    // How well the work overlapped: a core idle while the rebuild ran is time no thread had work for it.
    console.log(
      `  the machine's cores sat idle ${idleSeconds.toFixed(2)} core-seconds of the ${(cores * rebuildSeconds).toFixed(2)} ` +
        `the run had (${cores} cores for ${rebuildSeconds.toFixed(2)} s)`,
    );
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
      `  plain INSERT of the same ${rows.length} rows (${rowsPerInsert} per statement, one transaction): ${plainSeconds.toFixed(2)} s: ` +
        `${Math.round(rows.length / plainSeconds)} rows/s, ${Math.round(result.events / plainSeconds)} events/s equivalent; ` +
        `rebuild rate / plain INSERT rate = ${(plainSeconds / rebuildSeconds).toFixed(2)}`,
    );
    return { rebuildSeconds, plainSeconds };
  } finally {
    if (!process.env.READ_DB_URL) await db.raw('DROP DATABASE IF EXISTS ??', [new URL(url).pathname.slice(1)]);
    await db.destroy();
  }
}

async function main() {
  const dir = requiredEnv('BENCH_DATA_DIR');
  const store = sqliteEventStore({ file: join(dir, 'events.sqlite'), readAllInWorker: true });
  const keyStore = openSqliteKeyStore(join(dir, 'keys.sqlite'));
  let figures: RunFigures;
  try {
    figures = await runOnce(Number(requiredEnv('BENCH_RUN')), requiredEnv('BENCH_RUN_DB_URL'), store, await openVault({ keyStore }));
  } finally {
    await store.close();
    await keyStore.close();
  }
  console.log(JSON.stringify(figures));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
