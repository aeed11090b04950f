import { randomUUID } from 'node:crypto';
import t from 'tap';
import { inMemoryCheckpoints, readDbCheckpoints } from '../../shared/read-model/checkpoints.js';
import { checkpointStoreContract } from '../contracts/checkpoint-store.contract.js';
import { forEachReadDb } from '../support/read-dbs.js';

void t.test('in memory', async (t) => {
  checkpointStoreContract(t, () => Promise.resolve(inMemoryCheckpoints()));
});

forEachReadDb(t, async (t, db) => {
  // A projection name per store, so the cases share the table without seeing each other.
  let projection = '';
  checkpointStoreContract(
    t,
    () => {
      projection = `contract-${randomUUID()}`;
      return Promise.resolve(readDbCheckpoints(db, projection));
    },
    {
      rolledBack: async (body) => {
        const rollback = new Error('rolled back on purpose');
        await db
          .transaction(async (trx) => {
            await body((checkpoints) => readDbCheckpoints(db, projection).write(checkpoints, trx));
            throw rollback;
          })
          .catch((error: unknown) => {
            if (error !== rollback) throw error;
          });
      },
    },
  );
});
