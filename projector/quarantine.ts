import type { Knex } from 'knex';
import { dbNow, eraseFreedPages, readDbError } from '../shared/read-db.js';
import { readDbDialect } from '../shared/read-model/dialect.js';
import { isRetriable } from '../shared/retry.js';
import { userIdFromStream, type UserEvent } from '../shared/user-events.js';
import { applyInSavepoint, eraseLeftoverCopies } from './apply-batch.js';
import { classify } from './classify.js';
import { projectionName, userDataTable, type UserRow } from '../shared/read-model/user-row.js';
import { deadLetterTable, erasedError, eraseParkedStreams, listParked, parkedError, type ParkedEvent } from '../shared/read-model/dead-letters.js';
import { assertNoRebuild } from './projection-control.js';
import { userRowFrom } from './user-row.js';

export interface Release {
  streamId: string;
  /** Parked events now applied (or found applied already) and removed from quarantine. */
  applied: number;
  /** Marked skipped: left out of the read model for good, kept as a record. */
  skipped: number;
  /** Still parked: the head failed again (its new error is recorded), the rest wait behind it. */
  stillParked: number;
  error?: string;
}

const parse = (text: string): unknown => {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
};

/**
 * The operator's side of the quarantine: retry a stream's parked events in
 * revision order (after a fix is deployed, say), or skip the failed one at the
 * head and release the events held behind it. One transaction per stream, with
 * the user's row locked, so the live projector and the release cannot interleave.
 */
export function quarantine(deps: { db: Knex; fold?: typeof userRowFrom }) {
  const { db } = deps;
  const fold = deps.fold ?? userRowFrom;

  async function releaseOnce(streamId: string, skipId?: number): Promise<Release> {
    const result: Release = { streamId, applied: 0, skipped: 0, stillParked: 0 };
    /** The user's row as a tombstone, when this release forgot them. */
    let erased: UserRow | undefined;
    await db.transaction(async (trx) => {
      erased = undefined;
      await assertNoRebuild(trx, projectionName);
      const dialect = readDbDialect(trx);
      const parkedQuery = trx<ParkedEvent>(deadLetterTable)
        .where({ PROJECTION: projectionName, STREAM_ID: streamId })
        .whereIn('STATE', ['failed', 'held'])
        .orderBy('REVISION');
      const parked = await dialect.lockForUpdate(parkedQuery);
      const userId = userIdFromStream(streamId);
      let row: UserRow | undefined;
      if (userId !== undefined) {
        const rowQuery = trx<UserRow>(userDataTable).where({ ID_USER_DATA: userId });
        const found = await dialect.lockForUpdate(rowQuery).first();
        row = found && { ...found, VERSION: Number(found.VERSION) };
      }
      const now = dbNow();
      // The user is forgotten: nothing parked of the stream is ever applied (its payload may be
      // personal data, or erased already); it is erased and skipped, as the rebuild then passes it over.
      if (row?.STATUS === 'forgotten' || parked.some((entry) => entry.ERROR === erasedError)) {
        await eraseParkedStreams(trx, projectionName, [streamId]);
        result.skipped += parked.length;
        return;
      }
      for (const [index, entry] of parked.entries()) {
        const id = Number(entry.ID);
        if (id === skipId) {
          if (entry.EVENT_TYPE === 'UserForgotten' && userId !== undefined) {
            // A person's erasure is never left out: skipping a forget that fails (its payload unreadable, its
            // row write failing) erases the row as the forget would have, and the rest of the stream with it.
            // Left out, the name and email would stay readable until a rebuild, with the forget long answered.
            const stored = parse(entry.DATA) as { occurredAt?: unknown } | undefined;
            const occurredAt = typeof stored?.occurredAt === 'string' && !Number.isNaN(Date.parse(stored.occurredAt)) ? stored.occurredAt : new Date().toISOString();
            const erasure: UserEvent = { type: 'UserForgotten', data: { userId, occurredAt } };
            // An entry parked without its revision (-1: a message that could not be read) still moves the row on.
            erased = await applyInSavepoint(trx, row, erasure, Math.max(Number(entry.REVISION), (row?.VERSION ?? -1) + 1), fold);
            await eraseParkedStreams(trx, projectionName, [streamId]);
            result.skipped += parked.length - index;
            return;
          }
          await trx(deadLetterTable).where({ ID: id }).update({ STATE: 'skipped', DATE_UPDATED: now });
          result.skipped += 1;
          continue;
        }
        const revision = Number(entry.REVISION);
        const classified = classify({ streamId, revision, type: entry.EVENT_TYPE, data: parse(entry.DATA) });
        let failure: string | undefined;
        if (!classified) failure = `${streamId} is not a user stream`;
        else if (classified.kind === 'poison') failure = parkedError(classified.error);
        else if (!(row && revision <= row.VERSION)) {
          try {
            row = await applyInSavepoint(trx, row, classified.event, revision, fold);
          } catch (error) {
            if (isRetriable(error)) throw error;
            failure = parkedError(error);
          }
          // A UserForgotten parked before forgetting overrode the quarantine: the rest of the stream is erased.
          if (failure === undefined && classified.event.type === 'UserForgotten') {
            erased = row;
            await trx(deadLetterTable).where({ ID: id }).del();
            result.applied += 1;
            await eraseParkedStreams(trx, projectionName, [streamId]);
            result.skipped += parked.length - index - 1;
            return;
          }
        }
        if (failure !== undefined) {
          await trx(deadLetterTable)
            .where({ ID: id })
            .update({ STATE: 'failed', ERROR: failure, ATTEMPTS: Number(entry.ATTEMPTS) + 1, DATE_UPDATED: now });
          result.error = failure;
          result.stillParked = parked.length - index;
          return;
        }
        await trx(deadLetterTable).where({ ID: id }).del();
        result.applied += 1;
      }
    });
    // Committed: as after a batch that forgot them, their copies in a rebuild's leftover tables and, on the
    // embedded read DB, the old page images in the WAL go too (best effort, see `applyBatch`).
    if (erased?.STATUS === 'forgotten') {
      await eraseLeftoverCopies(db, [erased]);
      await eraseFreedPages(db);
    }
    return result;
  }

  /**
   * Retries the stream's parked events in order; with `skipId`, that failed
   * event is marked skipped first. Runs again if the live projector held back
   * one more event of the stream meanwhile, until nothing is left or the head
   * fails again.
   */
  async function release(streamId: string, skipId?: number): Promise<Release> {
    const total: Release = { streamId, applied: 0, skipped: 0, stillParked: 0 };
    // Nothing parked for the stream is nothing to do, rebuild or not (the transaction below refuses during one).
    let parked: ParkedEvent[];
    try {
      parked = await listParked(db, projectionName, { stream: streamId, limit: 1 });
    } catch (error) {
      throw readDbError(error);
    }
    if (parked.length === 0) return total;
    for (let round = 0; round < 5; round++) {
      let once: Release;
      try {
        once = await releaseOnce(streamId, round === 0 ? skipId : undefined);
      } catch (error) {
        throw readDbError(error);
      }
      total.applied += once.applied;
      total.skipped += once.skipped;
      total.stillParked = once.stillParked;
      if (once.error !== undefined) total.error = once.error;
      if (once.error !== undefined || once.applied + once.skipped === 0) break;
    }
    return total;
  }

  return {
    retry: (streamId: string) => release(streamId),

    /** Skips a failed event (by its ID in the dead-letter table) and releases what was held behind it. */
    async skip(id: number): Promise<Release> {
      const entry = await db<ParkedEvent>(deadLetterTable).where({ ID: id, PROJECTION: projectionName }).first();
      if (!entry) throw new Error(`no parked event with ID ${id}`);
      if (entry.STATE !== 'failed') {
        throw new Error(`parked event ${id} is ${entry.STATE}; only a failed event can be skipped (held ones are released by retrying or skipping the failed one before them)`);
      }
      return release(entry.STREAM_ID, id);
    },

    /** Retries every stream that has a failed event. */
    async retryAll(): Promise<Release[]> {
      const streams = await db(deadLetterTable)
        .where({ PROJECTION: projectionName })
        .whereIn('STATE', ['failed', 'held'])
        .distinct<{ STREAM_ID: string }[]>('STREAM_ID')
        .orderBy('STREAM_ID');
      const results: Release[] = [];
      for (const { STREAM_ID } of streams) results.push(await release(STREAM_ID));
      return results;
    },
  };
}
