import Database from 'better-sqlite3';
import DataLoader from 'dataloader';
import type { Knex } from 'knex';
import { createPool, type ExecuteValues, type Pool, type PoolConnection, type RowDataPacket } from 'mysql2';
import { changeWaiter, sharedTicker } from '../shared/change-signal.js';
import { StoreUnavailableError } from '../shared/errors.js';
import { readDbConnectionOf, readDbError } from '../shared/read-db.js';
import { readDbDialect } from '../shared/read-model/dialect.js';
import type { UserRow } from '../shared/read-model/user-row.js';
import { perCount } from '../shared/per-count.js';
import { foldedNameIndex, foldedPrefixRange, foldNameFunction, registerNameFolding } from '../shared/read-model/name-search.js';

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

/**
 * How a list compares NAME with a prefix, as SQL with its values: MariaDB's `LIKE`, which
 * its collation makes case- and accent-insensitive and its `IDX_USER_DATA_NAME` serves;
 * on the embedded read DB a range of the folded name (`shared/read-model/name-search.ts`).
 * '!' as the LIKE escape character needs no escaping itself.
 */
type NameCondition = (prefix: string) => { sql: string; params: unknown[] };

const likePrefix: NameCondition = (prefix) => ({ sql: "NAME LIKE ? ESCAPE '!'", params: [`${prefix.replace(/[!%_]/g, (c) => `!${c}`)}%`] });

/** A folded name in a prefix's range (`foldedPrefixRange`): its two bounds are the values. */
const inFoldedRange = `${foldNameFunction}(NAME) >= ? AND ${foldNameFunction}(NAME) < ?`;

const foldedPrefix: NameCondition = (prefix) => {
  const range = foldedPrefixRange(prefix);
  // A prefix that folds to nothing (a combining mark alone) matches no name, as MariaDB's LIKE does.
  if (!range) return { sql: '0 = 1', params: [] };
  return { sql: inFoldedRange, params: [range.from, range.to] };
};

/** The conditions of a list other than the name's, with their values, in the order the SQL texts below put them. */
function otherConditions(filter: UserRowFilter): { sql: string[]; params: unknown[] } {
  const sql: string[] = [];
  const params: unknown[] = [];
  const narrow = (condition: string, value?: unknown) => {
    sql.push(condition);
    if (value !== undefined) params.push(value);
  };
  if (filter.email !== undefined) narrow('EMAIL = ?', filter.email);
  if (filter.status !== undefined) narrow('STATUS = ?', filter.status);
  else narrow(visible());
  if (filter.afterId !== undefined) narrow('ID_USER_DATA > ?', filter.afterId);
  return { sql, params };
}

function checkedLimit(filter: UserRowFilter): number {
  if (!Number.isSafeInteger(filter.limit) || filter.limit < 1) throw new RangeError(`limit must be a positive integer, not ${filter.limit}`);
  return filter.limit;
}

/**
 * The list query for one combination of filters. Its text depends only on which
 * filters are present and on the limit (a bounded integer), so a few dozen texts
 * cover every request and each is prepared once.
 */
function listQuery(filter: UserRowFilter, nameCondition: NameCondition): { sql: string; params: unknown[] } {
  const limit = checkedLimit(filter);
  const others = otherConditions(filter);
  const name = filter.name !== undefined ? nameCondition(filter.name) : { sql: undefined, params: [] };
  const where = name.sql ? [name.sql, ...others.sql] : others.sql;
  return { sql: `SELECT ${columns} FROM USER_DATA WHERE ${where.join(' AND ')} ORDER BY ID_USER_DATA LIMIT ${limit}`, params: [...name.params, ...others.params] };
}

/** How a search by name on the embedded read DB found its page (`sqliteNameSearchSql`), for whoever watches. */
export type NameSearchRoute = 'no match' | 'through the index' | 'in id order' | 'in id order, then through the index';

/**
 * A search by name on the embedded read DB (and by status, after an id; not by email,
 * whose own index finds its one or two rows first), which must answer in id order from
 * an index ordered by the folded name. Two ways, each cheap where the other is not:
 * - *through the index*: the ids of every match read from the index alone (it holds
 *   the folded name, STATUS and the id: about 70 ns an entry), the first `limit` of them
 *   kept, then their rows. Its cost grows with the names that match;
 * - *in id order*: the rows after the cursor read in id order (of the status asked for,
 *   through its index, which is in id order within a status), each name folded and
 *   compared (about 0.35 µs a row, most of it the call into JavaScript), until `limit`
 *   rows match. Its cost grows with the rows between matches: small for a common prefix,
 *   the whole table for a rare one.
 * So the names in the prefix's range are counted in the index first, up to
 * `indexRouteMostMatches` entries: fewer take the index; more mean a common prefix,
 * which is read in id order over at most `idOrderMostRows` rows. A page those rows do not
 * fill is the answer when no row follows them; else (the matches crowd together later,
 * as names registered in one campaign do, or few of them have the status) it is taken
 * through the index after all. So a search reads at most 4,000 index entries and 4,000
 * rows, or, past those, its prefix's entries in the index: never the table. At 500,000
 * users 0.04 to 0.05 ms for a prefix no one has (100 to 286 ms before), 0.5 to 0.6 ms for
 * one that a twelfth of them share (0.07 to 0.14 before) (docs/design-decisions.md, "Name
 * searches on the embedded read DB").
 */
export const indexRouteMostMatches = 4_000;
export const idOrderMostRows = 4_000;

function sqliteNameSearchSql(filter: UserRowFilter & { name: string }, range: { from: string; to: string | Buffer }) {
  const limit = checkedLimit(filter);
  const others = otherConditions(filter);
  const inIndex = `FROM USER_DATA INDEXED BY ${foldedNameIndex} WHERE ${[inFoldedRange, ...others.sql].join(' AND ')}`;
  // The rows read in id order: after the cursor, of the status asked for (its index then gives the order).
  const readWhere: string[] = [];
  const readParams: unknown[] = [];
  if (filter.status !== undefined) {
    readWhere.push('STATUS = ?');
    readParams.push(filter.status);
  }
  if (filter.afterId !== undefined) {
    readWhere.push('ID_USER_DATA > ?');
    readParams.push(filter.afterId);
  }
  const read = `FROM USER_DATA ${readWhere.length > 0 ? `WHERE ${readWhere.join(' AND ')} ` : ''}ORDER BY ID_USER_DATA`;
  // Row by row, the folded name's first characters against the prefix: one call of the function a row (the range would take two).
  const perRow = [`substr(${foldNameFunction}(NAME), 1, ?) = ?`, ...(filter.status === undefined ? [visible()] : [])].join(' AND ');
  return {
    count: { sql: `SELECT count(*) FROM (SELECT 1 FROM USER_DATA INDEXED BY ${foldedNameIndex} WHERE ${inFoldedRange} LIMIT ${indexRouteMostMatches})`, params: [range.from, range.to] },
    throughIndex: {
      sql: `SELECT ${columns} FROM USER_DATA WHERE ID_USER_DATA IN (SELECT ID_USER_DATA ${inIndex} ORDER BY ID_USER_DATA LIMIT ${limit}) ORDER BY ID_USER_DATA`,
      params: [range.from, range.to, ...others.params],
    },
    inIdOrder: {
      sql: `SELECT ${columns} FROM (SELECT ${columns} ${read} LIMIT ${idOrderMostRows}) WHERE ${perRow} ORDER BY ID_USER_DATA LIMIT ${limit}`,
      params: [...readParams, [...range.from].length, range.from],
    },
    /** 1 when rows follow those read in id order, so a page they did not fill may not be whole; 0 when they were the last. */
    rowsAfterRead: { sql: `SELECT count(*) FROM (SELECT 1 ${read} LIMIT 1 OFFSET ${idOrderMostRows})`, params: readParams },
  };
}

/**
 * Opens the prepared reads on the database `db` (the knex instance of the read
 * DB) points at: a connection of their own, so the request path runs no query
 * builder. knex keeps migrations and the rare queries.
 */
export interface UserReadsOptions {
  timeoutMs: number;
  /** Told how each search by name on the embedded read DB found its page (tests watch it; MariaDB has one way). */
  onNameSearch?: (route: NameSearchRoute) => void;
}

export function openUserReads(db: Knex, options: UserReadsOptions): UserReads {
  const connection = readDbConnectionOf(db);
  return readDbDialect(db).kind === 'mariadb' ? mariadbUserReads(connection, options) : sqliteUserReads(connection.filename!, options);
}

/**
 * The read API's reads over one way of running a query: lookups by id and lists by
 * email alone batched per turn of the event loop, any other list one query each.
 */
function userReadsOver(
  rows: <T>(sql: string, params: readonly unknown[]) => Promise<T[]>,
  waitForChange: (ms: number) => Promise<void>,
  close: () => Promise<void>,
  options: { nameCondition: NameCondition; searchByName?: (filter: UserRowFilter & { name: string }) => Promise<UserRow[]> },
): UserReads {
  const byIds = lookupsById((ids) => rows<UserRow>(byIdsSql(ids.length), ids));
  const byEmails = listsByEmail((emails) => rows<UserRow & { K: string }>(byEmailsSql(emails.length), emails));
  return {
    byId: (id) => byIds.load(id),
    versionOf: async (id) => Number((await byIds.load(id))?.VERSION ?? -1),
    list: async (filter) => {
      if (byEmailOnly(filter)) return (await byEmails.load(filter.email)).slice(0, filter.limit);
      if (options.searchByName && filter.name !== undefined && filter.email === undefined) return options.searchByName({ ...filter, name: filter.name });
      const { sql, params } = listQuery(filter, options.nameCondition);
      return rows<UserRow>(sql, params);
    },
    waitForChange,
    close,
  };
}

/** A failed read as the read API answers it: `readDbError`'s, always an Error. */
function readFailure(error: unknown): Error {
  const failure = readDbError(error);
  return failure instanceof Error ? failure : new Error(String(failure));
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
function rowsOf(statement: Database.Statement<unknown[]>): (params: readonly unknown[]) => unknown[] {
  const names = statement.columns().map((c) => c.name).join(', ');
  const toRow = names === columns ? userRowOf : names === `K, ${columns}` ? userRowWithK : undefined;
  if (!toRow) throw new Error(`the read API's reads select ${columns} (a list by email with K first), not ${names}`);
  const raw = statement.raw(true);
  return (params) => (raw.all(...params) as unknown[][]).map(toRow);
}

/** The embedded read DB: better-sqlite3 statements, each text prepared once and kept. */
function sqliteUserReads(file: string, options: Pick<UserReadsOptions, 'onNameSearch'>): UserReads {
  const connection = new Database(file, { fileMustExist: true });
  connection.pragma('busy_timeout = 5000');
  connection.pragma('query_only = ON');
  registerNameFolding(connection);
  const prepared = new Map<string, (params: readonly unknown[]) => unknown[]>();
  const rowsNow = <T>(sql: string, params: readonly unknown[]): T[] => {
    let rows = prepared.get(sql);
    if (!rows) prepared.set(sql, (rows = rowsOf(connection.prepare<unknown[]>(sql))));
    return rows(params) as T[];
  };
  const counts = new Map<string, Database.Statement<unknown[], number>>();
  const countNow = (sql: string, params: readonly unknown[]): number => {
    let count = counts.get(sql);
    if (!count) counts.set(sql, (count = connection.prepare<unknown[], number>(sql).pluck()));
    return Number(count.get(...params));
  };
  /**
   * See `sqliteNameSearchSql`. One read transaction, so that its statements see the read DB as one: a page
   * the id-order read did not fill is whole only if no row followed those it read at that moment.
   */
  const searchByName = connection.transaction((filter: UserRowFilter & { name: string }): UserRow[] => {
    const range = foldedPrefixRange(filter.name);
    const sql = range && sqliteNameSearchSql(filter, range);
    const names = sql ? countNow(sql.count.sql, sql.count.params) : 0;
    if (!sql || names === 0) {
      options.onNameSearch?.('no match');
      return [];
    }
    if (names >= indexRouteMostMatches) {
      const page = rowsNow<UserRow>(sql.inIdOrder.sql, sql.inIdOrder.params);
      if (page.length === filter.limit || countNow(sql.rowsAfterRead.sql, sql.rowsAfterRead.params) === 0) {
        options.onNameSearch?.('in id order');
        return page;
      }
      options.onNameSearch?.('in id order, then through the index');
    } else options.onNameSearch?.('through the index');
    return rowsNow<UserRow>(sql.throughIndex.sql, sql.throughIndex.params);
  });
  const failed = (error: unknown) => Promise.reject(readFailure(error));
  const projectorCommits = changeWaiter(file);
  return userReadsOver(
    <T>(sql: string, params: readonly unknown[]): Promise<T[]> => {
      try {
        return Promise.resolve(rowsNow<T>(sql, params));
      } catch (error) {
        return failed(error);
      }
    },
    (ms) => projectorCommits.wait(ms),
    () => {
      projectorCommits.close();
      return Promise.resolve(void connection.close());
    },
    {
      nameCondition: foldedPrefix,
      searchByName: (filter) => {
        try {
          return Promise.resolve(searchByName(filter));
        } catch (error) {
          return failed(error);
        }
      },
    },
  );
}

/**
 * How often reads waiting for a write (read-your-writes) look again on MariaDB:
 * at most this long after the projector's commit; all waits of a tick share one
 * batched lookup, so the server sees one query per tick however many wait.
 */
const mariadbWaitTickMs = 2;

/** The read API's connections to MariaDB. */
const mariadbConnections = 10;

/**
 * The most reads that wait for one of those connections (mysql2's `queueLimit`); past it a read
 * is answered 503 at once. While the server answers, reads wait only behind the statements
 * under way (lookups by id, and lists by email alone, wait as one statement per turn of the
 * event loop; other lists one each). A server that has stopped answering would otherwise
 * collect every read made until it answers again, each waiting its whole patience for nothing.
 * Reads answered 503 while they waited keep their place until a connection comes free, which
 * then passes through them at once: when the server answers again, a read may be refused
 * until its first answer arrives.
 */
const mariadbMostWaitingReads = 1000;

/**
 * MariaDB: mysql2's `execute` (server-side prepared statements, cached per
 * connection), through its callback API: the promise API's wrapping (and its
 * stack captures, unless `trace` is off) cost every read without serving it. The
 * server ends a read that runs past `timeoutMs` (max_statement_time); a read
 * gives up a second later (`patience`), on a server that no longer answers at all
 * (a dropped route, a frozen host), and answers 503. Then:
 * - a connection whose statement has gone unanswered that long is closed: the
 *   pool forgets it, opens another when a read needs one, and never hands it to
 *   another read (TCP would keep it open for about 15 minutes: its keepalive
 *   probes do not start while a statement's bytes wait for an acknowledgement,
 *   and the host of a frozen server process answers them);
 * - a read answered before it got a connection runs nothing when it gets one,
 *   so a server that answers again serves the reads made then, not the backlog
 *   of those already answered 503.
 * mysql2's own per-statement `timeout` does neither: it starts only once the
 * statement runs on a connection (not while the read waits for one, nor while the
 * statement is prepared there) and leaves the connection held by the unanswered
 * statement, neither closed nor free.
 */
function mariadbUserReads(connection: Record<string, unknown>, options: { timeoutMs: number }): UserReads {
  const pool: Pool = createPool({
    ...connection,
    multipleStatements: false,
    connectionLimit: mariadbConnections,
    queueLimit: mariadbMostWaitingReads,
    enableKeepAlive: true,
  });
  // Queued on each new connection before anything else it runs; a failure shows in the first read.
  pool.on('connection', (created) => {
    created.query(`SET SESSION max_statement_time = ${options.timeoutMs / 1000}`, () => {});
  });
  const patience = options.timeoutMs + 1000;
  const rows = <T>(sql: string, params: readonly unknown[]): Promise<T[]> =>
    new Promise<T[]>((resolve, reject) => {
      let answered = false;
      const fail = (error: unknown) => {
        if (answered) return;
        answered = true;
        clearTimeout(timer);
        reject(readFailure(error));
      };
      /** The connection while it runs this read's statement, and since when. */
      let running: PoolConnection | undefined;
      let runningSince = 0;
      const giveUp = () => {
        fail(Object.assign(new Error('the read DB did not answer'), { code: 'ETIMEDOUT' }));
        if (!running) return;
        // A read that waited for its connection gives its statement the same time before the connection is judged stalled.
        const left = runningSince + patience - Date.now();
        if (left > 0) timer = setTimeout(giveUp, left);
        else {
          // mysql2's destroy ends the socket politely (a FIN queued behind the unanswered statement, which a dropped
          // route never delivers): the pool forgets the connection, and the socket is destroyed outright as well.
          const { stream } = running as unknown as { stream?: { destroy(): void } };
          running.destroy();
          stream?.destroy();
        }
      };
      let timer = setTimeout(giveUp, patience);
      pool.getConnection((error, got) => {
        if (error) {
          // The pool's own refusals (its queue is full, it is closed) carry no code: the read DB cannot serve this read now.
          fail((error as { code?: unknown }).code === undefined ? new StoreUnavailableError(`read database: ${error.message}`, { cause: error }) : error);
          return;
        }
        if (answered) {
          got.release();
          return;
        }
        running = got;
        runningSince = Date.now();
        try {
          got
            .execute<RowDataPacket[]>(sql, [...params] as ExecuteValues[], (error, result) => {
              running = undefined;
              clearTimeout(timer);
              if (error) fail(error);
              else if (!answered) {
                answered = true;
                resolve(result as T[]);
              }
            })
            // Once the statement is over, as mysql2's `pool.execute` does: a connection that failed
            // (closed, or lost) never gets here, and the pool has already forgotten it.
            .once('end', () => got.release());
        } catch (error) {
          running = undefined;
          got.release();
          fail(error);
        }
      });
    });
  const ticks = sharedTicker(mariadbWaitTickMs);
  return userReadsOver(
    rows,
    (ms) => ticks.wait(ms),
    () => {
      ticks.close();
      return new Promise<void>((resolve, reject) => pool.end((error) => (error ? reject(error) : resolve())));
    },
    // The read model's collation (utf8mb4_general_ci: see `foldName`) ignores the case and the accents of letters.
    { nameCondition: likePrefix },
  );
}
