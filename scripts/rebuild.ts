import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { RebuildLockedError } from '../projector/projection-control.js';
import { migrateReadDb } from '../shared/read-model/migrations.js';
import { KeysMissingError, RebuildAbortedError, userDataRebuild, type RebuildResult } from '../projector/rebuild.js';
import { loadConfig } from '../shared/config.js';
import { StoreMissingError, StoreUnavailableError } from '../shared/errors.js';
import { openEventStore } from '../shared/event-store/open-event-store.js';
import { openReadDb } from '../shared/read-db.js';
import { openConfiguredVault } from '../shared/personal-data/open-vault.js';
import { createMetricsRegistry, startOpsServer } from '../shared/metrics.js';
import { integerOption } from './options.js';
import { rebuildMetrics } from './rebuild/rebuild-metrics.js';
import { rebuildProgress, type ProgressView } from './rebuild/progress.js';

const usage = `Usage: npm run rebuild -- [--verify] [--dry-run] [--batch-size N] [--max-rows N] [--accept-missing-keys]

Rebuilds the read model (USER_DATA) from the event store into a shadow table,
then swaps it in atomically while reads and the live projector keep running.
The event store and read DB come from the usual environment (EVENTSTORE_URL or
DATA_DIR / EVENT_STORE_FILE; READ_DB_URL), personal data opened with the key
store (KEY_STORE_URL, or beside the read DB). All three must exist: a missing one
is reported, never created.

  --verify         compare the rebuilt table with the live one before the swap
                   and report missing, extra and different rows (exit 3 if any)
  --dry-run        build (and verify) the shadow table, then drop it: no swap
  --batch-size N   events per read of the log (default 1000)
  --max-rows N     rows held in memory before flushing to the shadow (default 200000)
  --accept-missing-keys
                   swap in the table even when the key store lacks the keys of
                   users nobody forgot (they are rebuilt as forgotten): only when
                   those keys are lost for good. Without it such a run stops
                   before the swap (exit 1), the live table untouched
  --help           this text

Exit codes: 0 done, 1 failed (e.g. store or DB unreachable), 2 bad usage,
3 --verify found differences (the rebuilt table was still swapped in unless
--dry-run), 4 another rebuild is running, 130 interrupted (live table untouched;
a signal once the swap has begun lets it finish: then 0, or 1 saying the rebuilt
table was swapped in).`;

const exitCodes = { ok: 0, failed: 1, usage: 2, differences: 3, locked: 4, interrupted: 130 } as const;

function parseOptions(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      verify: { type: 'boolean', default: false },
      'dry-run': { type: 'boolean', default: false },
      'batch-size': { type: 'string' },
      'max-rows': { type: 'string' },
      'accept-missing-keys': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  return {
    help: values.help,
    verify: values.verify,
    dryRun: values['dry-run'],
    acceptMissingKeys: values['accept-missing-keys'],
    batchSize: integerOption('--batch-size', values['batch-size'], { fallback: 1000 }),
    maxRowsInMemory: integerOption('--max-rows', values['max-rows'], { fallback: 200_000 }),
  };
}

/** One line, and not a page of SQL (knex puts the whole statement into its errors). */
function message(error: unknown): string {
  const text = (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').trim();
  return text.length <= 400 ? text : `${text.slice(0, 150)} … ${text.slice(-200)}`;
}

function report(result: RebuildResult, out: (line: string) => void) {
  const seconds = result.durationMs / 1000;
  const what = result.swapped ? 'rebuilt USER_DATA' : 'dry run: built and dropped the shadow table';
  out(
    `${what}: ${result.events} events, ${result.rows} rows in ${seconds.toFixed(1)} s ` +
      `(${Math.round(result.events / Math.max(seconds, 0.001))} events/s)` +
      (result.swapped
        ? `; live projector held ${Math.round(result.pausedMs)} ms; position ${result.position ?? 'none'}`
        : result.verification
          ? `; live projector held ${Math.round(result.pausedMs)} ms to compare`
          : ''),
  );
  if (result.usersWithoutKeys > 0) {
    out(
      result.swapped
        ? `${result.usersWithoutKeys} users nobody forgot were rebuilt as forgotten: the key store lacks their keys (--accept-missing-keys)`
        : `warning: ${result.usersWithoutKeys} users nobody forgot would be rebuilt as forgotten: the key store lacks their keys (a wrong KEY_STORE_URL or DATA_DIR, or an older backup?); a run without --dry-run would stop before the swap`,
    );
  }
  const v = result.verification;
  if (!v) return;
  const differs = v.missing + v.extra + v.different > 0;
  out(
    `verify: ${v.compared} rows compared: ${v.missing} missing, ${v.extra} extra, ${v.different} different` +
      (v.livePosition
        ? ` (live checkpoint ${v.livePosition}, rebuilt at ${v.shadowPosition ?? 'start'})`
        : // Fed by Kafka (or yet to project anything), the live projector has no log position to compare at.
          ` (at the log's head, ${v.shadowPosition ?? 'start'}: the live projector keeps no log position; fed by Kafka, a lag shows as differences)`),
  );
  if (v.shadowAhead) out('verify: the rebuilt table was ahead of the live projector; rows changed in between differ legitimately');
  for (const example of v.examples) out(`  ${example}`);
  if (differs && result.swapped) out('verify: the live table differed; the rebuilt table has replaced it');
}

async function main(): Promise<number> {
  let options: ReturnType<typeof parseOptions>;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`rebuild: ${message(error)}\n\n${usage}\n`);
    return exitCodes.usage;
  }
  if (options.help) {
    process.stdout.write(`${usage}\n`);
    return exitCodes.ok;
  }

  const config = loadConfig();
  let progress: ProgressView | undefined;
  const print = (line: string) => (progress ? progress.log(line) : void process.stderr.write(`${line}\n`));
  // The library's structured logs, as plain lines for the operator.
  const logger = pino(
    { name: 'rebuild', level: config.logLevel },
    {
      write(line: string) {
        const { level, msg, err } = JSON.parse(line) as { level: number; msg: string; err?: { message?: string } };
        print(`${level >= 40 ? 'warning: ' : ''}${msg}${err?.message ? `: ${err.message}` : ''}`);
      },
    },
  );

  // Knex would print a stack per failed connection attempt; the failure is reported once, below.
  const quiet = (text: unknown) => logger.debug(String(text));
  // Both stores must exist: a rebuild replays what the service wrote, and a missing store is a mistyped setting.
  const store = openEventStore(config, { longReads: true, create: false });
  const db = await openReadDb(config.readDb, { create: false, log: { warn: quiet, error: quiet, debug: quiet, deprecate: quiet } }).catch(
    async (error: unknown) => {
      await store.close().catch(() => {});
      // These say "cannot reach <url>" or what is missing already.
      if (error instanceof StoreUnavailableError || error instanceof StoreMissingError) throw error;
      const where = config.readDb.client === 'sqlite' ? config.readDb.file : 'MariaDB';
      throw new Error(`cannot open the read DB (${where}): ${message(error)}`, { cause: error });
    },
  );
  const abort = new AbortController();
  let keys: Awaited<ReturnType<typeof openConfiguredVault>> | undefined;
  let ops: Awaited<ReturnType<typeof startOpsServer>> | undefined;
  let firstSignalAt: number | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    // A terminal's Ctrl-C reaches this process directly and again through the npm and tsx
    // wrappers, within milliseconds: only a later signal means "exit now, skip the cleanup".
    if (firstSignalAt !== undefined) {
      if (Date.now() - firstSignalAt > 1000) process.exit(exitCodes.interrupted);
      return;
    }
    firstSignalAt = Date.now();
    print(`${signal}: stopping; unless the swap has begun, the live table stays as it is (again to exit at once)`);
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await migrateReadDb(db);
    // Fail fast, with the store's own words, before taking the lock.
    await store.readAll({ maxCount: 1 });
    // The keys must be the service's own: an empty key store would rebuild everyone as forgotten.
    keys = await openConfiguredVault(config, { create: false });
    const rebuild = userDataRebuild({ store, vault: keys.vault, db, logger, ...config.rebuild });
    progress = await rebuildProgress({
      stream: process.stderr,
      ...(store.headPosition ? { headPosition: () => store.headPosition!() } : {}),
    });
    // Progress for Prometheus while it runs, when asked for.
    const registry = config.rebuildMetricsPort === undefined ? undefined : createMetricsRegistry('rebuild');
    const metrics = registry && rebuildMetrics(registry);
    ops =
      registry &&
      (await startOpsServer({
        host: config.host,
        port: config.rebuildMetricsPort!,
        registry,
        ready: () => Promise.resolve({ ready: true, detail: { phase: metrics?.phase() ?? 'starting' } }),
        logger,
      }));
    const result = await rebuild.run({
      ...options,
      signal: abort.signal,
      onProgress: (p) => {
        progress?.update(p);
        metrics?.update(p);
      },
    });
    progress.stop();
    progress = undefined;
    report(result, (line) => process.stdout.write(`${line}\n`));
    const v = result.verification;
    return v && v.missing + v.extra + v.different > 0 ? exitCodes.differences : exitCodes.ok;
  } catch (error) {
    progress?.stop();
    progress = undefined;
    if (error instanceof RebuildAbortedError) {
      process.stderr.write(`rebuild: ${error.message}\n`);
      return exitCodes.interrupted;
    }
    if (error instanceof RebuildLockedError) {
      process.stderr.write(`rebuild: ${error.message}\n`);
      return exitCodes.locked;
    }
    if (error instanceof KeysMissingError) {
      const where = config.keyStore.client === 'sqlite' ? config.keyStore.file : 'MariaDB, KEY_STORE_URL';
      process.stderr.write(`rebuild failed: ${error.message} (the key store read: ${where})\n`);
      return exitCodes.failed;
    }
    throw error;
  } finally {
    await ops?.close();
    await store.close().catch(() => {});
    await keys?.keyStore.close().catch(() => {});
    await db.destroy().catch(() => {});
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`rebuild failed: ${message(error)}\n`);
    if (process.env.LOG_LEVEL === 'debug' && error instanceof Error) process.stderr.write(`${error.stack}\n`);
    process.exit(exitCodes.failed);
  },
);
