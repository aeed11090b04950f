import type { LoggedEvent } from '../shared/event-store/port.js';
import type { UserEvent } from '../shared/user-events.js';
import { classify, eventToPark, type ClassifiedEvent } from './apply-batch.js';
import type { ProjectedEvent } from '../shared/event-feed/port.js';
import type { EventToPark } from '../shared/read-model/dead-letters.js';
import type { ShadowUserData } from './shadow-table.js';
import { userRowFrom } from './user-row.js';
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
 *   none of that: each row is complete when the next stream begins, so it goes
 *   straight into the next write, and memory holds one row and one batch.
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
  const quarantine: Quarantined = deps.quarantine ?? { blocked: new Map(), skipped: new Set() };
  // Events the fold parked, as the live projector would have: recorded at the swap.
  const parked: EventToPark[] = [];
  // Every row held, as of the last event folded, with when it last changed and whether it is unwritten.
  const rows = new Map<string, Held>();
  // Rows that became dirty, oldest first; an entry is stale once its row was written (then `dirty` is false).
  let queue: Held[] = [];
  let head = 0;
  let dirtyCount = 0;
  // Events folded so far: a row changed within the last `hot` of them is likely to change again.
  let sequence = 0;
  const hotEvents = writeBehind?.hot ?? 0;
  let inFlight: Promise<void> | undefined;
  let shadowEmpty = true;
  // Whether rows were ever dropped from memory (then a later event may need one back from the shadow).
  let evicted = false;
  let created = 0;
  let written = 0;
  // The stream-ordered fold: the stream being folded, and rows complete but not yet written.
  let current: { userId: string; row: UserRow | undefined } | undefined;
  let complete: UserRow[] = [];
  // Complete rows wait for a write of a good size, never more than `maxRows` of them.
  const rowsPerWrite = Math.min(maxRows, writeBehind?.batchRows ?? Math.max(100, Math.floor(maxRows / 20)));

  /** Writes rows; `newRows` when none of them can be in the shadow yet (it is empty, or each row is written once). */
  async function write(batch: UserRow[], position: string | undefined, newRows = shadowEmpty): Promise<void> {
    batch.sort(byId);
    if (batch.length > 0) shadowEmpty = false;
    written += batch.length;
    await shadow.write(batch, position, { newRows });
  }

  /** Starts a write the fold does not wait for; settle() awaits it. */
  function writeInBackground(batch: UserRow[], position: string | undefined, newRows?: boolean): void {
    const writing = write(batch, position, newRows);
    // Awaited by settle(); meanwhile a failure must not count as unhandled.
    writing.catch(() => {});
    inFlight = writing;
  }

  async function settle(): Promise<void> {
    const writing = inFlight;
    inFlight = undefined;
    await writing;
  }

  function markWritten(held: Held, batch: UserRow[]): void {
    held.dirty = false;
    dirtyCount -= 1;
    batch.push(held.row);
  }

  /**
   * Writes rows that have not changed for a while in the background; the fold goes
   * on meanwhile. Rows met at the front of the queue that are still hot go to its back.
   */
  function writeColdRowsBehind(count: number): void {
    const batch: UserRow[] = [];
    const coldBefore = sequence - hotEvents;
    for (let scanned = 0; batch.length < count && head < queue.length && scanned < 4 * count; scanned++) {
      const held = queue[head++]!;
      if (!held.dirty) continue;
      if (held.changedAt < coldBefore) markWritten(held, batch);
      else queue.push(held);
    }
    if (head > 65_536 && head * 2 > queue.length) {
      queue = queue.slice(head);
      head = 0;
    }
    writeInBackground(batch, undefined);
  }

  /**
   * The event to apply, if any. As the live projector does: a stream with a parked
   * event waits behind it, a poison event is parked, a skipped one is passed over.
   */
  function admitted(recorded: ProjectedEvent, position: string | undefined): Extract<ClassifiedEvent, { kind: 'event' }> | undefined {
    const c = classify(recorded);
    const { blocked, skipped } = quarantine;
    if (!c || (skipped.size > 0 && skipped.has(`${c.streamId}@${c.revision}`))) return undefined;
    const parkedFrom = blocked.size > 0 ? blocked.get(c.streamId) : undefined;
    if (parkedFrom !== undefined && c.revision >= parkedFrom) {
      parked.push(toPark(c, 'held', `held behind ${c.streamId}@${parkedFrom}, which is parked`, position));
      return undefined;
    }
    if (c.kind === 'poison') {
      parked.push(toPark(c, 'failed', c.error, position));
      blocked.set(c.streamId, c.revision);
      return undefined;
    }
    return c;
  }

  function completeCurrent(): void {
    if (current?.row) {
      complete.push(current.row);
      created += 1;
    }
  }

  /** Starts a background write of the complete rows, once the previous one is done. */
  async function writeComplete(position: string | undefined): Promise<void> {
    await settle();
    const batch = complete;
    complete = [];
    // Stream after stream, every row is written once, into a shadow that was empty when the read began.
    writeInBackground(batch, position, true);
  }

  function apply(event: UserEvent, revision: number): void {
    const userId = event.data.userId;
    const held = rows.get(userId);
    const before = held?.row;
    const after = userRowFrom(before, event, revision);
    if (!after || after === before) return;
    sequence += 1;
    if (!held) {
      created += 1;
      const fresh: Held = { row: after, changedAt: sequence, dirty: true };
      rows.set(userId, fresh);
      queue.push(fresh);
      dirtyCount += 1;
      return;
    }
    held.row = after;
    held.changedAt = sequence;
    if (!held.dirty) {
      held.dirty = true;
      queue.push(held);
      dirtyCount += 1;
    }
  }

  return {
    get created() {
      return created;
    },
    /** Events the fold parked (poison ones, and those held behind a parked one). */
    get parked(): readonly EventToPark[] {
      return parked;
    },
    /** Row writes so far (a row written twice counts twice). */
    get written() {
      return written;
    },

    async fold(page: readonly LoggedEvent[], position: string | undefined): Promise<void> {
      const toApply: Array<{ event: UserEvent; revision: number }> = [];
      const unknown = new Set<string>();
      for (const recorded of page) {
        const c = admitted(recorded, position);
        if (!c) continue;
        toApply.push({ event: c.event, revision: c.revision });
        // A row flushed out of memory earlier must come back before a later event can change it.
        if (evicted && c.revision > 0 && !rows.has(c.userId)) unknown.add(c.userId);
      }
      if (unknown.size > 0) {
        for (const row of await shadow.read([...unknown])) {
          if (!rows.has(row.ID_USER_DATA)) rows.set(row.ID_USER_DATA, { row, changedAt: sequence, dirty: false });
        }
      }
      for (const { event, revision } of toApply) apply(event, revision);
      if (rows.size > maxRows) await this.flush(position);
      else if (writeBehind && dirtyCount >= writeBehind.hot + writeBehind.batchRows) {
        // At most one write in the background; wait for it only when the database falls behind.
        if (inFlight === undefined) writeColdRowsBehind(writeBehind.batchRows);
        else if (dirtyCount >= writeBehind.hot + 4 * writeBehind.batchRows) await settle();
      }
    },

    /**
     * Folds a page of a stream-ordered read of the log (`readAllByStream`), on an
     * empty shadow and before any `fold`. A stream may go on in the next page.
     */
    async foldByStream(page: readonly LoggedEvent[]): Promise<void> {
      for (const recorded of page) {
        const c = admitted(recorded, undefined);
        if (!c) continue;
        if (current?.userId !== c.userId) {
          completeCurrent();
          current = { userId: c.userId, row: undefined };
        }
        current.row = userRowFrom(current.row, c.event, c.revision) ?? current.row;
      }
      if (complete.length >= rowsPerWrite) await writeComplete(undefined);
    },

    /** The stream-ordered read is over: writes the last rows (with the position the read stopped at). */
    async endByStream(position: string | undefined): Promise<void> {
      completeCurrent();
      current = undefined;
      await writeComplete(position);
      await settle();
      evicted = true;
    },

    /** Writes every changed row with the position they reflect, and empties memory. */
    async flush(position: string | undefined): Promise<void> {
      await settle();
      const batch: UserRow[] = [];
      for (let i = head; i < queue.length; i++) if (queue[i]!.dirty) markWritten(queue[i]!, batch);
      await write(batch, position);
      queue = [];
      head = 0;
      rows.clear();
      evicted = true;
    },

    /** Waits for a background write, whatever its outcome (before a failure's cleanup). */
    async drain(): Promise<void> {
      await settle().catch(() => {});
    },
  };
}

export type RebuildRows = ReturnType<typeof rebuildRows>;
