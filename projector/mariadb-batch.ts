import type { Knex } from 'knex';
import { dbNow, readDbConnectionOf } from '../shared/read-db.js';
import { checkpointTable } from '../shared/read-model/checkpoints.js';
import { addBlocked, deadLetterTable } from '../shared/read-model/dead-letters.js';
import { projectionName, userDataTable, userRowRead, type UserRow } from '../shared/read-model/user-row.js';
import { foldPrepared, userDataColumns, type PreparedBatch } from './prepared-batch.js';
import { controlTable, throwIfPaused } from './projection-control.js';

/**
 * A live batch on MariaDB in two round trips: the reads before the fold in one
 * (the isolation level, BEGIN, the pause check, the rows FOR UPDATE, the
 * quarantine check), the writes and the COMMIT in another. The knex path sends
 * the same eight statements one at a time, and at moderate rates, where a batch
 * holds an event or two, those round trips are most of what a batch costs (a
 * `write` each, and the wait for each answer). Same statements, same locks, same
 * order as `applyBatch` on MariaDB, for the common batch (every event applied or
 * passed over, no one forgotten).
 *
 * Needs a connection opened with `batchStatements` (`openReadDb`): returns
 * undefined, having sent nothing, on one without; and undefined, having rolled
 * back, when the batch needs more (an event to park or hold, a UserForgotten):
 * `applyBatch` then runs it through knex as before. Runs on a connection of
 * knex's pool.
 */
export async function applyPreparedOnMariaDb(db: Knex, batch: PreparedBatch): Promise<{ rows: number } | undefined> {
  const open = await beginPreparedOnMariaDb(db, batch);
  if (!open) return undefined;
  await open.commit();
  return { rows: open.rows };
}

/**
 * A batch read and folded in its open transaction, its writes not yet sent: the
 * first half of `applyPreparedOnMariaDb`, for a projector that folds the next
 * batch while this one's writes and COMMIT are with the server (`projector.ts`).
 * Holds its connection until `commit` or `rollback`, one of which must be called.
 */
export interface OpenMariaDbBatch {
  /** Rows the batch writes. */
  rows: number;
  /**
   * Every row the batch locked, as it will stand once committed, by user id: a
   * batch begun while this one commits takes its rows from here rather than
   * reading them (a read would wait for this batch's locks).
   */
  current: ReadonlyMap<string, UserRow>;
  /** Sends the writes, the checkpoints and the COMMIT; rolls back (and rejects) when they fail. Once only. */
  commit(): Promise<void>;
  /** Nothing of the batch stays (once committed or rolled back, does nothing). */
  rollback(): Promise<void>;
}

/**
 * Begins the batch on a connection of its own: the reads before the fold (rows
 * in `carried` are taken from it, not read: a batch still committing holds
 * them), then the fold. Undefined, having sent nothing, on a connection opened
 * without `batchStatements`; undefined, having rolled back, when the batch needs
 * the full path. Rejects, having rolled back, when a read fails or a rebuild
 * holds the pause (ProjectionPausedError).
 */
export async function beginPreparedOnMariaDb(
  db: Knex,
  batch: PreparedBatch,
  carried?: ReadonlyMap<string, UserRow>,
): Promise<OpenMariaDbBatch | undefined> {
  // Decided by how the pool's connections are opened, before taking one.
  if (readDbConnectionOf(db).multipleStatements !== true) return undefined;
  const client = db.client as { acquireConnection(): Promise<unknown>; releaseConnection(connection: unknown): Promise<unknown> };
  const connection = (await client.acquireConnection()) as MySqlConnection;
  let open: OpenMariaDbBatch | undefined;
  try {
    open = await beginInTransaction(connection, batch, carried, () => client.releaseConnection(connection));
    return open;
  } finally {
    if (!open) await client.releaseConnection(connection);
  }
}

/** The part of mysql2's (callback) connection used here. */
interface MySqlConnection {
  query(sql: string, values: unknown[], callback: (error: Error | null, results: unknown) => void): void;
}

const query = (connection: MySqlConnection, sql: string, values: unknown[] = []): Promise<unknown[]> =>
  new Promise((resolve, reject) => connection.query(sql, values, (error, results) => (error ? reject(error) : resolve(results as unknown[]))));

const columns = userDataColumns;
/** Rows per upsert statement, as the knex path writes them. */
const rowChunk = 500;

// `IN (?)` takes an array (mysql2 writes it as a list) and `VALUES ?` an array of rows: one text for any count.
const beginSql = 'SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION';
const pausedSql = `SELECT PAUSED_BY, CASE WHEN PAUSED_UNTIL > UTC_TIMESTAMP(3) THEN 1 ELSE 0 END AS ACTIVE FROM ${controlTable} WHERE PROJECTION = ? LIMIT 1 LOCK IN SHARE MODE`;
const rowsSql = `SELECT * FROM ${userDataTable} WHERE ID_USER_DATA IN (?) FOR UPDATE`;
const blockedSql = `SELECT STREAM_ID, REVISION FROM ${deadLetterTable} WHERE PROJECTION = ? AND STATE IN ('failed', 'held') AND STREAM_ID IN (?) LOCK IN SHARE MODE`;
// A row only moves forward in VERSION, also here: a batch begun while the one before it commits takes
// that one's rows from memory, unlocked until its own writes, so a row another projector moved further
// meanwhile (two members on one partition during a rebalance) must not be written back. VERSION last:
// MariaDB assigns left to right, and the other columns compare against the row's VERSION before it moves.
const guarded = columns.filter((c) => c !== 'ID_USER_DATA' && c !== 'VERSION');
const upsertSql =
  `INSERT INTO ${userDataTable} (${columns.join(', ')}) VALUES ? ON DUPLICATE KEY UPDATE ` +
  [...guarded.map((c) => `${c} = IF(VALUES(VERSION) > VERSION, VALUES(${c}), ${c})`), 'VERSION = GREATEST(VERSION, VALUES(VERSION))'].join(', ');
const checkpointSql =
  `INSERT INTO ${checkpointTable} (PROJECTION, SOURCE, POSITION, DATE_UPDATED) VALUES ? ` +
  'ON DUPLICATE KEY UPDATE POSITION = VALUES(POSITION), DATE_UPDATED = VALUES(DATE_UPDATED)';

async function beginInTransaction(
  connection: MySqlConnection,
  batch: PreparedBatch,
  carried: ReadonlyMap<string, UserRow> | undefined,
  release: () => Promise<unknown>,
): Promise<OpenMariaDbBatch | undefined> {
  const { streams, checkpoints } = batch;
  const ids = carried === undefined ? batch.ids : batch.ids.filter((id) => !carried.has(id));
  const rollback = () => query(connection, 'ROLLBACK').then(
    () => {},
    // On a connection that failed the ROLLBACK fails too, and the server rolls back as it drops the session.
    () => {},
  );
  let begun = false;
  try {
    // Round trip 1: begin, and every read the fold needs (the results of the two statements of `beginSql` first).
    // The quarantine before the rows: a `dead-letters retry` of a stream locks its parked entries, then inserts
    // or moves its user's row, so this batch waits for it at the quarantine and then reads the row it left. Read
    // the other way round, a row the retry had not yet inserted was read as absent (under READ COMMITTED a
    // locking read of a missing row locks nothing), and the batch's next event of that user folded over nothing.
    const reads = [beginSql, pausedSql, ...(streams.length > 0 ? [blockedSql] : []), ...(ids.length > 0 ? [rowsSql] : [])];
    begun = true;
    const results = await query(connection, reads.join('; '), [
      projectionName,
      ...(streams.length > 0 ? [projectionName, streams] : []),
      ...(ids.length > 0 ? [ids] : []),
    ]);
    throwIfPaused((results[2] as { PAUSED_BY: string | null; ACTIVE: number | string }[])[0]);
    const blocked = addBlocked(new Map(), streams.length > 0 ? (results[3] as { STREAM_ID: string; REVISION: number | string }[]) : []);
    const current = new Map<string, UserRow>();
    if (carried !== undefined) for (const id of batch.ids) if (carried.has(id)) current.set(id, carried.get(id)!);
    for (const row of ids.length > 0 ? (results[streams.length > 0 ? 4 : 3] as UserRow[]) : []) current.set(row.ID_USER_DATA, userRowRead(row));

    // Something to park or hold, or a user to forget: the full path (nothing written; rolled back below).
    const rows = foldPrepared(batch, current, blocked, carried);
    if (!rows) return undefined;

    // Round trip 2, when committed: the rows, the checkpoints and the COMMIT.
    const writes: string[] = [];
    const values: unknown[] = [];
    for (let i = 0; i < rows.length; i += rowChunk) {
      writes.push(upsertSql);
      values.push(rows.slice(i, i + rowChunk).map((row) => columns.map((column) => row[column] ?? null)));
    }
    if (checkpoints.size > 0) {
      const now = dbNow();
      writes.push(checkpointSql);
      values.push([...checkpoints].map(([source, position]) => [projectionName, source, position, now]));
    }
    writes.push('COMMIT');
    let settled = false;
    const settle = async (work: () => Promise<unknown>) => {
      settled = true;
      try {
        await work();
      } finally {
        await release();
      }
    };
    const open: OpenMariaDbBatch = {
      rows: rows.length,
      current,
      commit: () => {
        if (settled) return Promise.reject(new Error('this batch was already committed or rolled back'));
        return settle(async () => {
          try {
            await query(connection, writes.join('; '), values);
          } catch (error) {
            await rollback();
            throw error;
          }
        });
      },
      rollback: () => (settled ? Promise.resolve() : settle(rollback)),
    };
    begun = false;
    return open;
  } finally {
    // Not begun for good (the batch needs the full path, a pause, a failure): nothing of it stays.
    if (begun) await rollback();
  }
}
