import type { Knex } from 'knex';
import { ServiceError } from '../shared/errors.js';
import { isMariaDb, readDbError } from '../shared/read-db.js';
import { userEventSchemas, isUserEventType, userIdFromStream, type UserEvent } from '../shared/user-events.js';
import { ajv, fieldProblems } from '../shared/schema-validation.js';
import { assertNotPaused } from './projection-control.js';
import { userRowFrom, type UserRow } from './user-row.js';

export const projectionName = 'USER_DATA';

/** What the projector needs of an event, whichever feed delivered it. */
export interface ProjectedEvent {
  streamId: string;
  revision: number;
  type: string;
  data: unknown;
}

/** Where a feed has got to: e.g. `$all` -> a log position, or `topic:partition` -> an offset. */
export type Checkpoints = Map<string, string>;

const validators = Object.fromEntries(
  Object.entries(userEventSchemas).map(([type, schema]) => [type, ajv.compile(schema)]),
) as Record<UserEvent['type'], ReturnType<typeof ajv.compile>>;

/** Checks an event against its JSON Schema: the projector's input boundary. */
export function toUserEvent(event: ProjectedEvent): UserEvent | undefined {
  if (!userIdFromStream(event.streamId) || !isUserEventType(event.type)) return undefined;
  const validate = validators[event.type];
  if (!validate(event.data)) {
    const problems = fieldProblems(validate.errors)
      .map((p) => `${p.field} ${p.message}`)
      .join('; ');
    throw new ServiceError('EVENT_INVALID', `${event.streamId}@${event.revision} ${event.type}: ${problems}`);
  }
  return { type: event.type, data: event.data } as UserEvent;
}

export async function readCheckpoints(db: Knex): Promise<Checkpoints> {
  const rows = await db('PROJECTION_CHECKPOINT')
    .where({ PROJECTION: projectionName })
    .select<{ SOURCE: string; POSITION: string }[]>('SOURCE', 'POSITION');
  return new Map(rows.map((r) => [r.SOURCE, String(r.POSITION)]));
}

const rowChunk = 500;

/**
 * Applies a batch in one transaction together with the feed's checkpoints, so the
 * read model and "how far it got" can never disagree: after a crash the batch is
 * either wholly there or wholly replayed, and replays change nothing because each
 * row only moves forward in VERSION. While a rebuild holds the pause the batch
 * fails with the retriable ProjectionPausedError and is tried again later.
 */
export async function applyBatch(db: Knex, events: readonly ProjectedEvent[], checkpoints: Checkpoints): Promise<number> {
  const userEvents = events.flatMap((e) => {
    const event = toUserEvent(e);
    return event ? [{ event, revision: e.revision, userId: event.data.userId }] : [];
  });
  const ids = [...new Set(userEvents.map((e) => e.userId))];
  try {
    // READ COMMITTED on MariaDB: FOR UPDATE then locks only existing rows, not the gaps
    // between them, so projectors working on different users do not deadlock on inserts.
    const isolation = isMariaDb(db) ? { isolationLevel: 'read committed' as const } : {};
    return await db.transaction(async (trx) => {
      // A rebuild swapping the table in pauses the live projector: nothing is written, the batch is retried.
      await assertNotPaused(trx, projectionName);
      const current = new Map<string, UserRow>();
      for (let i = 0; i < ids.length; i += rowChunk) {
        const query = trx<UserRow>('USER_DATA').whereIn('ID_USER_DATA', ids.slice(i, i + rowChunk));
        // Several projector instances may share the table; lock the rows this batch owns.
        const rows = await (isMariaDb(trx) ? query.forUpdate() : query);
        for (const row of rows) current.set(row.ID_USER_DATA, { ...row, VERSION: Number(row.VERSION) });
      }
      const changed = new Map<string, UserRow>();
      for (const { event, revision, userId } of userEvents) {
        const before = current.get(userId);
        const after = userRowFrom(before, event, revision);
        if (after && after !== before) {
          current.set(userId, after);
          changed.set(userId, after);
        }
      }
      const rows = [...changed.values()];
      for (let i = 0; i < rows.length; i += rowChunk) {
        await trx('USER_DATA').insert(rows.slice(i, i + rowChunk)).onConflict('ID_USER_DATA').merge();
      }
      const now = new Date().toISOString().replace('T', ' ').replace('Z', '');
      const positions = [...checkpoints].map(([SOURCE, POSITION]) => ({
        PROJECTION: projectionName,
        SOURCE,
        POSITION,
        DATE_UPDATED: now,
      }));
      if (positions.length > 0) {
        await trx('PROJECTION_CHECKPOINT').insert(positions).onConflict(['PROJECTION', 'SOURCE']).merge();
      }
      return rows.length;
    }, isolation);
  } catch (error) {
    throw readDbError(error);
  }
}
