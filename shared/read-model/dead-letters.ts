import type { Knex } from 'knex';
import { dbNow } from '../read-db.js';
import { readDbDialect } from './dialect.js';

/**
 * PROJECTION_DEAD_LETTER: where the projector parks an event it cannot apply
 * ('failed') and, behind it, the later events of the same stream ('held'), so a
 * user's events are never applied out of order while other users keep flowing.
 * 'skipped' rows are the record of events an operator chose to leave out.
 */
export const deadLetterTable = 'PROJECTION_DEAD_LETTER';

export type ParkedState = 'failed' | 'held' | 'skipped';

export interface ParkedEvent {
  ID: number;
  PROJECTION: string;
  STREAM_ID: string;
  REVISION: number;
  EVENT_TYPE: string;
  DATA: string;
  STATE: ParkedState;
  ERROR: string;
  ATTEMPTS: number;
  SOURCE: string | null;
  POSITION: string | null;
  DATE_PARKED: string;
  DATE_UPDATED: string;
}

/** What the projector hands over to be parked ('skipped' only for an entry erased before it was stored). */
export interface EventToPark {
  streamId: string;
  revision: number;
  type: string;
  data: unknown;
  state: ParkedState;
  error: string;
  attempts: number;
  source?: string | undefined;
  position?: string | undefined;
}

const errorLength = 4000;

/** How an error is recorded with a parked event: its kind and message, bounded. */
export const parkedError = (error: unknown): string =>
  (error instanceof Error ? `${error.name}: ${error.message}` : String(error)).slice(0, errorLength);

/** Event data as stored: JSON text (a payload that is already text stays as it is). */
const dataText = (data: unknown): string => (typeof data === 'string' ? data : (JSON.stringify(data) ?? 'null'));

export function toParkedRow(projection: string, event: EventToPark): Omit<ParkedEvent, 'ID'> {
  const at = dbNow();
  return {
    PROJECTION: projection,
    STREAM_ID: event.streamId.slice(0, 200),
    REVISION: event.revision,
    EVENT_TYPE: event.type.slice(0, 200),
    DATA: dataText(event.data),
    STATE: event.state,
    ERROR: event.error.slice(0, errorLength),
    ATTEMPTS: event.attempts,
    SOURCE: event.source ?? null,
    POSITION: event.position ?? null,
    DATE_PARKED: at,
    DATE_UPDATED: at,
  };
}

/**
 * Erasure (a user was forgotten): the ERROR of a quarantined entry of that user's
 * stream, a fixed text with nothing personal in it. Such an entry is 'skipped'
 * and its DATA is `erasedData`, so it never blocks the stream again and is
 * never retried into a row.
 */
export const erasedError = 'erased: the user was forgotten';
/** The DATA kept for a quarantined event of a forgotten user: no payload at all. */
export const erasedData = '{}';

/** The entry without the event's payload (the stream's user is forgotten): it is parked as it would be, only its DATA is `erasedData`. */
export const withoutPersonalData = (event: EventToPark): EventToPark => ({ ...event, data: erasedData });

/** The entry as erasure leaves it: no payload, a fixed error, skipped. */
export const erasedEntry = (event: EventToPark): EventToPark => ({ ...event, data: erasedData, error: erasedError, state: 'skipped' });

/**
 * Forgetting overrides the quarantine: every entry of these streams (failed, held
 * or skipped) loses its payload and its error text and becomes 'skipped', so the
 * streams are unblocked and nothing personal stays in PROJECTION_DEAD_LETTER.
 * Runs in the transaction that applies the UserForgotten. Returns the entries changed.
 */
export async function eraseParkedStreams(trx: Knex, projection: string, streamIds: readonly string[]): Promise<number> {
  let erased = 0;
  const at = dbNow();
  for (let i = 0; i < streamIds.length; i += 1000) {
    erased += await trx(deadLetterTable)
      .where({ PROJECTION: projection })
      .whereIn('STREAM_ID', streamIds.slice(i, i + 1000))
      .update({ DATA: erasedData, ERROR: erasedError, STATE: 'skipped', DATE_UPDATED: at });
  }
  return erased;
}

/** Parks events; one that is parked already (a redelivery) is left as it is. */
export async function parkEvents(trx: Knex, projection: string, events: readonly EventToPark[]): Promise<void> {
  for (let i = 0; i < events.length; i += 500) {
    const rows = events.slice(i, i + 500).map((e) => toParkedRow(projection, e));
    await trx(deadLetterTable).insert(rows).onConflict(['PROJECTION', 'STREAM_ID', 'REVISION']).ignore();
  }
}

/**
 * For each of these streams that has events parked (failed or held), the lowest
 * parked revision: events of the stream from there on must wait behind it.
 */
export async function blockedStreams(trx: Knex, projection: string, streamIds: readonly string[]): Promise<Map<string, number>> {
  const blocked = new Map<string, number>();
  for (let i = 0; i < streamIds.length; i += 1000) {
    const query = trx(deadLetterTable)
      .where({ PROJECTION: projection })
      .whereIn('STATE', ['failed', 'held'])
      .whereIn('STREAM_ID', streamIds.slice(i, i + 1000))
      .select<{ STREAM_ID: string; REVISION: number | string }[]>('STREAM_ID', 'REVISION');
    // A locking read on MariaDB: an operator's retry of the stream (which locks and
    // deletes these rows) is waited for, so the batch never holds an event behind a
    // head that has just been released.
    addBlocked(blocked, await readDbDialect(trx).lockForShare(query));
  }
  return blocked;
}

/** Quarantine rows into `blocked` (stream -> its earliest parked revision), as `blockedStreams` reads them. */
export function addBlocked(blocked: Map<string, number>, rows: readonly { STREAM_ID: string; REVISION: number | string }[]): Map<string, number> {
  for (const row of rows) {
    const revision = Number(row.REVISION);
    blocked.set(row.STREAM_ID, Math.min(revision, blocked.get(row.STREAM_ID) ?? revision));
  }
  return blocked;
}

/** How many events wait in quarantine, by state (failed, held); skipped ones are history. */
export async function parkedCounts(db: Knex, projection: string): Promise<{ failed: number; held: number }> {
  const rows = await db(deadLetterTable)
    .where({ PROJECTION: projection })
    .whereIn('STATE', ['failed', 'held'])
    .groupBy('STATE')
    .select<{ STATE: ParkedState; N: number | string }[]>('STATE', db.raw('COUNT(*) AS N'));
  const counts = { failed: 0, held: 0 };
  for (const row of rows) if (row.STATE === 'failed' || row.STATE === 'held') counts[row.STATE] = Number(row.N);
  return counts;
}

export async function listParked(
  db: Knex,
  projection: string,
  options: { stream?: string; states?: readonly ParkedState[]; limit?: number } = {},
): Promise<ParkedEvent[]> {
  const query = db<ParkedEvent>(deadLetterTable)
    .where({ PROJECTION: projection })
    .whereIn('STATE', options.states ?? ['failed', 'held'])
    .orderBy([{ column: 'STREAM_ID' }, { column: 'REVISION' }])
    .limit(options.limit ?? 100);
  if (options.stream !== undefined) void query.where({ STREAM_ID: options.stream });
  const rows = await query;
  return rows.map((r) => ({ ...r, ID: Number(r.ID), REVISION: Number(r.REVISION), ATTEMPTS: Number(r.ATTEMPTS) }));
}

/**
 * Whether the stream's event at `revision` waits in quarantine: parked or held at that revision or
 * after it (an event after it is parked only once the projector has reached and kept back the write).
 * A read waiting for its write asks this: such a write shows only once an operator releases it.
 */
export async function writeParked(db: Knex, projection: string, streamId: string, revision: number): Promise<boolean> {
  const found = await db<ParkedEvent>(deadLetterTable)
    .where({ PROJECTION: projection, STREAM_ID: streamId })
    .whereIn('STATE', ['failed', 'held'])
    .where('REVISION', '>=', revision)
    .first('ID');
  return found !== undefined;
}

/**
 * The quarantine as a rebuild must honour it, so that it reproduces the live
 * table: streams blocked from their lowest parked revision, and skipped events.
 * Entries of unknown revision (a Kafka message too broken to read) are about
 * the transport, not the log, and block nothing in a rebuild from the log.
 */
export async function quarantinedEvents(db: Knex, projection: string): Promise<{ blocked: Map<string, number>; skipped: Set<string> }> {
  const blocked = new Map<string, number>();
  const skipped = new Set<string>();
  const rows = await db(deadLetterTable)
    .where({ PROJECTION: projection })
    .select<{ STREAM_ID: string; REVISION: number | string; STATE: ParkedState }[]>('STREAM_ID', 'REVISION', 'STATE');
  for (const row of rows) {
    const revision = Number(row.REVISION);
    if (row.STATE === 'skipped') skipped.add(`${row.STREAM_ID}@${revision}`);
    else if (revision >= 0) blocked.set(row.STREAM_ID, Math.min(revision, blocked.get(row.STREAM_ID) ?? revision));
  }
  return { blocked, skipped };
}
