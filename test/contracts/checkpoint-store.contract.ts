import type { Test } from 'tap';
import type { CheckpointStore } from '../../shared/read-model/checkpoints.js';

/**
 * What every checkpoint store does. `open` gives a fresh store; `inTransaction`,
 * where the store has transactions, runs `body` in one that is rolled back.
 */
export function checkpointStoreContract(
  t: Test,
  open: () => Promise<CheckpointStore>,
  options: { rolledBack?: (body: (write: CheckpointStore['write']) => Promise<void>) => Promise<void> } = {},
): void {
  void t.test('starts empty', async (t) => {
    t.same(await (await open()).read(), new Map());
  });

  void t.test('keeps each source\'s last position; a write leaves the other sources alone', async (t) => {
    const store = await open();
    await store.write(new Map([['users.events.v1:0', '10'], ['users.events.v1:1', '7']]));
    await store.write(new Map([['users.events.v1:0', '25']]));
    t.same(await store.read(), new Map([['users.events.v1:0', '25'], ['users.events.v1:1', '7']]));
  });

  void t.test('positions beyond 2^53 come back exactly', async (t) => {
    const store = await open();
    await store.write(new Map([['$all', '18446744073709551615']]));
    t.same(await store.read(), new Map([['$all', '18446744073709551615']]));
  });

  void t.test('an empty write changes nothing', async (t) => {
    const store = await open();
    await store.write(new Map([['$all', '3']]));
    await store.write(new Map());
    t.same(await store.read(), new Map([['$all', '3']]));
  });

  const rolledBack = options.rolledBack;
  if (rolledBack) {
    void t.test('a write in a transaction that rolls back leaves the positions as they were', async (t) => {
      const store = await open();
      await store.write(new Map([['$all', '5']]));
      await rolledBack((write) => write(new Map([['$all', '9'], ['other', '1']])));
      t.same(await store.read(), new Map([['$all', '5']]));
    });
  }
}
