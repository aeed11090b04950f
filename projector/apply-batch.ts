import type { Knex } from 'knex';
import { announceReadDbChange, eraseFreedPages, readDbError, walTruncationPending } from '../shared/read-db.js';
import { readDbDialect } from '../shared/read-model/dialect.js';
import { userIdFromStream, type UserEvent } from '../shared/user-events.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { backoffDelay, isRetriable } from '../shared/retry.js';
import { assertNotPaused } from './projection-control.js';
import {
  blockedStreams,
  erasedEntry,
  eraseParkedStreams,
  parkedError,
  parkEvents,
  withoutPersonalData,
  type EventToPark,
} from '../shared/read-model/dead-letters.js';
import type { Checkpoints, ProjectedEvent } from '../shared/event-feed/port.js';
import { writeCheckpoints } from '../shared/read-model/checkpoints.js';
import { projectionName, userDataTable, userRowRead, type UserRow } from '../shared/read-model/user-row.js';
import { userRowFrom } from './user-row.js';
import { rebuildLeftovers } from './shadow-table.js';
import { admit, isForgetting } from './admit.js';
import { classify, userIdOf, type ClassifiedEvent } from './classify.js';
import { applyPreparedOnSqlite } from './sqlite-batch.js';
import { applyPreparedOnMariaDb } from './mariadb-batch.js';
import { userDataColumns, type PreparedBatch } from './prepared-batch.js';

const rowChunk = 500;

/** The quarantine's record of a classified event; `position` and `source` stand in when the event carries none. */
export const eventToPark = (
  c: ClassifiedEvent,
  how: Pick<EventToPark, 'state' | 'error' | 'attempts' | 'source' | 'position'>,
): EventToPark => ({
  ...how,
  streamId: c.streamId,
  revision: c.revision,
  type: c.from.type,
  data: c.from.data,
  position: c.from.position?.toString() ?? how.position,
  source: c.from.source ?? how.source,
});

export interface ApplyOptions {
  /**
   * Event by event, each row write in a savepoint: an event whose handler or
   * row write fails is parked instead of failing the batch. For a batch that
   * failed `attempts` times as a whole.
   */
  isolate?: boolean;
  /** In isolation, how often an event is tried (with backoff) before it is parked. */
  attempts?: number;
  /** The event -> row function; tests put a failing one in its place. */
  fold?: typeof userRowFrom;
  /** Tests only: every batch through knex, also where a prepared path (embedded read DB, MariaDB) would take it. */
  viaQueryBuilder?: boolean;
}

export interface Applied {
  /** Rows written. */
  rows: number;
  /** Events parked in PROJECTION_DEAD_LETTER (failed or held back). */
  parked: number;
  /** Users forgotten by this batch (UserForgotten applied): their rows are tombstones, their quarantine erased. Absent when none. */
  forgotten?: number;
}

/**
 * Applies a batch in one transaction together with the feed's checkpoints, so the
 * read model and "how far it got" can never disagree: after a crash the batch is
 * either wholly there or wholly replayed, and replays change nothing because each
 * row only moves forward in VERSION. Poison events are parked in the same
 * transaction, and so are later events of a stream that has one parked, so the
 * checkpoint moves on for everyone else without breaking any user's order.
 * While a rebuild holds the pause the batch fails with the retriable
 * ProjectionPausedError and is tried again later.
 *
 * Forgetting (GDPR erasure) overrides the quarantine: a UserForgotten is applied
 * even on a blocked stream, and in the same transaction every quarantined entry
 * of that stream is erased (no payload, a fixed error, 'skipped'), which unblocks
 * it. An event parked for a user whose row is forgotten keeps no payload. After a
 * batch that forgot someone commits, the SQLite read DB's WAL is checkpointed and
 * truncated (`eraseFreedPages`), so the old page images with the name and email
 * leave the disk; when readers prevent that, it is tried again after the next batch.
 */
export async function applyBatch(
  db: Knex,
  events: readonly ProjectedEvent[],
  checkpoints: Checkpoints,
  options: ApplyOptions = {},
): Promise<Applied> {
  const prepared = prepareBatch(events, checkpoints, options.fold);
  const { classified, ids, streams, fold } = prepared;
  // An event that does not name its source is in the batch's one source (a batch from several names each event's).
  const source = checkpoints.size === 1 ? [...checkpoints.keys()][0] : undefined;
  let applied: Applied | undefined;
  /** The rows of the users this batch forgot, as tombstones. */
  let tombstones: UserRow[] = [];
  try {
    // Row locks and the batch's isolation level (READ COMMITTED on MariaDB) come from the dialect.
    const dialect = readDbDialect(db);
    // The common batch on the embedded read DB: prepared statements, no query builder (`sqlite-batch.ts`).
    if (dialect.kind === 'sqlite' && !options.isolate && !options.viaQueryBuilder) {
      applied = await applyPreparedOnSqlite(db, prepared).then((done) => done && { ...done, parked: 0 });
    }
    // On MariaDB, with a connection that takes several statements at once: two round trips (`mariadb-batch.ts`).
    if (dialect.kind === 'mariadb' && !options.isolate && !options.viaQueryBuilder) {
      applied = await applyPreparedOnMariaDb(db, prepared).then((done) => done && { ...done, parked: 0 });
    }
    applied ??= await db.transaction(async (trx) => {
      // A rebuild swapping the table in pauses the live projector: nothing is written, the batch is retried.
      await assertNotPaused(trx, projectionName);
      // The quarantine first, then the rows, as on the prepared path (`mariadb-batch.ts` says why).
      const blocked = streams.length > 0 ? await blockedStreams(trx, projectionName, streams) : new Map<string, number>();
      const current = new Map<string, UserRow>();
      for (let i = 0; i < ids.length; i += rowChunk) {
        const query = trx<UserRow>(userDataTable).whereIn('ID_USER_DATA', ids.slice(i, i + rowChunk));
        // Several projector instances may share the table; lock the rows this batch owns.
        const rows = await dialect.lockForUpdate(query);
        for (const row of rows) current.set(row.ID_USER_DATA, userRowRead(row));
      }
      const parked: EventToPark[] = [];
      const park = (c: ClassifiedEvent, state: 'failed' | 'held', error: string, attempts: number) => {
        const entry = eventToPark(c, { state, error, attempts, source });
        const userId = userIdOf(c);
        // The user is forgotten: whatever this event carries is not kept.
        parked.push(userId !== undefined && current.get(userId)?.STATUS === 'forgotten' ? withoutPersonalData(entry) : entry);
      };
      /** Streams whose user this batch forgot: their quarantine is erased, in the batch and in the table. */
      const forgotten = new Set<string>();
      const forget = (streamId: string) => {
        forgotten.add(streamId);
        blocked.delete(streamId);
        for (const [i, entry] of parked.entries()) if (entry.streamId === streamId) parked[i] = erasedEntry(entry);
      };
      const changed = new Map<string, UserRow>();
      let written = 0;
      for (const c of classified) {
        const userId = userIdOf(c);
        const before = userId === undefined ? undefined : current.get(userId);
        const admission = admit(c, before?.VERSION, { blocked });
        if (admission.action === 'skip') continue;
        if (admission.action !== 'apply') {
          park(c, admission.action === 'hold' ? 'held' : 'failed', admission.error, admission.action === 'hold' ? 0 : 1);
          if (admission.action === 'park') blocked.set(c.streamId, c.revision);
          continue;
        }
        // Admitted, so not poison.
        if (c.kind === 'poison') continue;
        if (!options.isolate) {
          const after = fold(before, c.event, c.revision);
          if (after && after !== before) {
            current.set(c.userId, after);
            changed.set(c.userId, after);
          }
          if (isForgetting(c)) forget(c.streamId);
          continue;
        }
        const attempts = options.attempts ?? 1;
        for (let attempt = 1; ; attempt++) {
          try {
            const after = await applyInSavepoint(trx, before, c.event, c.revision, fold);
            if (after !== before) {
              current.set(c.userId, after!);
              written += 1;
            }
            if (isForgetting(c)) forget(c.streamId);
            break;
          } catch (error) {
            if (isRetriable(error)) throw error;
            if (attempt < attempts) {
              await sleep(backoffDelay(attempt));
              continue;
            }
            park(c, 'failed', parkedError(error), attempts);
            blocked.set(c.streamId, c.revision);
            break;
          }
        }
      }
      const rows = [...changed.values()];
      await upsertRows(trx, rows);
      if (parked.length > 0) await parkEvents(trx, projectionName, parked);
      if (forgotten.size > 0) await eraseParkedStreams(trx, projectionName, [...forgotten]);
      tombstones = [...forgotten].flatMap((streamId) => {
        const row = current.get(userIdFromStream(streamId) ?? '');
        return row?.STATUS === 'forgotten' ? [row] : [];
      });
      await writeCheckpoints(trx, checkpoints);
      return { rows: rows.length + written, parked: parked.length, ...(forgotten.size > 0 ? { forgotten: forgotten.size } : {}) };
    }, dialect.batchIsolation);
  } catch (error) {
    throw readDbError(error);
  }
  // Committed: reads waiting for these rows (read-your-writes) may look now.
  announceReadDbChange(db);
  // Best effort, never a reason to replay the batch: see `eraseLeftoverCopies` and `eraseFreedPages`.
  if (tombstones.length > 0) await eraseLeftoverCopies(db, tombstones);
  if (applied.forgotten !== undefined || walTruncationPending(db)) await eraseFreedPages(db);
  return applied;
}

/** The batch classified (`classify.ts`), with the users and streams it touches: what every way of applying it starts from. */
export function prepareBatch(events: readonly ProjectedEvent[], checkpoints: Checkpoints, fold: typeof userRowFrom = userRowFrom): PreparedBatch {
  const classified: ClassifiedEvent[] = [];
  const userIds = new Set<string>();
  const streamIds = new Set<string>();
  for (const e of events) {
    const c = classify(e);
    if (c === undefined) continue;
    classified.push(c);
    streamIds.add(c.streamId);
    const userId = userIdOf(c);
    if (userId !== undefined) userIds.add(userId);
  }
  return { classified, ids: [...userIds], streams: [...streamIds], checkpoints, fold };
}

/**
 * Applies one event to its user's row in a savepoint of `trx`, so that a failure
 * undoes only this event. Returns the row after it (`before` when it changed
 * nothing). An outage or a lock conflict comes back as the retriable
 * StoreUnavailableError: it says nothing about the event, and the caller tries
 * the whole transaction again; any other error is the event's own.
 */
export async function applyInSavepoint(
  trx: Knex.Transaction,
  before: UserRow | undefined,
  event: UserEvent,
  revision: number,
  fold: typeof userRowFrom,
): Promise<UserRow | undefined> {
  try {
    const after = fold(before, event, revision);
    if (!after || after === before) return before;
    await trx.transaction((savepoint) => upsertRows(savepoint, [after]));
    return after;
  } catch (error) {
    throw readDbError(error);
  }
}

/**
 * Writes rows, each only over an older VERSION of itself. The batch read them under its locks, but
 * a row that did not exist then was locked by nothing (READ COMMITTED on MariaDB): another projector
 * (two members on one partition during a rebalance, a batch in isolation sleeping between attempts)
 * may have inserted it further on meanwhile, and a plain upsert would write it back.
 */
export async function upsertRows(trx: Knex, rows: readonly UserRow[]): Promise<void> {
  const mariadb = readDbDialect(trx).kind === 'mariadb';
  for (let i = 0; i < rows.length; i += rowChunk) {
    const insert = trx(userDataTable).insert(rows.slice(i, i + rowChunk)).onConflict('ID_USER_DATA');
    if (mariadb) await insert.merge(guardedMerge(trx));
    else await insert.merge().where(`${userDataTable}.VERSION`, '<', trx.ref('excluded.VERSION'));
  }
}

/** MariaDB's ON DUPLICATE KEY UPDATE, column by column only over an older VERSION; VERSION last (assigned left to right). */
function guardedMerge(trx: Knex): Record<string, Knex.Raw> {
  const merge: Record<string, Knex.Raw> = {};
  for (const column of userDataColumns) {
    if (column !== 'ID_USER_DATA' && column !== 'VERSION') merge[column] = trx.raw('IF(VALUES(VERSION) > VERSION, VALUES(??), ??)', [column, column]);
  }
  merge.VERSION = trx.raw('GREATEST(VERSION, VALUES(VERSION))');
  return merge;
}

/**
 * After a batch that forgot users has committed: their rows in the tables a rebuild may have
 * left behind (`USER_DATA_REBUILD` of a run that died, `USER_DATA_OLD` whose drop after a swap
 * failed) become the same tombstones, so the names and emails do not outlive the forget there
 * until the next rebuild drops those tables. A rebuild running now writes its own rows over
 * these and folds the forget itself before it swaps. Best effort: logged by nobody, never a
 * reason to replay the batch; the next rebuild drops the tables whatever they hold.
 */
export async function eraseLeftoverCopies(db: Knex, tombstones: readonly UserRow[]): Promise<void> {
  try {
    for (const table of rebuildLeftovers) {
      if (!(await db.schema.hasTable(table))) continue;
      for (const { ID_USER_DATA, ...tombstone } of tombstones) await db(table).where({ ID_USER_DATA }).update(tombstone);
    }
  } catch {
    // The table went meanwhile (a rebuild dropped or swapped it), or the read DB is away: see above.
  }
}
