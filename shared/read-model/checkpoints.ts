import type { Knex } from 'knex';
import type { Checkpoints } from '../event-feed/port.js';
import { dbNow } from '../read-db.js';
import { projectionName } from './user-row.js';

/**
 * PROJECTION_CHECKPOINT: how far the projection has got in each source of its
 * feed (`$all` -> a log position; `topic:partition` -> the next offset), written
 * in the same transaction as the rows it accounts for.
 */
export const checkpointTable = 'PROJECTION_CHECKPOINT';

export async function readCheckpoints(db: Knex): Promise<Checkpoints> {
  const rows = await db(checkpointTable)
    .where({ PROJECTION: projectionName })
    .select<{ SOURCE: string; POSITION: string }[]>('SOURCE', 'POSITION');
  return new Map(rows.map((r) => [r.SOURCE, String(r.POSITION)]));
}

/** Inside the transaction that wrote the rows: the sources' new positions. */
export async function writeCheckpoints(trx: Knex, checkpoints: Checkpoints): Promise<void> {
  const now = dbNow();
  const positions = [...checkpoints].map(([SOURCE, POSITION]) => ({ PROJECTION: projectionName, SOURCE, POSITION, DATE_UPDATED: now }));
  if (positions.length > 0) await trx(checkpointTable).insert(positions).onConflict(['PROJECTION', 'SOURCE']).merge();
}
