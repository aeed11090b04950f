import type { Knex } from 'knex';

/**
 * What differs between the two read DBs, SQLite (embedded) and MariaDB, in one
 * place: the database's clock, row locks, the projector's isolation level and
 * whether the database works beside this process. Code that needs more than
 * these (a table's DDL, the prepared reads' driver) asks `kind`.
 */
export interface ReadDbDialect {
  readonly kind: 'sqlite' | 'mariadb';
  /**
   * Whether the engine locks rows (MariaDB's InnoDB). SQLite has one write lock
   * for the whole database, taken at a transaction's first write, so a transaction
   * that must hold others off from its start writes first.
   */
  readonly rowLocks: boolean;
  /**
   * Whether the database runs in another process: work it does then overlaps
   * this process's own (SQLite's work is done on the caller's thread).
   */
  readonly separateProcess: boolean;
  /** The transaction options of a projector batch. */
  readonly batchIsolation: Readonly<Knex.TransactionConfig>;
  /** The database's clock, as dates are stored (UTC 'YYYY-MM-DD HH:MM:SS.mmm'). */
  now(db: Knex): Knex.Raw;
  /** The same clock as SQL text, for statements written without the query builder. */
  readonly nowSql: string;
  /** The database's clock `ms` milliseconds from now (negative: ago). */
  nowPlus(db: Knex, ms: number): Knex.Raw;
  /** Whole milliseconds from a stored date to the database's clock. */
  ageMs(db: Knex, column: string): Knex.Raw;
  /** The read locks its rows for writing until the transaction ends (FOR UPDATE); unchanged without row locks. */
  lockForUpdate<TRecord extends object, TResult>(query: Knex.QueryBuilder<TRecord, TResult>): Knex.QueryBuilder<TRecord, TResult>;
  /** The read waits for writers of its rows and holds them off until the transaction ends (LOCK IN SHARE MODE); unchanged without row locks. */
  lockForShare<TRecord extends object, TResult>(query: Knex.QueryBuilder<TRecord, TResult>): Knex.QueryBuilder<TRecord, TResult>;
}

const mariadb: ReadDbDialect = {
  kind: 'mariadb',
  rowLocks: true,
  separateProcess: true,
  // READ COMMITTED: FOR UPDATE then locks only existing rows, not the gaps between
  // them, so projectors working on different users do not deadlock on inserts.
  batchIsolation: { isolationLevel: 'read committed' },
  now: (db: Knex) => db.raw(mariadb.nowSql),
  nowSql: 'UTC_TIMESTAMP(3)',
  nowPlus: (db: Knex, ms: number) => db.raw('DATE_ADD(UTC_TIMESTAMP(3), INTERVAL ? MICROSECOND)', [Math.round(ms * 1000)]),
  ageMs: (db: Knex, column: string) => db.raw('TIMESTAMPDIFF(MICROSECOND, ??, UTC_TIMESTAMP(3)) DIV 1000', [column]),
  lockForUpdate: (query) => query.forUpdate(),
  lockForShare: (query) => query.forShare(),
};

const sqlite: ReadDbDialect = {
  kind: 'sqlite',
  rowLocks: false,
  separateProcess: false,
  batchIsolation: {},
  now: (db: Knex) => db.raw(sqlite.nowSql),
  nowSql: "strftime('%Y-%m-%d %H:%M:%f', 'now')",
  nowPlus: (db: Knex, ms: number) =>
    db.raw("strftime('%Y-%m-%d %H:%M:%f', 'now', ?)", [`${ms >= 0 ? '+' : ''}${(ms / 1000).toFixed(3)} seconds`]),
  ageMs: (db: Knex, column: string) => db.raw("CAST((julianday('now') - julianday(??)) * 86400000 AS INTEGER)", [column]),
  lockForUpdate: (query) => query,
  lockForShare: (query) => query,
};

const isMariaDb = (db: Knex): boolean => (db.client as { config: { client: string } }).config.client === 'mysql2';

/** The dialect of the read DB `db` (or a transaction on it) was opened on (see `openReadDb`). */
export const readDbDialect = (db: Knex): ReadDbDialect => (isMariaDb(db) ? mariadb : sqlite);

/** The dialect of a kind of read DB, for code that knows which it runs on. */
export const readDbDialectOf = (kind: ReadDbDialect['kind']): ReadDbDialect => (kind === 'mariadb' ? mariadb : sqlite);
