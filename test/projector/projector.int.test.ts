import { testVault } from '../support/vault.js';
import { pino } from 'pino';
import t from 'tap';
import { applyBatch } from '../../projector/apply-batch.js';
import { readCheckpoints } from '../../shared/read-model/checkpoints.js';
import { userProjector } from '../../projector/projector.js';
import { eventStoreFeed, globalLogSource } from '../../shared/event-feed/event-store-feed.js';
import type { EventFeed } from '../../shared/event-feed/port.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { forEachReadDb } from '../support/read-dbs.js';
import { commandsOver, expectedRows, seedUsers, tableRows, waitFor } from '../support/seed.js';

const logger = pino({ level: 'silent' });

async function head(store: EventStore): Promise<bigint> {
  const all = await testVault.open(await store.readAll({ maxCount: 1_000_000 }));
  return all[all.length - 1]?.position ?? 0n;
}

forEachReadDb(t, async (t, db) => {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  await seedUsers(commands, 40);

  await t.test('projects the whole log; the table equals a fold of the log', async (t) => {
    const projector = userProjector({ db, feed: eventStoreFeed(store, { vault: testVault, batchSize: 13 }), logger });
    const done = projector.start();
    t.teardown(() => projector.stop());
    const last = (await head(store)).toString();
    await waitFor(() => projector.status().checkpoints[globalLogSource] === last, 10_000, 'projector to reach head');
    t.same(await tableRows(db), await expectedRows(store));
    t.same(await readCheckpoints(db), new Map([[globalLogSource, last]]), 'checkpoint stored with the rows');

    // Live tail: a write made now shows up without restarting.
    const { id } = await commands.register({ name: 'Late', email: 'late@example.org' });
    await waitFor(async () => (await db('USER_DATA').where('ID_USER_DATA', id)).length === 1, 10_000, 'live event');
    await projector.stop();
    await done;
  });

  await t.test('duplicates and replays change nothing', async (t) => {
    const before = await tableRows(db);
    const log = await testVault.open(await store.readAll({ maxCount: 1_000_000 }));
    // The whole log again, then its first half again, then single events out of order.
    await applyBatch(db, log, new Map([[globalLogSource, '1']]));
    await applyBatch(db, log.slice(0, log.length / 2), new Map());
    for (const event of [...log].reverse().slice(0, 20)) await applyBatch(db, [event], new Map());
    t.same(await tableRows(db), before);
  });

  await t.test('a crash between batches loses nothing: a restart resumes from the checkpoint', async (t) => {
    await db('USER_DATA').del();
    await db('PROJECTION_CHECKPOINT').del();
    await seedUsers(commands, 10, 'more');
    const batchesBeforeCrash = 3;
    // A feed that dies after a few batches, like a process killed between two transactions.
    const crashing: EventFeed = {
      async *batches(from) {
        let n = 0;
        for await (const batch of eventStoreFeed(store, { vault: testVault, batchSize: 7 }).batches(from)) {
          yield batch;
          if (++n === batchesBeforeCrash) throw new Error('simulated crash');
        }
      },
      close: () => Promise.resolve(),
    };
    const first = userProjector({ db, feed: crashing, logger });
    await t.rejects(first.start(), { message: 'simulated crash' });
    const checkpoint = (await readCheckpoints(db)).get(globalLogSource);
    t.ok(checkpoint, 'the batches before the crash were committed with their checkpoint');
    const log = await testVault.open(await store.readAll({ maxCount: 1_000_000 }));
    t.ok(BigInt(checkpoint!) < log[log.length - 1]!.position, 'the crash came before the end');

    const second = userProjector({ db, feed: eventStoreFeed(store, { vault: testVault, batchSize: 7 }), logger });
    void second.start();
    t.teardown(() => second.stop());
    const last = log[log.length - 1]!.position.toString();
    await waitFor(() => second.status().checkpoints[globalLogSource] === last, 10_000, 'restarted projector');
    t.ok(second.status().eventsApplied < log.length, 'the restart did not start over from the beginning');
    t.same(await tableRows(db), await expectedRows(store));
  });

  await t.test('an event that fails its schema is parked, not applied; the checkpoint moves past it', async (t) => {
    const bad = inMemoryEventStore();
    await bad.appendToStream('user-0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c99', [{ type: 'UserRegistered', data: { name: 42 } }], {
      expectedRevision: 'no_stream',
    });
    const before = await tableRows(db);
    const checkpoints = await readCheckpoints(db);
    t.teardown(async () => {
      await db('PROJECTION_DEAD_LETTER').del();
      await db('PROJECTION_CHECKPOINT').where({ SOURCE: 'bad' }).del();
    });
    t.same(await applyBatch(db, await testVault.open(await bad.readAll({ maxCount: 10 })), new Map([['bad', '1']])), { rows: 0, parked: 1 });
    t.same(await tableRows(db), before);
    t.same(await readCheckpoints(db), new Map([...checkpoints, ['bad', '1']]));
    t.match(await db('PROJECTION_DEAD_LETTER').select('STREAM_ID', 'STATE', 'ERROR'), [
      { STREAM_ID: 'user-0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c99', STATE: 'failed', ERROR: /does not match its schema: .*name/ },
    ]);
  });
});
