import type { LoggedEvent } from '../shared/event-store/port.js';
import type { UserEvent } from '../shared/user-events.js';
import { eventToPark } from './apply-batch.js';
import { classify, type ClassifiedEvent } from './classify.js';
import type { ProjectedEvent } from '../shared/event-feed/port.js';
import { erasedEntry, withoutPersonalData, type EventToPark } from '../shared/read-model/dead-letters.js';
import type { ShadowUserData } from './shadow-table.js';
import { userRowFrom } from './user-row.js';
import { admit, isForgetting } from './admit.js';
import type { UserRow } from '../shared/read-model/user-row.js';

/** What the live projector has quarantined: streams blocked from a revision on, and events skipped for good. */
export interface Quarantined {
  blocked: Map<string, number>;
  /** `stream@revision` */
  skipped: Set<string>;
}

const toPark = (c: ClassifiedEvent, state: 'failed' | 'held', error: string, position: string | undefined): EventToPark =>
  eventToPark(c, { state, error, attempts: state === 'failed' ? 1 : 0, source: 'rebuild', position });

interface Held {
  row: UserRow;
  changedAt: number;
  dirty: boolean;
}

const byId = (a: UserRow, b: UserRow) => (a.ID_USER_DATA < b.ID_USER_DATA ? -1 : a.ID_USER_DATA > b.ID_USER_DATA ? 1 : 0);

/** Writes to the shadow table, at most one of them in the background at a time. */
function shadowWriter(shadow: ShadowUserData) {
  let inFlight: Promise<void> | undefined;
  let shadowEmpty = true;
  let written = 0;

  /** Writes rows; `newRows` when none of them can be in the shadow yet (it is empty, or each row is written once). */
  async function write(batch: UserRow[], position: string | undefined, newRows = shadowEmpty): Promise<void> {
    batch.sort(byId);
    if (batch.length > 0) shadowEmpty = false;
    written += batch.length;
    await shadow.write(batch, position, { newRows });
  }

  return {
    write,
    /** Row writes so far (a row written twice counts twice). */
    get written() {
      return written;
    },
    /** Whether a background write was started and not yet awaited. */
    get busy() {
      return inFlight !== undefined;
    },
    /** Starts a write the fold does not wait for; settle() awaits it. */
    inBackground(batch: UserRow[], position: string | undefined, newRows?: boolean): void {
      const writing = write(batch, position, newRows);
      // Awaited by settle(); meanwhile a failure must not count as unhandled.
      writing.catch(() => {});
      inFlight = writing;
    },
    async settle(): Promise<void> {
      const writing = inFlight;
      inFlight = undefined;
      await writing;
    },
  };
}

type ShadowWriter = ReturnType<typeof shadowWriter>;

/**
 * The quarantine as the rebuild applies it (`admit`, the live projector's rule):
 * the events it parks, recorded at the swap, and streams newly blocked by them.
 * As in `applyBatch`, a UserForgotten unblocks its stream and erases what the
 * rebuild parked of it, and what is parked after it keeps no payload.
 */
function rebuildAdmission(quarantine: Quarantined) {
  const parked: EventToPark[] = [];
  /** Streams whose user is forgotten as of the events folded so far. */
  const forgotten = new Set<string>();
  const park = (entry: EventToPark) => parked.push(forgotten.size > 0 && forgotten.has(entry.streamId) ? withoutPersonalData(entry) : entry);
  return {
    parked,
    forgotten: forgotten as ReadonlySet<string>,
    /** The event to apply, if any: a stream with a parked event waits behind it, a poison event is parked, a skipped one is passed over. */
    admitted: (recorded: ProjectedEvent, position: string | undefined): AdmittedEvent | undefined => {
      const c = classify(recorded);
      if (!c) return undefined;
      // Rows are folded by `userRowFrom`, which passes over what a row already reflects: no VERSION here.
      const admission = admit(c, undefined, quarantine);
      if (admission.action === 'apply' && c.kind === 'event') {
        if (isForgetting(c)) {
          forgotten.add(c.streamId);
          quarantine.blocked.delete(c.streamId);
          for (const [i, entry] of parked.entries()) if (entry.streamId === c.streamId) parked[i] = erasedEntry(entry);
        }
        return c;
      }
      if (admission.action === 'hold') park(toPark(c, 'held', admission.error, position));
      if (admission.action === 'park') {
        park(toPark(c, 'failed', admission.error, position));
        quarantine.blocked.set(c.streamId, c.revision);
      }
      return undefined;
    },
  };
}

type AdmittedEvent = Extract<ClassifiedEvent, { kind: 'event' }>;
type Admitted = (recorded: ProjectedEvent, position: string | undefined) => AdmittedEvent | undefined;

/**
 * The stream-ordered writer: folds a log read stream after stream (`readAllByStream`)
 * into an empty shadow. Each row is complete when the next stream begins, so it goes
 * straight into the next write; memory holds one row and one batch.
 */
function streamOrderedRows(deps: { writer: ShadowWriter; admitted: Admitted; rowsPerWrite: number }) {
  const { writer, admitted, rowsPerWrite } = deps;
  const state = {
    /** The stream being folded. */
    current: undefined as { userId: string; row: UserRow | undefined } | undefined,
    /** Rows complete but not yet written. */
    complete: [] as UserRow[],
    created: 0,
  };

  function completeCurrent(): void {
    if (state.current?.row) {
      state.complete.push(state.current.row);
      state.created += 1;
    }
  }

  /** Starts a background write of the complete rows, once the previous one is done. */
  async function writeComplete(position: string | undefined): Promise<void> {
    await writer.settle();
    const batch = state.complete;
    state.complete = [];
    // Stream after stream, every row is written once, into a shadow that was empty when the read began.
    writer.inBackground(batch, position, true);
  }

  return {
    get created() {
      return state.created;
    },
    /** Folds a page; a stream may go on in the next page. */
    async fold(page: readonly LoggedEvent[]): Promise<void> {
      for (const recorded of page) {
        const c = admitted(recorded, undefined);
        if (!c) continue;
        if (state.current?.userId !== c.userId) {
          completeCurrent();
          state.current = { userId: c.userId, row: undefined };
        }
        state.current.row = userRowFrom(state.current.row, c.event, c.revision) ?? state.current.row;
      }
      if (state.complete.length >= rowsPerWrite) await writeComplete(undefined);
    },
    /** The read is over: writes the last rows (with the position the read stopped at). */
    async end(position: string | undefined): Promise<void> {
      completeCurrent();
      state.current = undefined;
      await writeComplete(position);
      await writer.settle();
    },
  };
}

/**
 * The rows a rebuild holds in memory while it folds the log with the pure
 * `userRowFrom`, and how they reach the shadow table.
 *
 * - At most `maxRows` rows are held; past that every changed row is written
 *   (with the log position, in one transaction) and memory is cleared. A row
 *   that a later event changes is then read back from the shadow first.
 * - With `writeBehind` (a database on another process, e.g. MariaDB), rows that
 *   have not changed for a while are written in the background while folding
 *   goes on, so the database's work overlaps the fold instead of following it.
 *   A row changed again after being written is simply written again (upsert).
 * - A log read stream after stream (`foldByStream`, then `endByStream`) needs
 *   none of that: it goes to the stream-ordered writer (`streamOrderedRows`).
 */
export function rebuildRows(deps: {
  shadow: ShadowUserData;
  maxRows: number;
  /**
   * `hot`: rows changed within the last `hot` events are kept back (likely to change
   * again), and background writes start once more than `hot` rows are unwritten;
   * `batchRows`: rows per background write.
   */
  writeBehind?: { hot: number; batchRows: number };
  /** The quarantine as the rebuild found it; streams newly blocked by the fold are added. */
  quarantine?: Quarantined;
}) {
  const { shadow, maxRows, writeBehind } = deps;
  const writer = shadowWriter(shadow);
  const { parked, forgotten, admitted } = rebuildAdmission(deps.quarantine ?? { blocked: new Map(), skipped: new Set() });
  // Complete rows wait for a write of a good size, never more than `maxRows` of them.
  const rowsPerWrite = Math.min(maxRows, writeBehind?.batchRows ?? Math.max(100, Math.floor(maxRows / 20)));
  const byStream = streamOrderedRows({ writer, admitted, rowsPerWrite });
  const hotEvents = writeBehind?.hot ?? 0;
  // Every row held, as of the last event folded, with when it last changed and whether it is unwritten.
  const rows = new Map<string, Held>();
  /** The write-behind cache's state. */
  const cache = {
    /** Rows that became dirty, oldest first; an entry is stale once its row was written (then `dirty` is false). */
    queue: [] as Held[],
    head: 0,
    dirtyCount: 0,
    /** Events folded so far: a row changed within the last `hot` of them is likely to change again. */
    sequence: 0,
    /** Whether rows were ever dropped from memory (then a later event may need one back from the shadow). */
    evicted: false,
    created: 0,
  };

  function markWritten(held: Held, batch: UserRow[]): void {
    held.dirty = false;
    cache.dirtyCount -= 1;
    batch.push(held.row);
  }

  /**
   * Writes rows that have not changed for a while in the background; the fold goes
   * on meanwhile. Rows met at the front of the queue that are still hot go to its back.
   */
  function writeColdRowsBehind(count: number): void {
    const batch: UserRow[] = [];
    const coldBefore = cache.sequence - hotEvents;
    for (let scanned = 0; batch.length < count && cache.head < cache.queue.length && scanned < 4 * count; scanned++) {
      const held = cache.queue[cache.head++]!;
      if (!held.dirty) continue;
      if (held.changedAt < coldBefore) markWritten(held, batch);
      else cache.queue.push(held);
    }
    if (cache.head > 65_536 && cache.head * 2 > cache.queue.length) {
      cache.queue = cache.queue.slice(cache.head);
      cache.head = 0;
    }
    writer.inBackground(batch, undefined);
  }

  function apply(event: UserEvent, revision: number): void {
    const userId = event.data.userId;
    const held = rows.get(userId);
    const before = held?.row;
    const after = userRowFrom(before, event, revision);
    if (!after || after === before) return;
    cache.sequence += 1;
    if (!held) {
      cache.created += 1;
      const fresh: Held = { row: after, changedAt: cache.sequence, dirty: true };
      rows.set(userId, fresh);
      cache.queue.push(fresh);
      cache.dirtyCount += 1;
      return;
    }
    held.row = after;
    held.changedAt = cache.sequence;
    if (!held.dirty) {
      held.dirty = true;
      cache.queue.push(held);
      cache.dirtyCount += 1;
    }
  }

  return {
    get created() {
      return cache.created + byStream.created;
    },
    /** Events the fold parked (poison ones, and those held behind a parked one). */
    get parked(): readonly EventToPark[] {
      return parked;
    },
    /** Row writes so far (a row written twice counts twice). */
    get written() {
      return writer.written;
    },
    /**
     * Streams whose user the fold found forgotten: at the swap their entries in the
     * live quarantine must be erased too (`eraseParkedStreams`), as the live
     * projector would have when it applied the UserForgotten.
     */
    get forgotten(): ReadonlySet<string> {
      return forgotten;
    },

    async fold(page: readonly LoggedEvent[], position: string | undefined): Promise<void> {
      const toApply: Array<{ event: UserEvent; revision: number }> = [];
      const unknown = new Set<string>();
      for (const recorded of page) {
        const c = admitted(recorded, position);
        if (!c) continue;
        toApply.push({ event: c.event, revision: c.revision });
        // A row flushed out of memory earlier must come back before a later event can change it.
        if (cache.evicted && c.revision > 0 && !rows.has(c.userId)) unknown.add(c.userId);
      }
      if (unknown.size > 0) {
        for (const row of await shadow.read([...unknown])) {
          if (!rows.has(row.ID_USER_DATA)) rows.set(row.ID_USER_DATA, { row, changedAt: cache.sequence, dirty: false });
        }
      }
      for (const { event, revision } of toApply) apply(event, revision);
      if (rows.size > maxRows) await this.flush(position);
      else if (writeBehind && cache.dirtyCount >= writeBehind.hot + writeBehind.batchRows) {
        // At most one write in the background; wait for it only when the database falls behind.
        if (!writer.busy) writeColdRowsBehind(writeBehind.batchRows);
        else if (cache.dirtyCount >= writeBehind.hot + 4 * writeBehind.batchRows) await writer.settle();
      }
    },

    /**
     * Folds a page of a stream-ordered read of the log (`readAllByStream`), on an
     * empty shadow and before any `fold`. A stream may go on in the next page.
     */
    foldByStream: (page: readonly LoggedEvent[]): Promise<void> => byStream.fold(page),

    /** The stream-ordered read is over: writes the last rows (with the position the read stopped at). */
    async endByStream(position: string | undefined): Promise<void> {
      await byStream.end(position);
      cache.evicted = true;
    },

    /** Writes every changed row with the position they reflect, and empties memory. */
    async flush(position: string | undefined): Promise<void> {
      await writer.settle();
      const batch: UserRow[] = [];
      for (let i = cache.head; i < cache.queue.length; i++) if (cache.queue[i]!.dirty) markWritten(cache.queue[i]!, batch);
      await writer.write(batch, position);
      cache.queue = [];
      cache.head = 0;
      rows.clear();
      cache.evicted = true;
    },

    /** Waits for a background write, whatever its outcome (before a failure's cleanup). */
    async drain(): Promise<void> {
      await writer.settle().catch(() => {});
    },
  };
}

export type RebuildRows = ReturnType<typeof rebuildRows>;
