import type { RecordedEvent } from '../shared/event-store/port.js';
import type { UserEvent } from '../shared/user-events.js';
import { toUserEvent } from './apply-batch.js';
import type { ShadowUserData } from './shadow-table.js';
import { userRowFrom, type UserRow } from './user-row.js';

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
 */
export function rebuildRows(deps: { shadow: ShadowUserData; maxRows: number; writeBehind?: { hotRows: number; batchRows: number } }) {
  const { shadow, maxRows, writeBehind } = deps;
  // Every row held, as of the last event folded.
  const rows = new Map<string, UserRow>();
  // The rows changed since they were last written, least recently changed first.
  const dirty = new Map<string, UserRow>();
  let inFlight: Promise<void> | undefined;
  let shadowEmpty = true;
  // Whether rows were ever dropped from memory (then a later event may need one back from the shadow).
  let evicted = false;
  let created = 0;
  let written = 0;

  async function write(batch: UserRow[], position: string | undefined): Promise<void> {
    batch.sort(byId);
    const empty = shadowEmpty;
    if (batch.length > 0) shadowEmpty = false;
    written += batch.length;
    await shadow.write(batch, position, { empty });
  }

  async function settle(): Promise<void> {
    const writing = inFlight;
    inFlight = undefined;
    await writing;
  }

  /** Writes the least recently changed rows in the background; the fold goes on meanwhile. */
  function writeColdRowsBehind(count: number): void {
    const batch: UserRow[] = [];
    for (const [id, row] of dirty) {
      if (batch.length >= count) break;
      batch.push(row);
      dirty.delete(id);
    }
    const writing = write(batch, undefined);
    // Awaited by settle(); meanwhile a failure must not count as unhandled.
    writing.catch(() => {});
    inFlight = writing;
  }

  function apply(event: UserEvent, revision: number): void {
    const userId = event.data.userId;
    const before = rows.get(userId);
    const after = userRowFrom(before, event, revision);
    if (after && after !== before) {
      if (!before) created += 1;
      rows.set(userId, after);
      // Re-inserting keeps `dirty` in order of last change.
      dirty.delete(userId);
      dirty.set(userId, after);
    }
  }

  return {
    get created() {
      return created;
    },
    /** Row writes so far (a row written twice counts twice). */
    get written() {
      return written;
    },

    async fold(page: readonly RecordedEvent[], position: string | undefined): Promise<void> {
      if (!evicted) {
        for (const recorded of page) {
          const event = toUserEvent(recorded);
          if (event) apply(event, recorded.revision);
        }
      } else {
        const userEvents: Array<{ event: UserEvent; revision: number }> = [];
        const unknown = new Set<string>();
        for (const recorded of page) {
          const event = toUserEvent(recorded);
          if (!event) continue;
          userEvents.push({ event, revision: recorded.revision });
          // A row flushed out of memory earlier must come back before a later event can change it.
          if (recorded.revision > 0 && !rows.has(event.data.userId)) unknown.add(event.data.userId);
        }
        if (unknown.size > 0) {
          for (const row of await shadow.read([...unknown])) if (!rows.has(row.ID_USER_DATA)) rows.set(row.ID_USER_DATA, row);
        }
        for (const { event, revision } of userEvents) apply(event, revision);
      }
      if (rows.size > maxRows) await this.flush(position);
      else if (writeBehind && dirty.size >= writeBehind.hotRows + writeBehind.batchRows) {
        // At most one write in the background; wait for it only when the database falls behind.
        if (inFlight === undefined) writeColdRowsBehind(writeBehind.batchRows);
        else if (dirty.size >= writeBehind.hotRows + 4 * writeBehind.batchRows) await settle();
      }
    },

    /** Writes every changed row with the position they reflect, and empties memory. */
    async flush(position: string | undefined): Promise<void> {
      await settle();
      await write([...dirty.values()], position);
      dirty.clear();
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
