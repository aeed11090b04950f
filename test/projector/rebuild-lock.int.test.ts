import t from 'tap';
import { projectionControl } from '../../projector/projection-control.js';
import { forEachReadDb } from '../support/read-dbs.js';

/**
 * The rebuild lock's staleness is the holder's: three of its own heartbeat intervals,
 * whatever REBUILD_HEARTBEAT_MS the run that finds it was started with.
 */
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

forEachReadDb(t, async (t, db) => {
  await t.test('a run with a shorter interval does not take over a live run with a longer one', async (t) => {
    const slow = projectionControl({ db, projection: 'USER_DATA', owner: 'slow-heartbeat' });
    await slow.acquire(60_000);
    t.teardown(() => slow.release());
    await sleep(700);
    const eager = projectionControl({ db, projection: 'USER_DATA', owner: 'eager' });
    await t.rejects(eager.acquire(300), {
      name: 'RebuildLockedError',
      owner: 'slow-heartbeat',
      staleAfterMs: 60_000,
      message: /If it was killed, its lock goes stale 60 s after its last heartbeat/,
    }, 'a heartbeat 0.7 s old is fresh for a holder that beats every 20 s');
  });

  await t.test("a holder silent past its own three intervals is taken over, whatever the newcomer's", async (t) => {
    const quick = projectionControl({ db, projection: 'USER_DATA', owner: 'quick-heartbeat' });
    await quick.acquire(300);
    await sleep(700);
    const patient = projectionControl({ db, projection: 'USER_DATA', owner: 'patient' });
    t.match(await patient.acquire(60_000), { staleOwner: 'quick-heartbeat' }, 'stale by its own measure');
    await patient.release();
    t.match(
      await db('PROJECTION_CONTROL').where({ PROJECTION: 'USER_DATA' }).first(),
      { REBUILD_OWNER: null, REBUILD_STALE_MS: null },
      'released with its bound, which must not judge a lock that code without the bound takes next',
    );
  });
});
