import type { Checkpoints } from '../shared/event-feed/port.js';
import type { UserRow } from '../shared/read-model/user-row.js';
import { admit, isForgetting } from './admit.js';
import { userIdOf, type ClassifiedEvent } from './classify.js';
import type { userRowFrom } from './user-row.js';

/**
 * What the prepared batch paths (`sqlite-batch.ts`, `mariadb-batch.ts`) share: the
 * batch as `applyBatch` hands it over, and the fold between their reads and their
 * writes.
 */

/** USER_DATA's columns in the order both prepared paths write them. */
export const userDataColumns = ['ID_USER_DATA', 'NAME', 'EMAIL', 'STATUS', 'DATE_REGISTER', 'DATE_VALIDATED', 'DATE_DEACTIVATED', 'DATE_UPDATED', 'VERSION'] as const;

/** A batch as `applyBatch` has it: its events classified, the users and streams they touch, the feed's checkpoints. */
export interface PreparedBatch {
  classified: readonly ClassifiedEvent[];
  /** The user ids of the batch's streams. */
  ids: readonly string[];
  streams: readonly string[];
  checkpoints: Checkpoints;
  fold: typeof userRowFrom;
}

/**
 * The rows the batch changes, folded over `current` (the batch's rows as read, by
 * user id; updated in place), with `blocked` the quarantine of its streams; or
 * undefined when the batch needs the full path (an event to park or hold, a
 * UserForgotten), having decided nothing.
 *
 * `carried`: the users whose rows in `current` were not read under this batch's lock
 * but taken from the batch before it, as they stand once that one commits. Something
 * else may have moved such a row further meanwhile (`dead-letters retry` applying a
 * user's parked events), and a fold over the older row would write a newer VERSION
 * without what came between. So an event that does not follow such a row's VERSION
 * directly sends the batch to the full path, which reads the row afresh.
 */
export function foldPrepared(
  batch: PreparedBatch,
  current: Map<string, UserRow>,
  blocked: ReadonlyMap<string, number>,
  carried?: ReadonlyMap<string, UserRow>,
): UserRow[] | undefined {
  const changed = new Map<string, UserRow>();
  for (const c of batch.classified) {
    const userId = userIdOf(c);
    const before = userId === undefined ? undefined : current.get(userId);
    const admission = admit(c, before?.VERSION, { blocked });
    if (admission.action === 'skip') continue;
    if (admission.action !== 'apply' || c.kind === 'poison' || isForgetting(c)) return undefined;
    if (before !== undefined && carried?.has(before.ID_USER_DATA) && c.revision !== before.VERSION + 1) return undefined;
    const after = batch.fold(before, c.event, c.revision);
    if (after && after !== before) {
      current.set(c.userId, after);
      changed.set(c.userId, after);
    }
  }
  return [...changed.values()];
}
