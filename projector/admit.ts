import type { ClassifiedEvent } from './classify.js';

/** What the quarantine knows when an event is admitted: streams blocked from a revision on, and events skipped for good. */
export interface QuarantineView {
  /** stream -> the revision of its parked event; that revision and every later one wait behind it. */
  blocked: ReadonlyMap<string, number>;
  /** `stream@revision` of events an operator skipped (the rebuild passes them over). */
  skipped?: ReadonlySet<string>;
}

/**
 * What to do with an event: `apply` it; `skip` it (applied already, or skipped by an
 * operator: nothing to apply, nothing to park); `hold` it behind its stream's parked
 * event; `park` it as failed (poison), which blocks its stream from its revision on.
 */
export type Admission = { action: 'apply' } | { action: 'skip' } | { action: 'hold'; error: string } | { action: 'park'; error: string };

const apply: Admission = { action: 'apply' };
const skip: Admission = { action: 'skip' };

/** Whether the event forgets its user (UserForgotten): it is applied even on a blocked stream, and erases the stream's quarantine. */
export const isForgetting = (c: ClassifiedEvent): boolean => c.kind === 'event' && c.event.type === 'UserForgotten';

/**
 * The quarantine's admission rule, one for the live projector and the rebuild. Pure:
 * the caller parks what it is told to and, for `park`, blocks the stream. A
 * UserForgotten is applied even on a blocked stream: the caller then erases the
 * stream's quarantined entries (`eraseParkedStreams`) and unblocks it.
 * `version` is the VERSION of the event's row, if the caller has the row.
 */
export function admit(c: ClassifiedEvent, version: number | undefined, quarantine: QuarantineView): Admission {
  // Applied already (a duplicate or a replay). A message too broken to tell its revision (-1) is never taken for one.
  if (version !== undefined && c.revision >= 0 && c.revision <= version) return skip;
  const { blocked, skipped } = quarantine;
  if (skipped !== undefined && skipped.size > 0 && skipped.has(`${c.streamId}@${c.revision}`)) return skip;
  const parkedFrom = blocked.size > 0 ? blocked.get(c.streamId) : undefined;
  // Forgetting overrides the quarantine: never held. The caller erases the stream's
  // quarantined entries and unblocks it in the same transaction (see `isForgetting`).
  if (parkedFrom !== undefined && isForgetting(c)) return apply;
  if (parkedFrom !== undefined && c.revision >= parkedFrom) return { action: 'hold', error: `held behind ${c.streamId}@${parkedFrom}, which is parked` };
  if (c.kind === 'poison') return { action: 'park', error: c.error };
  return apply;
}
