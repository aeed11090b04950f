import { parseArgs } from 'node:util';
import { projectionName } from '../shared/read-model/user-row.js';
import { listParked, parkedCounts, type ParkedEvent } from '../shared/read-model/dead-letters.js';
import { ProjectionPausedError, RebuildRunningError } from '../projector/projection-control.js';
import { quarantine, type Release } from '../projector/quarantine.js';
import { migrateReadDb } from '../shared/read-model/migrations.js';
import { loadConfig } from '../shared/config.js';
import { openReadDb } from '../shared/read-db.js';
import { integerOption } from './options.js';

const usage = `Usage: npm run dead-letters -- <command> [options]

The projector parks an event it cannot apply (unknown type, invalid payload, a
handler error that repeats) in PROJECTION_DEAD_LETTER, and holds the later
events of the same user behind it; other users keep flowing. The read DB comes
from the usual environment (READ_DB_URL, or DATA_DIR for the embedded one); it
must exist (a missing one is reported, never created).

  list [--stream S] [--all] [--limit N] [--json]
                   parked events, failed and held (--all: skipped ones too)
  retry <stream-id> | retry --all
                   apply the stream's parked events again, in order (after a
                   fix is deployed); stops at the first that fails again
  skip <id>        leave the failed event <id> out of the read model for good
                   (kept as 'skipped') and release the events held behind it

Exit codes: 0 done (list: nothing is parked), 1 failed, 2 bad usage,
3 events are still parked (list: some are; retry: one failed again),
4 a rebuild is running (try again after it).`;

const exitCodes = { ok: 0, failed: 1, usage: 2, stillParked: 3, rebuildRunning: 4 } as const;

class UsageError extends Error {}

function parseCommand(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      stream: { type: 'string' },
      all: { type: 'boolean', default: false },
      limit: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: true,
  });
  const [command, argument, ...rest] = positionals;
  if (values.help) return { command: 'help' as const };
  if (rest.length > 0) throw new UsageError(`unexpected arguments: ${rest.join(' ')}`);
  const limit = integerOption('--limit', values.limit, { fallback: 100, max: 10_000 });
  switch (command) {
    case 'list':
      if (argument !== undefined) throw new UsageError('list takes no argument (use --stream)');
      return { command, stream: values.stream, all: values.all, limit, json: values.json };
    case 'retry':
      if ((argument === undefined) === !values.all) throw new UsageError('retry needs a stream id or --all, not both');
      return { command, stream: argument, json: values.json };
    case 'skip': {
      if (argument === undefined || !/^\d+$/.test(argument)) throw new UsageError('skip needs the ID of a failed event (see list)');
      return { command, id: Number(argument), json: values.json };
    }
    default:
      throw new UsageError(command === undefined ? 'a command is needed' : `unknown command ${JSON.stringify(command)}`);
  }
}

function printParked(rows: readonly ParkedEvent[]): void {
  for (const r of rows) {
    const where = r.POSITION ? ` at ${r.SOURCE ?? ''}@${r.POSITION}` : '';
    process.stdout.write(
      `#${r.ID} ${r.STATE.padEnd(7)} ${r.STREAM_ID}@${r.REVISION} ${r.EVENT_TYPE}${where} (attempts ${r.ATTEMPTS}, parked ${r.DATE_PARKED})\n` +
        `    ${r.ERROR}\n`,
    );
  }
}

const releaseLine = (r: Release): string =>
  `${r.streamId}: ${r.applied} applied, ${r.skipped} skipped, ${r.stillParked} still parked` + (r.error ? ` (failed again: ${r.error})` : '');

async function main(): Promise<number> {
  let command: ReturnType<typeof parseCommand>;
  try {
    command = parseCommand(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`dead-letters: ${error instanceof Error ? error.message : String(error)}\n\n${usage}\n`);
    return exitCodes.usage;
  }
  if (command.command === 'help') {
    process.stdout.write(`${usage}\n`);
    return exitCodes.ok;
  }
  const config = loadConfig();
  // An operator command reads what the service made: a missing read DB is a mistyped setting, not one to create.
  const db = await openReadDb(config.readDb, { create: false });
  try {
    await migrateReadDb(db);
    if (command.command === 'list') {
      const rows = await listParked(db, projectionName, {
        ...(command.stream === undefined ? {} : { stream: command.stream }),
        states: command.all ? ['failed', 'held', 'skipped'] : ['failed', 'held'],
        limit: command.limit,
      });
      const counts = await parkedCounts(db, projectionName);
      if (command.json) process.stdout.write(`${JSON.stringify({ counts, events: rows }, null, 2)}\n`);
      else {
        printParked(rows);
        process.stdout.write(`${counts.failed} failed, ${counts.held} held back behind them\n`);
      }
      return counts.failed + counts.held > 0 ? exitCodes.stillParked : exitCodes.ok;
    }
    const operations = quarantine({ db });
    const results =
      command.command === 'skip'
        ? [await operations.skip(command.id)]
        : command.stream === undefined
          ? await operations.retryAll()
          : [await operations.retry(command.stream)];
    if (command.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    else if (results.length === 0) process.stdout.write('nothing is parked\n');
    else for (const r of results) process.stdout.write(`${releaseLine(r)}\n`);
    return results.some((r) => r.stillParked > 0) ? exitCodes.stillParked : exitCodes.ok;
  } catch (error) {
    // A rebuild holding its pause is swapping its table in: a rebuild running, as far as the quarantine goes.
    if (error instanceof RebuildRunningError || error instanceof ProjectionPausedError) {
      process.stderr.write(`dead-letters: ${error.message}\n`);
      return exitCodes.rebuildRunning;
    }
    throw error;
  } finally {
    await db.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`dead-letters failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(exitCodes.failed);
  },
);
