import type Database from 'better-sqlite3';
import type { Knex } from 'knex';
import { dbNow } from '../shared/read-db.js';
import { checkpointTable } from '../shared/read-model/checkpoints.js';
import { readDbDialectOf } from '../shared/read-model/dialect.js';
import { addBlocked, deadLetterTable } from '../shared/read-model/dead-letters.js';
import { projectionName, userDataTable, userRowRead, type UserRow } from '../shared/read-model/user-row.js';
import { controlTable, throwIfPaused } from './projection-control.js';
import { foldPrepared, userDataColumns, type PreparedBatch } from './prepared-batch.js';
import { perCount } from '../shared/per-count.js';

/**
 * A live batch on the embedded (SQLite) read DB in one synchronous transaction of
 * prepared statements, without the query builder: the same reads, fold and writes
 * as `applyBatch`, for the common batch (every event applied or passed over, no
 * one forgotten). knex compiled each statement and built a transaction object per
 * batch: about 1 ms of CPU per batch, most of the projector's cost per
 * registration at moderate rates, where batches hold a few events each.
 *
 * Returns undefined, having written nothing, when the batch needs more (an event to
 * park or hold, a UserForgotten): `applyBatch` then runs it through knex as before.
 * The transaction begins IMMEDIATE (the write lock first), as the knex path makes
 * sure by writing the control row first: a rebuild's pause and this batch cannot
 * interleave. Runs on the connection of knex's pool (one for SQLite), so it waits
 * for and is waited for by every other use of the read DB in this process.
 */
export async function applyPreparedOnSqlite(db: Knex, batch: PreparedBatch): Promise<{ rows: number } | undefined> {
  const client = db.client as { acquireConnection(): Promise<unknown>; releaseConnection(connection: unknown): Promise<unknown> };
  const connection = (await client.acquireConnection()) as Database.Database;
  try {
    return connection.transaction(() => applyInTransaction(connection, batch)).immediate();
  } finally {
    await client.releaseConnection(connection);
  }
}

const rowChunk = 500;
const streamChunk = 1000;
const columns = userDataColumns;
const marks = (count: number, mark = '?') => Array.from({ length: count }, () => mark).join(', ');

/** Whether a rebuild's pause holds now, by the database's clock (as `assertNotPaused` asks). */
const pausedSql = `SELECT PAUSED_BY, CASE WHEN PAUSED_UNTIL > ${readDbDialectOf('sqlite').nowSql} THEN 1 ELSE 0 END AS ACTIVE FROM ${controlTable} WHERE PROJECTION = ? LIMIT 1`;
/** SQL texts by row count, each made once (and prepared once: the read DB's connection keeps its statements, see `openReadDb`). */
const rowsSql = perCount((count) => `SELECT * FROM ${userDataTable} WHERE ID_USER_DATA IN (${marks(count)})`);
const blockedSql = perCount(
  (count) => `SELECT STREAM_ID, REVISION FROM ${deadLetterTable} WHERE PROJECTION = ? AND STATE IN ('failed', 'held') AND STREAM_ID IN (${marks(count)})`,
);
const upsertSql = perCount(
  (count) =>
    `INSERT INTO ${userDataTable} (${columns.join(', ')}) VALUES ${marks(count, `(${marks(columns.length)})`)} ` +
    `ON CONFLICT (ID_USER_DATA) DO UPDATE SET ${columns.map((c) => `${c} = excluded.${c}`).join(', ')}`,
);
const checkpointSql = perCount(
  (count) =>
    `INSERT INTO ${checkpointTable} (PROJECTION, SOURCE, POSITION, DATE_UPDATED) VALUES ${marks(count, '(?, ?, ?, ?)')} ` +
    `ON CONFLICT (PROJECTION, SOURCE) DO UPDATE SET POSITION = excluded.POSITION, DATE_UPDATED = excluded.DATE_UPDATED`,
);

function applyInTransaction(connection: Database.Database, batch: PreparedBatch): { rows: number } | undefined {
  const { ids, streams, checkpoints } = batch;
  throwIfPaused(connection.prepare(pausedSql).get(projectionName) as { PAUSED_BY: string | null; ACTIVE: number } | undefined);

  const current = new Map<string, UserRow>();
  for (let i = 0; i < ids.length; i += rowChunk) {
    const chunk = ids.slice(i, i + rowChunk);
    for (const row of connection.prepare(rowsSql(chunk.length)).all(...chunk) as UserRow[]) {
      current.set(row.ID_USER_DATA, userRowRead(row));
    }
  }
  const blocked = new Map<string, number>();
  for (let i = 0; i < streams.length; i += streamChunk) {
    const chunk = streams.slice(i, i + streamChunk);
    addBlocked(blocked, connection.prepare(blockedSql(chunk.length)).all(projectionName, ...chunk) as { STREAM_ID: string; REVISION: number }[]);
  }

  // Something to park or hold, or a user to forget: the full path (nothing written yet).
  const rows = foldPrepared(batch, current, blocked);
  if (!rows) return undefined;
  for (let i = 0; i < rows.length; i += rowChunk) {
    const chunk = rows.slice(i, i + rowChunk);
    connection.prepare(upsertSql(chunk.length)).run(chunk.flatMap((row) => columns.map((column) => row[column] ?? null)));
  }
  if (checkpoints.size > 0) {
    const now = dbNow();
    const values = [...checkpoints].flatMap(([source, position]) => [projectionName, source, position, now]);
    connection.prepare(checkpointSql(checkpoints.size)).run(values);
  }
  return { rows: rows.length };
}
