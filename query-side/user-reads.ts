import Database from 'better-sqlite3';
import DataLoader from 'dataloader';
import type { Knex } from 'knex';
import { createPool, type Pool, type RowDataPacket } from 'mysql2/promise';
import { changeWaiter, sharedTicker } from '../shared/change-signal.js';
import { readDbConnectionOf, readDbError } from '../shared/read-db.js';
import { readDbDialect } from '../shared/read-model/dialect.js';
import type { UserRow } from '../shared/read-model/user-row.js';
import { perCount } from '../shared/per-count.js';

/** What a list may be narrowed by; values are bound, never part of the SQL text. */
export interface UserRowFilter {
  email?: string;
  /** A prefix of the name. */
  name?: string;
  /** Never 'forgotten': lists leave forgotten rows out whatever the filter. */
  status?: Exclude<UserRow['STATUS'], 'forgotten'>;
  /** Only ids after this one (keyset pagination). */
  afterId?: string;
  /** At most this many rows (an integer the route's schema bounds). */
  limit: number;
}

/** The read API's queries, as prepared statements on a connection of their own. */
export interface UserReads {
  byId(id: string): Promise<UserRow | undefined>;
  /** Rows in id order, never a forgotten one (a 'forgotten' tombstone is only found by id). */
  list(filter: UserRowFilter): Promise<UserRow[]>;
  /** The stream revision the row reflects, -1 when there is no row. */
  versionOf(id: string): Promise<number>;
  /**
   * Resolves after `ms`, or sooner when the read DB may have changed: on the
   * embedded read DB the projector's change signal wakes it as soon as a batch
   * has committed; on MariaDB, where no signal reaches this process, every wait
   * wakes at the next shared tick (`mariadbWaitTickMs`), so the waits' lookups
   * of one tick go to the server as one query.
   */
  waitForChange(ms: number): Promise<void>;
  close(): Promise<void>;
}

const columns = 'ID_USER_DATA, NAME, EMAIL, STATUS, DATE_REGISTER, DATE_VALIDATED, DATE_DEACTIVATED, DATE_UPDATED, VERSION';

const byIdsSql = perCount((count) => `SELECT ${columns} FROM USER_DATA WHERE ID_USER_DATA IN (${Array.from({ length: count }, () => '?').join(', ')})`);

/** Lists never show a forgotten person's tombstone (its NAME and EMAIL are empty, so no name or email filter matches it either). */
const visible = (prefix = '') => `${prefix}STATUS <> 'forgotten'`;

/** The most rows a list asks for: the route's largest page and one more, to tell whether another follows. */
const maxListRows = 101;

/** `columns` as the list by email selects them, from its joined `U`: made once, not per batch. */
const joinedColumns = columns.split(', ').map((c) => `U.${c}`).join(', ');

/**
 * The rows of each of `count` addresses, in no particular order (`listsByEmail`
 * puts each address's rows in id order). Each requested address is a row of its
 * own (`K`) joined on `EMAIL = K`, so an address matches exactly what `EMAIL = ?`
 * matches in the table's collation, and every row says which address it was found
 * for. Not capped per address in SQL: an address belongs to one user at a time
 * (the write side's reservations), so it matches one row or, for a moment after
 * it changed hands, two; the caller keeps at most a page of them. A
 * `ROW_NUMBER()` cap cost MariaDB about a fifth more CPU per list, for rows that
 * never come, and sorting the rows by address and id in SQL about as much again
 * (a sort per query for the one or two rows an address has).
 */
const byEmailsSql = perCount(
  (count) =>
    `SELECT R.K AS K, ${joinedColumns} ` +
    `FROM (${Array.from({ length: count }, () => 'SELECT ? AS K').join(' UNION ALL ')}) AS R ` +
    `JOIN USER_DATA AS U ON U.EMAIL = R.K AND ${visible('U.')}`,
);

const byId = (a: UserRow, b: UserRow) => (a.ID_USER_DATA < b.ID_USER_DATA ? -1 : a.ID_USER_DATA > b.ID_USER_DATA ? 1 : 0);

/**
 * Lists by email alone (the commonest list) that arrive in one turn, as one query;
 * see `lookupsById`. Each address's rows in id order. A row keeps the `K` it was
 * found for rather than being copied without it: views pick their fields, so it
 * goes no further.
 */
function listsByEmail(query: (emails: readonly string[]) => Promise<(UserRow & { K: string })[]>) {
  return new DataLoader<string, UserRow[]>(
    async (emails) => {
      const distinct = [...new Set(emails)];
      const byKey = new Map<string, UserRow[]>(distinct.map((email) => [email, []]));
      for (const row of await query(distinct)) byKey.get(row.K)?.push(row);
      for (const rows of byKey.values()) if (rows.length > 1) rows.sort(byId);
      return emails.map((email) => byKey.get(email) ?? []);
    },
    { cache: false, maxBatchSize: 100, batchScheduleFn: (go) => setImmediate(go) },
  );
}

const byEmailOnly = (filter: UserRowFilter): filter is UserRowFilter & { email: string } =>
  filter.email !== undefined && filter.name === undefined && filter.status === undefined && filter.afterId === undefined && filter.limit <= maxListRows;

/**
 * The lookups by id that arrive in one turn of the event loop, as one query
 * (`ID_USER_DATA IN (...)`, a statement per batch size, prepared once): under load
 * one statement serves many requests, which costs the embedded DB and MariaDB far
 * less than a statement each. Nothing is cached between turns (dataloader's cache
 * is off), so every read sees the table as it is when its batch runs.
 */
function lookupsById(query: (ids: readonly string[]) => Promise<UserRow[]>) {
  return new DataLoader<string, UserRow | undefined>(
    async (ids) => {
      const byKey = new Map((await query(ids)).map((row) => [row.ID_USER_DATA, row]));
      return ids.map((id) => byKey.get(id));
    },
    { cache: false, maxBatchSize: 100, batchScheduleFn: (go) => setImmediate(go) },
  );
}

const nonAscii = /[^\p{ASCII}]/u;
/** A name as the embedded read DB compares a prefix with letters beyond ASCII: lower-cased, as `foldFunction` does to NAME. */
const foldName = (name: string) => name.toLowerCase();
/**
 * The function the embedded read DB's connection folds NAME with (`sqliteUserReads`). Called once per row
 * scanned, so only for a prefix that needs it: an ASCII prefix is compared by LIKE itself, which ignores
 * the case of ASCII letters, and no row can match an ASCII prefix through a letter beyond ASCII.
 */
const foldFunction = 'users_fold_name';

/**
 * The list query for one combination of filters. Its text depends only on which
 * filters are present and on the limit (a bounded integer), so a few dozen texts
 * cover every request and each is prepared once. '!' as the LIKE escape
 * character needs no escaping itself in either dialect.
 */
function listQuery(filter: UserRowFilter, foldsNames: boolean): { sql: string; params: string[] } {
  const where: string[] = [visible()];
  const params: string[] = [];
  const narrow = (condition: string, value: string) => {
    where.push(condition);
    params.push(value);
  };
  if (filter.email !== undefined) narrow('EMAIL = ?', filter.email);
  if (filter.name !== undefined) {
    // SQLite's LIKE ignores the case of ASCII letters only: a prefix with other letters is compared folded (see `foldName`).
    const folded = foldsNames && nonAscii.test(filter.name);
    const prefix = `${(folded ? foldName(filter.name) : filter.name).replace(/[!%_]/g, (c) => `!${c}`)}%`;
    narrow(folded ? `${foldFunction}(NAME) LIKE ? ESCAPE '!'` : "NAME LIKE ? ESCAPE '!'", prefix);
  }
  if (filter.status !== undefined) narrow('STATUS = ?', filter.status);
  if (filter.afterId !== undefined) narrow('ID_USER_DATA > ?', filter.afterId);
  if (!Number.isSafeInteger(filter.limit) || filter.limit < 1) throw new RangeError(`limit must be a positive integer, not ${filter.limit}`);
  const sql = `SELECT ${columns} FROM USER_DATA WHERE ${where.join(' AND ')} ORDER BY ID_USER_DATA LIMIT ${filter.limit}`;
  return { sql, params };
}

/**
 * Opens the prepared reads on the database `db` (the knex instance of the read
 * DB) points at: a connection of their own, so the request path runs no query
 * builder. knex keeps migrations and the rare queries.
 */
export function openUserReads(db: Knex, options: { timeoutMs: number }): UserReads {
  const connection = readDbConnectionOf(db);
  return readDbDialect(db).kind === 'mariadb' ? mariadbUserReads(connection, options) : sqliteUserReads(connection.filename!);
}

/**
 * The read API's reads over one way of running a query: lookups by id and lists by
 * email alone batched per turn of the event loop, any other list one query each.
 */
function userReadsOver(
  rows: <T>(sql: string, params: readonly string[]) => Promise<T[]>,
  waitForChange: (ms: number) => Promise<void>,
  close: () => Promise<void>,
  options: { foldsNames: boolean },
): UserReads {
  const byIds = lookupsById((ids) => rows<UserRow>(byIdsSql(ids.length), ids));
  const byEmails = listsByEmail((emails) => rows<UserRow & { K: string }>(byEmailsSql(emails.length), emails));
  return {
    byId: (id) => byIds.load(id),
    versionOf: async (id) => Number((await byIds.load(id))?.VERSION ?? -1),
    list: async (filter) => {
      if (byEmailOnly(filter)) return (await byEmails.load(filter.email)).slice(0, filter.limit);
      const { sql, params } = listQuery(filter, options.foldsNames);
      return rows<UserRow>(sql, params);
    },
    waitForChange,
    close,
  };
}

/** A USER_DATA row from a raw row of `columns`: every row one object shape, built from one literal. */
const userRowOf = (r: unknown[]) =>
  ({
    ID_USER_DATA: r[0],
    NAME: r[1],
    EMAIL: r[2],
    STATUS: r[3],
    DATE_REGISTER: r[4],
    DATE_VALIDATED: r[5],
    DATE_DEACTIVATED: r[6],
    DATE_UPDATED: r[7],
    VERSION: r[8],
  }) as UserRow;
/** The same with the address it was found for first (`byEmailsSql`), written out so that it too is one literal: `K` added to a built row would cost each row a second allocation. */
const userRowWithK = (r: unknown[]) =>
  ({
    K: r[0],
    ID_USER_DATA: r[1],
    NAME: r[2],
    EMAIL: r[3],
    STATUS: r[4],
    DATE_REGISTER: r[5],
    DATE_VALIDATED: r[6],
    DATE_DEACTIVATED: r[7],
    DATE_UPDATED: r[8],
    VERSION: r[9],
  }) as UserRow & { K: string };

/**
 * A statement's rows, from arrays. better-sqlite3 builds each row object property by
 * property, looking every column name up in V8's string table, and its objects do not
 * share one shape, so every later read of a field is a slow lookup: as arrays turned
 * into rows by one literal, a lookup of four rows cost 9.1 to 9.7 µs in a loop against
 * 11.7 to 12.4. Every read here selects `columns`, the list by email with `K` first.
 */
function rowsOf(statement: Database.Statement<unknown[]>): (params: readonly string[]) => unknown[] {
  const names = statement.columns().map((c) => c.name).join(', ');
  const toRow = names === columns ? userRowOf : names === `K, ${columns}` ? userRowWithK : undefined;
  if (!toRow) throw new Error(`the read API's reads select ${columns} (a list by email with K first), not ${names}`);
  const raw = statement.raw(true);
  return (params) => (raw.all(...params) as unknown[][]).map(toRow);
}

/** The embedded read DB: better-sqlite3 statements, each text prepared once and kept. */
function sqliteUserReads(file: string): UserReads {
  const connection = new Database(file, { fileMustExist: true });
  connection.pragma('busy_timeout = 5000');
  connection.pragma('query_only = ON');
  connection.function(foldFunction, { deterministic: true }, (name: unknown) => (typeof name === 'string' ? foldName(name) : name));
  const prepared = new Map<string, (params: readonly string[]) => unknown[]>();
  const projectorCommits = changeWaiter(file);
  return userReadsOver(
    <T>(sql: string, params: readonly string[]): Promise<T[]> => {
      try {
        let rows = prepared.get(sql);
        if (!rows) prepared.set(sql, (rows = rowsOf(connection.prepare<unknown[]>(sql))));
        return Promise.resolve(rows(params) as T[]);
      } catch (error) {
        const failure = readDbError(error);
        return Promise.reject(failure instanceof Error ? failure : new Error(String(failure)));
      }
    },
    (ms) => projectorCommits.wait(ms),
    () => {
      projectorCommits.close();
      return Promise.resolve(void connection.close());
    },
    // SQLite's LIKE ignores the case of ASCII letters only.
    { foldsNames: true },
  );
}

/**
 * How often reads waiting for a write (read-your-writes) look again on MariaDB:
 * at most this long after the projector's commit; all waits of a tick share one
 * batched lookup, so the server sees one query per tick however many wait.
 */
const mariadbWaitTickMs = 2;

/**
 * MariaDB: mysql2's `execute` (server-side prepared statements, cached per
 * connection). The server ends a read that runs past `timeoutMs`
 * (max_statement_time); the client gives up a little later on a server that no
 * longer answers at all.
 */
function mariadbUserReads(connection: Record<string, unknown>, options: { timeoutMs: number }): UserReads {
  // `trace: false`: mysql2's promise API otherwise captures a stack trace on every call for its errors'
  // long stacks (1.5 to 2.5 µs per read here); errors leave through `readDbError` with their code.
  const pool: Pool = createPool({ ...connection, multipleStatements: false, connectionLimit: 10, enableKeepAlive: true, trace: false });
  // Queued on each new connection before anything else it runs; a failure shows in the first read.
  pool.pool.on('connection', (created) => {
    created.query(`SET SESSION max_statement_time = ${options.timeoutMs / 1000}`, () => {});
  });
  const patience = options.timeoutMs + 1000;
  const rows = async <T>(sql: string, params: readonly string[]): Promise<T[]> => {
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error('the read DB did not answer'), { code: 'ETIMEDOUT' })), patience);
    });
    try {
      const [result] = await Promise.race([pool.execute<RowDataPacket[]>(sql, [...params]), gaveUp]);
      return result as T[];
    } catch (error) {
      throw readDbError(error);
    } finally {
      clearTimeout(timer);
    }
  };
  const ticks = sharedTicker(mariadbWaitTickMs);
  return userReadsOver(
    rows,
    (ms) => ticks.wait(ms),
    () => {
      ticks.close();
      return pool.end();
    },
    // MariaDB's collation (utf8mb4_unicode_ci) ignores the case (and the accents) of every letter.
    { foldsNames: false },
  );
}
