import { testVault } from '../support/vault.js';
import knexFactory, { type Knex } from 'knex';
import { pino } from 'pino';
import t from 'tap';
import { applyBatch } from '../../projector/apply-batch.js';
import { readCheckpoints } from '../../shared/read-model/checkpoints.js';
import { assertNotPaused, projectionControl } from '../../projector/projection-control.js';
import { userProjector } from '../../projector/projector.js';
import { eventStoreFeed, globalLogSource } from '../../shared/event-feed/event-store-feed.js';
import type { EventFeed } from '../../shared/event-feed/port.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { forEachReadDb } from '../support/read-dbs.js';
import { commandsOver, expectedRows, seedUsers, tableRows, waitFor } from '../support/seed.js';

/**
 * The live side of a rebuild's handover: a pause makes every batch roll back
 * with a retriable error, the projector tries the same batch again, and nothing
 * is lost; a pause that expires (its rebuild died) stops holding it.
 */
const logger = pino({ level: 'silent' });

/** The same feed, with each batch to be confirmed once applied (as the Kafka feed's are): the projector may then overlap them. */
const told = (feed: EventFeed): EventFeed => ({
  async *batches(from) {
    for await (const batch of feed.batches(from)) yield { ...batch, applied: () => {} };
  },
  close: () => feed.close(),
});

forEachReadDb(t, async (t, db, kind) => {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  await seedUsers(commands, 12);
  const log = await testVault.open(await store.readAll({ maxCount: 10_000 }));
  const rebuild = projectionControl({ db, projection: 'USER_DATA', owner: 'test-rebuild' });
  await rebuild.acquire(60_000);
  t.teardown(() => rebuild.release());

  await t.test('a paused batch fails retriably and writes nothing', async (t) => {
    t.ok(await rebuild.pause(10_000));
    await t.rejects(applyBatch(db, log, new Map([[globalLogSource, '7']])), { code: 'PROJECTION_PAUSED', retriable: true });
    t.same(await tableRows(db), [], 'no rows');
    t.same(await readCheckpoints(db), new Map(), 'no checkpoint');
    await rebuild.clearPause();
    await applyBatch(db, log.slice(0, 5), new Map([[globalLogSource, log[4]!.position.toString()]]));
    t.ok((await tableRows(db)).length > 0, 'applies once the pause is lifted');
  });

  await t.test('an expired pause holds nothing', async (t) => {
    t.ok(await rebuild.pause(1));
    await new Promise((resolve) => setTimeout(resolve, 50));
    t.notOk(await rebuild.extendPause(10_000), 'the rebuild learns its pause ran out');
    await applyBatch(db, log.slice(5, 10), new Map([[globalLogSource, log[9]!.position.toString()]]));
    await rebuild.clearPause();
  });

  // On MariaDB also with batches overlapped (a feed that is told when a batch is applied): the batch begun
  // ahead meets the pause in its reads, is rolled back, and waits it out the usual way.
  for (const overlapped of kind === 'mariadb' ? [false, true] : [false]) await t.test(`a running projector waits out the pause, then applies what arrived meanwhile${overlapped ? ', batches overlapped' : ''}`, async (t) => {
    const feed = eventStoreFeed(store, { vault: testVault, batchSize: 5 });
    const projector = userProjector({ db, feed: overlapped ? told(feed) : feed, logger, pausePollMs: 20 });
    void projector.start();
    t.teardown(() => projector.stop());
    const head = async () => (await testVault.open(await store.readAll({ maxCount: 100_000 }))).at(-1)!.position.toString();
    await waitFor(async () => projector.status().checkpoints[globalLogSource] === (await head()), 10_000, 'catch up');

    t.ok(await rebuild.pause(10_000));
    const before = await tableRows(db);
    await seedUsers(commands, 5, `while-paused${overlapped ? '-overlapped' : ''}`);
    await waitFor(() => projector.status().pausedByRebuild, 5000, 'the projector to meet the pause');
    await new Promise((resolve) => setTimeout(resolve, 100));
    t.same(await tableRows(db), before, 'nothing applied while paused');
    await rebuild.clearPause();
    await waitFor(async () => projector.status().checkpoints[globalLogSource] === (await head()), 10_000, 'resume');
    t.notOk(projector.status().pausedByRebuild);
    t.same(await tableRows(db), await expectedRows(store), 'nothing lost, nothing doubled');
  });

  await t.test('a projector stopped while it waits out a pause stops cleanly, its batch left for the next start', async (t) => {
    const projector = userProjector({ db, feed: eventStoreFeed(store, { vault: testVault, batchSize: 5 }), logger, pausePollMs: 20 });
    const head = async () => (await testVault.open(await store.readAll({ maxCount: 100_000 }))).at(-1)!.position.toString();
    const running = projector.start();
    t.teardown(() => projector.stop());
    await waitFor(async () => projector.status().checkpoints[globalLogSource] === (await head()), 10_000, 'catch up');
    t.ok(await rebuild.pause(10_000));
    t.teardown(() => rebuild.clearPause());
    await seedUsers(commands, 2, 'stopped-while-paused');
    await waitFor(() => projector.status().pausedByRebuild, 5000, 'the projector to meet the pause');
    await projector.stop();
    await t.resolves(running, 'a stop, not a failure (the role would log it as fatal and exit 1)');
    await rebuild.clearPause();
    const next = userProjector({ db, feed: eventStoreFeed(store, { vault: testVault, batchSize: 5 }), logger });
    void next.start();
    t.teardown(() => next.stop());
    await waitFor(async () => next.status().checkpoints[globalLogSource] === (await head()), 10_000, 'the next start to apply it');
    t.same(await tableRows(db), await expectedRows(store), 'nothing lost');
  });

  // On SQLite the same order comes from the database's single write lock, which better-sqlite3
  // waits for synchronously: two connections cannot take turns inside one test process.
  if (kind === 'mariadb') {
    await t.test('setting the pause waits for the batch in flight', async (t) => {
      // Another connection, as the rebuild runs in its own process.
      const other = knexFactory((db.client as { config: Knex.Config }).config);
      t.teardown(() => other.destroy());
      const otherControl = projectionControl({ db: other, projection: 'USER_DATA', owner: 'test-rebuild' });
      let paused = false;
      let pausing: Promise<boolean> | undefined;
      await db.transaction(async (trx) => {
        await assertNotPaused(trx, 'USER_DATA'); // what a live batch does first
        pausing = otherControl.pause(10_000).then((ok) => (paused = ok));
        await new Promise((resolve) => setTimeout(resolve, 300));
        t.notOk(paused, 'the pause waits while the batch is in flight');
      });
      t.ok(await pausing, 'and is set once the batch committed');
      await t.rejects(applyBatch(db, log.slice(0, 1), new Map()), { code: 'PROJECTION_PAUSED' }, 'later batches see it');
      await rebuild.clearPause();
    });
  }
});
