import { setTimeout as sleep } from 'node:timers/promises';
import { Readable } from 'node:stream';
import type { Knex } from 'knex';
import { escape, escapeId } from 'mysql2';
import { globalLogSource } from '../shared/event-feed/event-store-feed.js';
import { dbNow, readDbError } from '../shared/read-db.js';
import { isRetriable } from '../shared/retry.js';
import { readDbDialect } from '../shared/read-model/dialect.js';
import { projectionName, userRowRead, type UserRow } from '../shared/read-model/user-row.js';
import type { ProjectionControl } from './projection-control.js';
import { eraseParkedStreams, parkEvents, type EventToPark } from '../shared/read-model/dead-letters.js';

export const shadowName = 'USER_DATA_REBUILD';
const liveName = projectionName;
const oldName = 'USER_DATA_OLD';
/** The tables a rebuild that died (or whose last step failed) may leave behind: copies of user rows. */
export const rebuildLeftovers = [shadowName, oldName] as const;
const checkpointTable = 'PROJECTION_CHECKPOINT';

/** Rows per SQLite INSERT: knex writes a multi-row insert as a compound SELECT, which SQLite caps at 500 terms. */
const rowsPerStatement = 500;
/** Text per MariaDB statement (an INSERT, or a LOAD DATA's rows): few round trips, yet far below max_allowed_packet (16 MiB by default, 4 MiB on old servers). */
const bytesPerStatement = 1 << 20;
/** Rows from which a MariaDB write is split over two connections. */
const parallelFrom = 10_000;
/** IDs per read-back query. */
const idsPerQuery = 1000;
/** MariaDB's ER_LOCK_WAIT_TIMEOUT, and how long and how often the swap waits for running queries. */
const lockWaitTimeout = 1205;
const renameWaitSeconds = 2;
const renameAttempts = 5;

const columns = [
  'ID_USER_DATA',
  'NAME',
  'EMAIL',
  'STATUS',
  'DATE_REGISTER',
  'DATE_VALIDATED',
  'DATE_DEACTIVATED',
  'DATE_UPDATED',
  'VERSION',
] as const satisfies ReadonlyArray<keyof UserRow>;
// Fails to compile when UserRow gains a column this list lacks.
const _everyColumn: [Exclude<keyof UserRow, (typeof columns)[number]>] extends [never] ? true : never = true;
const insertHead = `INSERT INTO ${escapeId(shadowName)} (${columns.map((c) => escapeId(c)).join(', ')}) VALUES `;
const upsertTail = ` ON DUPLICATE KEY UPDATE ${columns
  .filter((c) => c !== 'ID_USER_DATA')
  .map((c) => `${escapeId(c)} = VALUES(${escapeId(c)})`)
  .join(', ')}`;

// Values made only of these characters need no escaping: ids, dates, statuses (most of a row).
const plain = /^[0-9A-Za-z :.-]*$/;
const literal = (value: string | number | null): string =>
  typeof value === 'string' && plain.test(value) ? `'${value}'` : escape(value);

/** One row as a SQL tuple. NAME and EMAIL, the free text, always go through the driver's escape. */
const tupleOf = (r: UserRow): string =>
  `(${literal(r.ID_USER_DATA)},${escape(r.NAME)},${escape(r.EMAIL)},${literal(r.STATUS)},${literal(r.DATE_REGISTER)},` +
  `${literal(r.DATE_VALIDATED)},${literal(r.DATE_DEACTIVATED)},${literal(r.DATE_UPDATED)},${Number(r.VERSION)})`;

/** One row as a line of LOAD DATA's default text format: tab-separated, backslash escapes, `\\N` for NULL. */
const tsvSpecial = /[\\\t\n\r\0]/;
const tsvSpecials = new RegExp(tsvSpecial.source, 'g');
const tsvEscapes: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\\0' };
const tsvField = (value: string | null): string =>
  value === null ? '\\N' : tsvSpecial.test(value) ? value.replace(tsvSpecials, (c) => tsvEscapes[c]!) : value;
const lineOf = (r: UserRow): string =>
  `${tsvField(r.ID_USER_DATA)}\t${tsvField(r.NAME)}\t${tsvField(r.EMAIL)}\t${tsvField(r.STATUS)}\t${tsvField(r.DATE_REGISTER)}\t` +
  `${tsvField(r.DATE_VALIDATED)}\t${tsvField(r.DATE_DEACTIVATED)}\t${tsvField(r.DATE_UPDATED)}\t${Number(r.VERSION)}\n`;
const loadSql =
  `LOAD DATA LOCAL INFILE 'rows' INTO TABLE ${escapeId(shadowName)} CHARACTER SET utf8mb4 ` +
  `FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' (${columns.map((c) => escapeId(c)).join(', ')})`;

/**
 * The server refuses LOAD DATA LOCAL: `local_infile` is off (MariaDB's 1148, MySQL's
 * 3948), or the client did not offer it (4166).
 */
const loadRefused = (error: unknown): boolean => [1148, 3948, 4166].includes(Number((error as { errno?: unknown }).errno));

/** Read DBs whose server refused LOAD DATA LOCAL once: their new rows go by INSERT from then on. */
const loadRefusedBy = new WeakSet<Knex>();

/** What the server answered a LOAD DATA with: how many rows it took and how many warnings it raised. */
interface LoadOutcome {
  affectedRows?: number;
  warningStatus?: number;
}

/**
 * New rows by LOAD DATA LOCAL, about 1 MiB of text each: the server parses tab-separated
 * text instead of SQL, about a fifth less of its CPU per row than the multi-row INSERT
 * (measured: 1.74 against 2.19 s for 200,000 rows of USER_DATA with its indexes). The
 * text is handed over from memory (`infileStreamFactory`), never from a file; mysql2
 * sends no file the server asks for without one. With LOCAL the server turns what
 * would be errors (a duplicate key, a value too long) into warnings and goes on, so
 * every load must take all its rows without a warning, or the write fails as the
 * INSERT would have. Resolves false, having written nothing, when the server refuses.
 */
async function loadMariaDb(trx: Knex.Transaction, rows: readonly UserRow[]): Promise<boolean> {
  let accepted = 0;
  try {
    await inPieces(rows, lineOf, async (lines) => {
      const text = Buffer.from(lines.join(''), 'utf8');
      const result: unknown = await trx.raw(loadSql).options({ infileStreamFactory: () => Readable.from([text]) });
      const outcome = ((result as unknown[])[0] ?? {}) as LoadOutcome;
      if (outcome.affectedRows !== lines.length || outcome.warningStatus) {
        throw new Error(
          `rebuild: the read DB took ${String(outcome.affectedRows)} of ${lines.length} rows with ${String(outcome.warningStatus)} warnings ` +
            '(a duplicate ID, or a value its column cannot hold)',
        );
      }
      accepted += 1;
    });
    return true;
  } catch (error) {
    // Refused from the first statement on: nothing was written.
    if (loadRefused(error) && accepted === 0) return false;
    throw error;
  }
}

/** New rows by LOAD DATA where the server allows it (it is asked once per read DB), else as the other rows go. */
async function writeMariaDb(db: Knex, trx: Knex.Transaction, rows: readonly UserRow[], newRows: boolean): Promise<void> {
  if (newRows && !loadRefusedBy.has(db)) {
    if (await loadMariaDb(trx, rows)) return;
    loadRefusedBy.add(db);
  }
  await insertMariaDb(trx, rows, newRows);
}

/**
 * Rows sent in statements of about 1 MiB of text (`encode` gives a row's text), the
 * next statement built while the database runs the previous one.
 */
async function inPieces(rows: readonly UserRow[], encode: (row: UserRow) => string, send: (pieces: string[]) => Promise<void>): Promise<void> {
  let inFlight: Promise<void> | undefined;
  for (let i = 0; i < rows.length; ) {
    const pieces: string[] = [];
    let bytes = 0;
    while (i < rows.length && bytes < bytesPerStatement) {
      const piece = encode(rows[i++]!);
      pieces.push(piece);
      bytes += piece.length;
    }
    const statement = send(pieces);
    // Handled below when awaited; this keeps a failure from being reported as unhandled meanwhile.
    statement.catch(() => {});
    await inFlight;
    inFlight = statement;
  }
  await inFlight;
}

/**
 * Multi-row INSERTs as plain SQL text (values escaped by the driver's own escape,
 * cheaper than the query builder): for rows that may be in the shadow already (an
 * upsert), and new rows where the server refuses LOAD DATA.
 */
async function insertMariaDb(trx: Knex.Transaction, rows: readonly UserRow[], newRows: boolean): Promise<void> {
  await inPieces(rows, tupleOf, async (values) => {
    await trx.raw(`${insertHead}${values.join(',')}${newRows ? '' : upsertTail}`);
  });
}

/** Tries of the bookkeeping that follows the swap on MariaDB (the table is already live) while the read DB is out. */
const finishAttempts = 5;

/**
 * The rebuilt table was swapped in, but what follows failed: on MariaDB, what the
 * rename leaves to a transaction of its own (recording what the rebuild parked, the
 * checkpoint, clearing the pause), on either read DB the erasing of the old table's
 * freed pages. The live table IS the rebuilt one. The pause is lifted at once (by
 * the run's clean-up when the swap did not get to it; with the read DB out of reach,
 * it expires after its time), and the live projector resumes from its own checkpoint
 * and parks for itself what it meets; running the rebuild again finishes the rest.
 */
export class SwapUnfinishedError extends Error {
  override readonly name = 'SwapUnfinishedError';
  constructor(cause: unknown) {
    super(
      `the rebuilt table was swapped in (it is the live USER_DATA now), but what follows the swap failed: ${cause instanceof Error ? cause.message : String(cause)}; run the rebuild again to finish`,
      { cause },
    );
  }
}

/**
 * Whether the live projection is fed by Kafka: it has a `topic:partition` checkpoint.
 * Such a projector never reads, moves or deletes a `$all` row.
 */
const fedByKafka = (sources: Iterable<string>): boolean => {
  for (const source of sources) if (source !== globalLogSource) return true;
  return false;
};

/**
 * The live projection's position in the log, from its checkpoints: its `$all` row,
 * unless it is fed by Kafka. Then a `$all` row is left from before its first offsets
 * (a rebuild into a read DB the projector had not written to yet, or a deployment that
 * read the log before) and says nothing of where it is: the live projection has no
 * log position, and a comparison with it is made at the log's head.
 */
export function liveLogPosition(checkpoints: ReadonlyMap<string, string>): string | undefined {
  return fedByKafka(checkpoints.keys()) ? undefined : checkpoints.get(globalLogSource);
}

/**
 * The rebuild's shadow table, USER_DATA_REBUILD, and the swap that makes it
 * USER_DATA. The shadow is a clone of the live table's current definition
 * (whatever migrations made of it), so the two cannot drift apart. With `lock`
 * (the run's control), every write commits only while the run's lock is held:
 * a run that lost its lock cannot write into the shadow of the run that took over.
 */
export function shadowUserData(db: Knex, lock?: Pick<ProjectionControl, 'assertHeld'>) {
  const mariadb = readDbDialect(db).kind === 'mariadb';

  async function exists(name: string): Promise<boolean> {
    return db.schema.hasTable(name);
  }

  /** SQLite keeps index names database-wide, so the live table's indexes are recreated on the shadow at the swap. */
  async function sqliteIndexes(): Promise<string[]> {
    const rows = await db.raw<{ sql: string }[]>(
      "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name",
      [liveName],
    );
    return rows.map((r) => r.sql);
  }

  async function setCheckpoint(trx: Knex, projection: string, position: string): Promise<void> {
    await trx(checkpointTable)
      .insert({ PROJECTION: projection, SOURCE: globalLogSource, POSITION: position, DATE_UPDATED: dbNow() })
      .onConflict(['PROJECTION', 'SOURCE'])
      .merge();
  }

  return {
    name: shadowName,

    /** Drops what an interrupted run left: its shadow, its checkpoint, and an old table a swap did not get to drop. */
    async dropLeftovers(): Promise<string[]> {
      const dropped: string[] = [];
      if (await exists(shadowName)) dropped.push(shadowName);
      // The old table only ever exists next to a live one; never drop the last copy of the data.
      if ((await exists(oldName)) && (await exists(liveName))) dropped.push(oldName);
      for (const name of dropped) await db.schema.dropTable(name);
      await db(checkpointTable).where({ PROJECTION: shadowName }).del();
      return dropped;
    },

    async create(): Promise<void> {
      if (mariadb) {
        await db.raw('CREATE TABLE ?? LIKE ??', [shadowName, liveName]);
        return;
      }
      const [table] = await db.raw<{ sql: string }[]>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [
        liveName,
      ]);
      if (!table) throw new Error(`the read DB has no ${liveName} table; run the migrations first`);
      const definition = table.sql.replace(/^CREATE TABLE\s+(["`[]?)USER_DATA(["`\]]?)/i, `CREATE TABLE \`${shadowName}\``);
      if (definition === table.sql) throw new Error(`unexpected ${liveName} definition: ${table.sql}`);
      await db.raw(definition);
    },

    async drop(): Promise<void> {
      await db.schema.dropTableIfExists(shadowName);
      await db(checkpointTable).where({ PROJECTION: shadowName }).del();
    },

    /**
     * Writes rows (sorted by ID, so InnoDB appends to its clustered index) in one
     * transaction with the rebuild's own checkpoint. Rows none of which is in the
     * shadow yet (`newRows`) take a plain INSERT; others upsert.
     */
    async write(rows: readonly UserRow[], position: string | undefined, options: { newRows: boolean }): Promise<void> {
      if (mariadb && rows.length >= 2 * parallelFrom) {
        // A big write (the last one before the handover, when nothing else is left to
        // overlap it with) goes over two connections, each its own range of IDs, so the
        // server can use two cores. The checkpoint follows once both committed; a run that
        // fails in between drops the shadow anyway.
        const half = Math.ceil(rows.length / 2);
        await Promise.all(
          [rows.slice(0, half), rows.slice(half)].map((part) =>
            db.transaction(async (trx) => {
              await writeMariaDb(db, trx, part, options.newRows);
              await lock?.assertHeld(trx);
            }),
          ),
        );
        if (position !== undefined) {
          await db.transaction(async (trx) => {
            await setCheckpoint(trx, shadowName, position);
            await lock?.assertHeld(trx);
          });
        }
        return;
      }
      await db.transaction(async (trx) => {
        if (mariadb) await writeMariaDb(db, trx, rows, options.newRows);
        else {
          for (let i = 0; i < rows.length; i += rowsPerStatement) {
            const chunk = rows.slice(i, i + rowsPerStatement);
            if (options.newRows) await trx(shadowName).insert(chunk);
            else await trx(shadowName).insert(chunk).onConflict('ID_USER_DATA').merge();
          }
        }
        if (position !== undefined) await setCheckpoint(trx, shadowName, position);
        // Last, after the writes: see `assertHeld`.
        await lock?.assertHeld(trx);
      });
    },

    /** The shadow's rows for these users: a row flushed earlier that a later event changes. */
    async read(ids: readonly string[]): Promise<UserRow[]> {
      const rows: UserRow[] = [];
      for (let i = 0; i < ids.length; i += idsPerQuery) {
        const found = await db<UserRow>(shadowName).whereIn('ID_USER_DATA', ids.slice(i, i + idsPerQuery));
        for (const row of found) rows.push(userRowRead(row));
      }
      return rows;
    },

    async count(name: string = shadowName): Promise<number> {
      const [row] = await db(name).count<{ n: number | string }[]>({ n: '*' });
      return Number(row?.n ?? 0);
    },

    /**
     * Swaps the shadow in while the live projector is paused. Checks first that the
     * pause is still ours (else returns false: the live projector may have moved
     * on, and the caller must pause and catch up again). Sets the live checkpoint
     * to the shadow's position when the live projector reads the global log (or
     * has no checkpoint yet: a projector that reads the log then starts there, not
     * at the log's start). Kafka `topic:partition` checkpoints are left alone, the
     * rows' VERSION makes whatever Kafka redelivers harmless; a `$all` row beside
     * them is one no projector reads (see `liveLogPosition`) and goes. Events the
     * fold parked are recorded in the quarantine in the same step.
     */
    async swap(
      control: ProjectionControl,
      position: string | undefined,
      pauseMs: number,
      parked: readonly EventToPark[] = [],
      /** Streams of users the fold found forgotten: their quarantined events are erased and released. */
      forgotten: readonly string[] = [],
    ): Promise<boolean> {
      const finish = async (trx: Knex) => {
        // What the fold parked: the live projector, resuming past it, would not see it again.
        await parkEvents(trx, liveName, parked);
        if (forgotten.length > 0) await eraseParkedStreams(trx, liveName, forgotten);
        const sources = await trx(checkpointTable).where({ PROJECTION: liveName }).pluck<string[]>('SOURCE');
        if (fedByKafka(sources)) await trx(checkpointTable).where({ PROJECTION: liveName, SOURCE: globalLogSource }).del();
        else if (position !== undefined) await setCheckpoint(trx, liveName, position);
        await trx(checkpointTable).where({ PROJECTION: shadowName }).del();
        await control.clearPause(trx);
      };
      if (mariadb) {
        // One statement, atomic: readers see the old table or the new one, never neither. It waits
        // for running queries, and queries arriving meanwhile queue behind it, so each wait is kept
        // short and tried again a few times, every time well inside a freshly extended pause.
        for (let attempt = 1; ; attempt++) {
          if (!(await control.extendPause(pauseMs))) return false;
          try {
            await db.raw('SET STATEMENT lock_wait_timeout = ? FOR RENAME TABLE ?? TO ??, ?? TO ??', [
              renameWaitSeconds,
              liveName,
              oldName,
              shadowName,
              liveName,
            ]);
            break;
          } catch (error) {
            if ((error as { errno?: unknown }).errno !== lockWaitTimeout || attempt >= renameAttempts) throw error;
          }
        }
        // The rebuilt table is live from here on: a failure now must not read as "nothing changed".
        for (let attempt = 1; ; attempt++) {
          try {
            await db.transaction(finish);
            break;
          } catch (error) {
            if (isRetriable(readDbError(error)) && attempt < finishAttempts) {
              await sleep(200 * attempt);
              continue;
            }
            throw new SwapUnfinishedError(error);
          }
        }
        // A leftover is dropped by the next run.
        await db.schema.dropTable(oldName).catch(() => {});
        return true;
      }
      const indexes = await sqliteIndexes();
      return db.transaction(async (trx) => {
        // Inside the swap's transaction, so the check and the swap are one atomic step.
        if (!(await control.extendPause(pauseMs, trx))) return false;
        await trx.schema.dropTable(liveName);
        await trx.raw('ALTER TABLE ?? RENAME TO ??', [shadowName, liveName]);
        for (const sql of indexes) await trx.raw(sql);
        await finish(trx);
        return true;
      });
    },
  };
}

export type ShadowUserData = ReturnType<typeof shadowUserData>;
