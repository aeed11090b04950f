import type Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { format } from 'mysql2';
import { announceChange } from './change-signal.js';
import type { ReadDbConfig } from './config.js';
import { StoreMissingError, StoreUnavailableError } from './errors.js';
import { readDbDialect } from './read-model/dialect.js';
import { registerNameFolding } from './read-model/name-search.js';
import { requireExistingFile } from './store-files.js';

/**
 * Statements prepared once per SQL text on this connection. knex prepares every
 * query anew (better-sqlite3's `prepare`), which was a fifth of the embedded
 * projector's time per batch; its queries repeat the same few texts. Safe to
 * share: knex runs each statement to completion (`all` or `run`) right after
 * preparing it, on the one connection, and sets no per-statement modes. Bounded:
 * texts that vary (lists of different lengths) are forgotten oldest first.
 */
function cachePreparedStatements(connection: Database.Database, limit = 256): void {
  const prepare = connection.prepare.bind(connection);
  const prepared = new Map<string, Database.Statement>();
  connection.prepare = ((sql: string) => {
    let statement = prepared.get(sql);
    if (statement) {
      // Most recently used last.
      prepared.delete(sql);
    } else {
      statement = prepare(sql);
      if (prepared.size >= limit) prepared.delete(prepared.keys().next().value!);
    }
    prepared.set(sql, statement);
    return statement;
  }) as Database.Database['prepare'];
}

/**
 * WAL pages between the embedded read DB's automatic checkpoints: SQLite's default
 * (about 4 MB), stated because the choice matters. A checkpoint syncs the WAL and then
 * the database file, and on one disk that flush holds back the event store's commits
 * beside it (synchronous=FULL): at 10,000 pages (about 40 MB, every 0.8 s under 3,500
 * registrations/s) every POST in flight stalled for 40 to 60 ms each time, and POST
 * /users' p99 was 47 to 55 ms against 21 to 29 ms at 1,000, with the projector's CPU per
 * registration the same within the noise (docs/hot-paths-log.md, "The read DB's
 * checkpoints and the write path's p99"). The rebuild and the operator tools write at
 * this: an embedded rebuild of 1,000,000 events runs about 2% slower at 250 pages
 * (docs/hot-paths-log.md, "The embedded rebuild at 250 pages"). The WAL file keeps its
 * largest size until `eraseFreedPages` truncates it (after a forget) or the database is
 * closed.
 */
export const readDbCheckpointPages = 1000;
/**
 * The live projector's checkpoints, smaller: each one's flush a quarter as long, so the
 * event store's commits that meet it wait less. POST /users, 15 runs of 10 s at 32
 * connections with each in turn: p99 median 26 ms against 29 (6 runs of 15 at or under
 * 25 ms against 3), registrations/s the same (median 2,978 against 2,954), the store's
 * commits' p99 bucket at or under 15 ms in 13 runs against 9; the projector's CPU per
 * registration 137 against 133 µs at saturation and about 10% more at 500 writes/s, the
 * lag there still a p99 of 15 to 21 ms (docs/hot-paths-log.md, "The read DB's
 * checkpoints, smaller for the live projector").
 */
export const liveProjectorCheckpointPages = 250;

/**
 * knex puts a failed statement into its error's message, by default with its values
 * filled in: a batch's names and emails would reach the logs and the traces, and a
 * person's erasure cannot reach those. With this it keeps the placeholders.
 */
const withoutValuesInErrors = { compileSqlOnError: false } as const;

/**
 * Opens the read database: MariaDB (`queries` by default) through mysql2, or the
 * embedded SQLite file. Creates the MariaDB database (or the file and its
 * directory) when it is missing, so a fresh server needs nothing but a user that
 * may create it; with `create: false` (operator commands, which only work on an
 * existing read model) a missing one is a StoreMissingError instead, and nothing
 * is created. `log` replaces knex's console output (e.g. a stack per failed
 * connection attempt). `batchStatements` (the projector's) lets a MariaDB
 * connection take several statements in one round trip (mysql2's
 * `multipleStatements`), which the projector's batches use
 * (`projector/mariadb-batch.ts`); every statement sent this way is built from
 * fixed texts and bound values, never from input, and the other roles' connections
 * keep it off. `checkpointPages` (the live projector's, `liveProjectorCheckpointPages`)
 * sets how many WAL pages an embedded read DB's connection writes between automatic
 * checkpoints; every other connection keeps `readDbCheckpointPages`. MariaDB ignores it.
 */
export async function openReadDb(
  config: ReadDbConfig,
  options: { log?: Knex.Logger; create?: boolean; batchStatements?: boolean; checkpointPages?: number } = {},
): Promise<Knex> {
  const log = options.log ? { log: options.log } : {};
  const create = options.create ?? true;
  const checkpointPages = options.checkpointPages ?? readDbCheckpointPages;
  if (config.client === 'sqlite') {
    if (create) mkdirSync(dirname(config.file), { recursive: true });
    else requireExistingFile(config.file, 'read DB', 'DATA_DIR or READ_DB_URL');
    return knexFactory({
      ...log,
      ...withoutValuesInErrors,
      client: 'better-sqlite3',
      connection: { filename: config.file },
      useNullAsDefault: true,
      pool: {
        min: 1,
        max: 1,
        afterCreate(connection: Database.Database, done: (error: Error | null) => void) {
          cachePreparedStatements(connection);
          // USER_DATA's index on the folded name needs the function on every connection that writes or searches it.
          registerNameFolding(connection);
          connection.pragma('journal_mode = WAL');
          connection.pragma('synchronous = NORMAL');
          connection.pragma('busy_timeout = 5000');
          connection.pragma(`wal_autocheckpoint = ${checkpointPages}`);
          // Erasure must reach the disk: deleted and overwritten content (a forgotten
          // user's name and email, in the row, its index entries and the quarantine)
          // is overwritten with zeros in its page, not merely marked free. See `eraseFreedPages`.
          connection.pragma('secure_delete = ON');
          // Statement journals (what a multi-row upsert or a savepoint inside the batch's transaction
          // rolls back with) and temporary tables in memory, not in files: the journal is never needed
          // after a crash (the WAL alone recovers), yet SQLite opened, wrote and closed a file for it in
          // every batch, about 9% of the projector's CPU under POST /users (docs/hot-paths-log.md,
          // "Statement journals in memory").
          connection.pragma('temp_store = MEMORY');
          done(null);
        },
      },
    });
  }
  const url = new URL(config.url);
  const database = decodeURIComponent(url.pathname.replace(/^\//, '')) || 'queries';
  const connection = {
    host: url.hostname,
    port: Number(url.port || 3306),
    user: decodeURIComponent(url.username || 'root'),
    password: decodeURIComponent(url.password),
    timezone: 'Z',
    dateStrings: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
    charset: 'utf8mb4',
    connectTimeout: 5000,
    queryFormat,
  };
  // A connection without a database: it creates the database, or (create: false) checks that it exists.
  const admin = knexFactory({ ...log, ...withoutValuesInErrors, client: 'mysql2', connection, pool: { min: 0, max: 1 } });
  try {
    // The tables do not take this collation: knex's CREATE TABLE names the connection's character set
    // (utf8mb4), whose default collation, utf8mb4_general_ci, is what the read model's columns have.
    if (create) await admin.raw('CREATE DATABASE IF NOT EXISTS ?? CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci', [database]);
    else await admin.raw('USE ??', [database]);
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ER_BAD_DB_ERROR') {
      throw new StoreMissingError(
        `the read DB ${JSON.stringify(database)} does not exist on ${url.protocol}//${url.host}; nothing was created (the database comes from READ_DB_URL)`,
      );
    }
    throw readDbError(error, config.url);
  } finally {
    await admin.destroy();
  }
  return knexFactory({
    ...log,
    ...withoutValuesInErrors,
    client: 'mysql2',
    connection: { ...connection, database, ...(options.batchStatements ? { multipleStatements: true } : {}) },
    pool: { min: 0, max: 10 },
    acquireConnectionTimeout: 10_000,
  });
}

/**
 * mysql2's own formatting of a query's values into its text, except that a query
 * without values is sent as it is: mysql2 would scan the whole text for
 * placeholders first (knex passes an empty list), and a rebuild's multi-row
 * INSERTs are a megabyte of text each. The same text either way: with no values
 * there is nothing to put in.
 */
function queryFormat(this: { config: { stringifyObjects?: boolean } }, sql: string, values: unknown, timezone?: string): string {
  if (values === undefined || values === null || (Array.isArray(values) && values.length === 0)) return sql;
  return format(sql, values as Parameters<typeof format>[1], this.config.stringifyObjects, timezone);
}

const unreachableCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'PROTOCOL_CONNECTION_LOST',
  'ER_CON_COUNT_ERROR',
]);

// Lock conflicts between concurrent writers: the transaction was rolled back and may simply run again.
const transientLockCodes = new Set(['ER_LOCK_DEADLOCK', 'ER_LOCK_WAIT_TIMEOUT']);

/** Connection failures and lock conflicts become the retriable StoreUnavailableError; the rest pass through. */
export function readDbError(error: unknown, where = 'read database'): unknown {
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && transientLockCodes.has(code)) {
    return new StoreUnavailableError(`${where}: transient lock conflict (${code}); try again`, { cause: error });
  }
  // KnexTimeoutError: knex's own query timeout; errno 1969: MariaDB's max_statement_time ended the query.
  const isTimeout = (error instanceof Error && error.name === 'KnexTimeoutError') || (error as { errno?: unknown }).errno === 1969;
  // SQLITE_BUSY_SNAPSHOT, SQLITE_BUSY_TIMEOUT...: another connection holds or just took the write lock.
  const busy = typeof code === 'string' && code.startsWith('SQLITE_BUSY');
  if ((typeof code === 'string' && unreachableCodes.has(code)) || busy || isTimeout) {
    const redacted = where.replace(/\/\/[^@/]*@/, '//***@');
    return new StoreUnavailableError(`cannot reach ${redacted}: ${typeof code === 'string' ? code : 'timeout'}`, { cause: error });
  }
  return error;
}

/** The SQLite read DB's connection as knex's pool hands it out (better-sqlite3). */
interface SqliteConnection {
  pragma(sql: string, options?: { simple?: boolean }): unknown;
}

/**
 * After a transaction on the read DB has committed: on the embedded (SQLite) read
 * DB, wakes the read API's consistency waits in other processes at once
 * (`../change-signal.ts`) instead of at their next poll. Nothing on MariaDB, where
 * the read API polls.
 */
export function announceReadDbChange(db: Knex): void {
  if (readDbDialect(db).kind === 'mariadb') return;
  const file = readDbConnectionOf(db).filename;
  if (file && file !== ':memory:') announceChange(file);
}

/** The connection settings `openReadDb` gave knex: SQLite's `filename`, or MariaDB's host, user and the rest. */
export const readDbConnectionOf = (db: Knex): Record<string, unknown> & { filename?: string } =>
  (db.client as { config: { connection: Record<string, unknown> & { filename?: string } } }).config.connection;

/** SQLite read DBs whose WAL still holds page images from before an erasure (the last truncation was blocked by readers). */
const walToTruncate = new WeakSet<Knex>();

/** Whether an earlier `eraseFreedPages` on this read DB could not truncate its WAL (readers were in it): try again. */
export const walTruncationPending = (db: Knex): boolean => walToTruncate.has(db);


/**
 * After an erasure (a batch that applied a UserForgotten) has committed: makes
 * the erased personal data leave the SQLite read DB's files. `secure_delete`
 * (set on every connection, see `openReadDb`) zeroes what a transaction deletes
 * or overwrites in its pages, but in WAL mode the pages as they were before
 * (with the name and email) stay in the `-wal` file until a checkpoint copies
 * the new ones into the database and the log is reset. This runs
 * `PRAGMA wal_checkpoint(TRUNCATE)`, which does both and truncates the `-wal`
 * file to zero bytes.
 *
 * Best effort: it waits at most `patienceMs` for readers still reading from the
 * WAL (the read API's connection), and never throws. When it could not finish,
 * the DB is remembered (`walTruncationPending`) and the projector tries again
 * after its next batch. Logs nothing. Returns whether the WAL was truncated
 * (always true for MariaDB, where there is nothing to do here: InnoDB's own logs
 * and undo are purged by the server).
 */
export async function eraseFreedPages(db: Knex, options: { patienceMs?: number; remember?: boolean } = {}): Promise<boolean> {
  if (readDbDialect(db).kind === 'mariadb') return true;
  // `remember: false`: a try that need not be repeated after every batch (the projector's one at its start).
  if (options.remember !== false) walToTruncate.add(db);
  const client = db.client as { acquireConnection(): Promise<unknown>; releaseConnection(connection: unknown): Promise<unknown> };
  let connection: SqliteConnection;
  try {
    connection = (await client.acquireConnection()) as SqliteConnection;
  } catch {
    return false;
  }
  try {
    // One connection, used synchronously: nothing else runs on it between these pragmas.
    const previous = Number(connection.pragma('busy_timeout', { simple: true }));
    connection.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.patienceMs ?? 1000))}`);
    try {
      const [result] = connection.pragma('wal_checkpoint(TRUNCATE)') as { busy: number; log: number; checkpointed: number }[];
      if (result?.busy !== 0) return false;
      walToTruncate.delete(db);
      return true;
    } finally {
      connection.pragma(`busy_timeout = ${Number.isFinite(previous) ? previous : 5000}`);
    }
  } catch {
    return false;
  } finally {
    await client.releaseConnection(connection);
  }
}

const canonicalUtc = /^\d{4}-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-5]\d\.\d{3}Z$/;
/** Dates travel as UTC 'YYYY-MM-DD HH:MM:SS.mmm', which both dialects store and return as is. */
export const toDbDate = (iso: string): string =>
  // Events carry this canonical form (checked as date-time first); re-parsing it is the slow part of a rebuild.
  canonicalUtc.test(iso) ? `${iso.slice(0, 10)} ${iso.slice(11, 23)}` : new Date(iso).toISOString().replace('T', ' ').replace('Z', '');
/** The current time as the read DB stores dates. */
export const dbNow = (): string => toDbDate(new Date().toISOString());
/**
 * A stored date as the API shows it (`toISOString()`'s form). MariaDB's binary protocol
 * (prepared statements) leaves the fraction out of a whole second; it is put back.
 */
export const fromDbDate = (value: string): string => `${value.replace(' ', 'T')}${value.length === 19 ? '.000' : ''}Z`;
