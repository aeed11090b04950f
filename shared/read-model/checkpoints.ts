import type { Knex } from 'knex';
import type { Checkpoints } from '../event-feed/port.js';
import { dbNow } from '../read-db.js';
import { projectionName } from './user-row.js';

/**
 * Where a projection has got to in each source of its feed (`$all` -> a log
 * position; `topic:partition` -> the next offset). The read model's copy is the
 * truth a projector resumes from; it is written in the same transaction as the
 * rows it accounts for, so the two never disagree. Adapters: the read DB
 * (`PROJECTION_CHECKPOINT`, SQLite and MariaDB) and memory (tests). Both pass
 * `test/contracts/checkpoint-store.contract.ts`.
 */
export interface CheckpointStore {
  read(): Promise<Checkpoints>;
  /**
   * Moves the given sources to their new positions (others keep theirs). On the
   * read DB, pass the transaction that writes the rows: the positions commit or
   * roll back with them.
   */
  write(checkpoints: Checkpoints, trx?: Knex): Promise<void>;
}

export const checkpointTable = 'PROJECTION_CHECKPOINT';

/** The read DB's checkpoints of one projection. */
export function readDbCheckpoints(db: Knex, projection: string = projectionName): CheckpointStore {
  return {
    async read() {
      const rows = await db(checkpointTable)
        .where({ PROJECTION: projection })
        .select<{ SOURCE: string; POSITION: string }[]>('SOURCE', 'POSITION');
      return new Map(rows.map((r) => [r.SOURCE, String(r.POSITION)]));
    },
    async write(checkpoints, trx = db) {
      const now = dbNow();
      const positions = [...checkpoints].map(([SOURCE, POSITION]) => ({ PROJECTION: projection, SOURCE, POSITION, DATE_UPDATED: now }));
      if (positions.length > 0) await trx(checkpointTable).insert(positions).onConflict(['PROJECTION', 'SOURCE']).merge();
    },
  };
}

/** Checkpoints in memory, for tests of code that only needs the port. */
export function inMemoryCheckpoints(): CheckpointStore {
  const positions: Checkpoints = new Map();
  return {
    read: () => Promise.resolve(new Map(positions)),
    write(checkpoints) {
      for (const [source, position] of checkpoints) positions.set(source, position);
      return Promise.resolve();
    },
  };
}

/** The live projection's checkpoints, as the projector and the rebuild read them. */
export const readCheckpoints = (db: Knex): Promise<Checkpoints> => readDbCheckpoints(db).read();

/** Inside the transaction that wrote the rows: the sources' new positions. */
export const writeCheckpoints = (trx: Knex, checkpoints: Checkpoints): Promise<void> => readDbCheckpoints(trx).write(checkpoints);
