import { testVault } from '../support/vault.js';
import type { Knex } from 'knex';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { v7 as uuidv7 } from 'uuid';
import { readCheckpoints } from '../../shared/read-model/checkpoints.js';
import { applyBatch } from '../../projector/apply-batch.js';
import { userProjector } from '../../projector/projector.js';
import { userDataRebuild, type RebuildProgress } from '../../projector/rebuild.js';
import { shadowUserData } from '../../projector/shadow-table.js';
import { eventStoreFeed, globalLogSource } from '../../shared/event-feed/event-store-feed.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { userStreamId } from '../../shared/user-events.js';
import { inPositionOrderOnly, openEmbeddedStoreReadOnWorker } from '../support/event-stores.js';
import { forEachReadDb } from '../support/read-dbs.js';
import { commandsOver, expectedRows, seedUsers, tableRows, waitFor } from '../support/seed.js';

const logger = pino({ level: 'silent' });

/** Both ways a rebuild reads the log: stream after stream where the store can (SQLite, in memory), else in order of position (EventStoreDB). */
const replays = [
  { name: 'stream after stream', byStream: true, store: (store: EventStore) => store },
  { name: 'in order of position', byStream: false, store: inPositionOrderOnly },
];
const inMemory = () => Promise.resolve(inMemoryEventStore());
/** The cases above on the store in memory; the first also on the embedded store as `npm run rebuild` opens it. */
const whileWritesOn = [
  ...replays.map((replay) => ({ ...replay, open: inMemory })),
  { name: 'stream after stream, embedded store read on a worker thread', byStream: true, store: (store: EventStore) => store, open: openEmbeddedStoreReadOnWorker },
];

const head = async (store: EventStore) => (await testVault.open(await store.readAll({ maxCount: 1_000_000 }))).at(-1)?.position.toString();

/** A live projector on the store's log, running until the test ends. */
async function liveProjector(t: Test, db: Knex, store: EventStore) {
  const projector = userProjector({ db, feed: eventStoreFeed(store, { vault: testVault, batchSize: 7 }), logger, pausePollMs: 10 });
  void projector.start();
  t.teardown(() => projector.stop());
  const caughtUp = async () => {
    const last = await head(store);
    await waitFor(() => projector.status().checkpoints[globalLogSource] === last, 10_000, 'the live projector to reach the head');
  };
  await caughtUp();
  return { projector, caughtUp };
}

/** Nothing of a rebuild is left: no shadow or old table, no rebuild checkpoint, no lock, no pause. */
async function assertNoLeftovers(t: Test, db: Knex) {
  t.notOk(await db.schema.hasTable('USER_DATA_REBUILD'), 'no shadow table left');
  t.notOk(await db.schema.hasTable('USER_DATA_OLD'), 'no old table left');
  t.same(await db('PROJECTION_CHECKPOINT').where({ PROJECTION: 'USER_DATA_REBUILD' }), [], 'no rebuild checkpoint left');
  t.match(await db('PROJECTION_CONTROL').where({ PROJECTION: 'USER_DATA' }).first(), {
    REBUILD_OWNER: null,
    PAUSED_BY: null,
  });
}

forEachReadDb(t, async (t, db) => {
  // Each case brings its own log; the table and checkpoints start empty.
  t.beforeEach(async () => {
    await db('USER_DATA').del();
    await db('PROJECTION_CHECKPOINT').del();
  });

  for (const replay of whileWritesOn) {
    await t.test(`while writes and the live projector run: the table equals a fold of the log, every write once (${replay.name})`, async (t) => {
      const store = await replay.open(t);
      const commands = commandsOver(store);
      await seedUsers(commands, 60);
      const { projector, caughtUp } = await liveProjector(t, db, store);

      const written: Array<{ id: string; revision: number }> = [];
      let writing = true;
      const write = async (i: number) => {
        const registered = await commands.register({ name: `During ${i}`, email: `during${i}@example.org` });
        written.push(registered);
        if (i % 2 === 0) written.push(await commands.rename(registered.id, `Renamed during ${i}`));
      };
      const writer = (async () => {
        for (let i = 0; writing; i++) {
          await write(i);
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      })();
      let burst: Promise<unknown> | undefined;

      let sawPause = false;
      const sampler = setInterval(() => (sawPause ||= projector.status().pausedByRebuild), 1);
      const result = await userDataRebuild({ vault: testVault, store: replay.store(store), db, logger, pageDelayMs: 3 }).run({
        verify: true,
        batchSize: 20,
        maxRowsInMemory: 25, // several flushes, and rows read back from the shadow
        onProgress(progress) {
          // Writes made while the live projector is held: they reach the new table either way.
          if (progress.phase === 'verifying (paused)' && !burst) burst = Promise.all([1000, 1001, 1002, 1003].map(write));
        },
      });
      clearInterval(sampler);
      t.comment(`the live projector ${sawPause ? 'met' : 'did not meet'} the pause`);
      writing = false;
      await writer;
      await burst;

      t.ok(result.swapped, 'swapped in');
      t.ok(burst, 'writes were made while the live projector was paused');
      t.match(result.verification, { missing: 0, extra: 0, different: 0 }, 'the live table was right before the swap');
      t.ok(written.length > 6, `writes went on during the rebuild (${written.length})`);
      await caughtUp();
      t.notOk(projector.status().pausedByRebuild, 'the live projector is running again');
      t.same(await tableRows(db), await expectedRows(store), 'the table is a fold of the whole log');
      const rows = new Map((await tableRows(db)).map((row) => [row.ID_USER_DATA, row]));
      for (const { id } of written) {
        const stream = await store.readStream(userStreamId(id));
        t.equal(rows.get(id)?.VERSION, stream.length - 1, `${id} reflects its last revision exactly`);
      }
      await assertNoLeftovers(t, db);
    });

  }

  for (const replay of replays) {
    await t.test(`after corruption: --verify reports it, a dry run changes nothing, a rebuild restores the table (${replay.name})`, async (t) => {
      const store = inMemoryEventStore();
      const commands = commandsOver(store);
      const ids = await seedUsers(commands, 30);
      const { caughtUp } = await liveProjector(t, db, store);
      await db('USER_DATA').whereIn('ID_USER_DATA', ids.slice(0, 3)).del();
      await db('USER_DATA').where('ID_USER_DATA', ids[3]!).update({ NAME: 'Corrupted', VERSION: 0 });
      await db('USER_DATA').where('ID_USER_DATA', ids[4]!).update({ EMAIL: 'wrong@example.org' });
      await db('USER_DATA').insert({
        ...(await db('USER_DATA').where('ID_USER_DATA', ids[5]!).first()),
        ID_USER_DATA: '00000000-0000-7000-8000-000000000000',
      });
      const corrupted = await tableRows(db);
      const rebuild = userDataRebuild({ vault: testVault, store: replay.store(store), db, logger });

      const dry = await rebuild.run({ verify: true, dryRun: true, batchSize: 50 });
      t.match(dry.verification, { missing: 3, extra: 1, different: 2, shadowAhead: false });
      t.notOk(dry.swapped);
      t.same(await tableRows(db), corrupted, 'a dry run leaves the live table as it is');
      await assertNoLeftovers(t, db);

      const real = await rebuild.run({ verify: true, batchSize: 50 });
      t.match(real.verification, { missing: 3, extra: 1, different: 2 });
      const examples = real.verification!.examples.join('\n');
      t.match(examples, /NAME differs \(personal data: values not shown\)/, 'examples name the difference');
      t.match(examples, /VERSION "0", expected "\d+"/, 'with the values of columns that are no one\'s personal data');
      t.notOk(/Corrupted|wrong@example\.org|@example\.org/.test(examples), 'and never a name or an email');
      t.ok(real.swapped, 'swapped in even though they differed: the rebuild is the repair');
      await caughtUp();
      t.same(await tableRows(db), await expectedRows(store), 'restored');
      t.match((await rebuild.run({ verify: true })).verification, { compared: 30, missing: 0, extra: 0, different: 0 });
      await assertNoLeftovers(t, db);
    });

    await t.test(`large flushes: several INSERT statements, background writes, little memory (${replay.name})`, async (t) => {
      const store = inMemoryEventStore();
      const users = Array.from({ length: 4500 }, () => uuidv7());
      const at = (i: number) => new Date(Date.UTC(2026, 0, 1) + i).toISOString();
      for (const [i, userId] of users.entries()) {
        const data = { userId, name: `Bulk ${i}`, email: `bulk${i}@example.org`, occurredAt: at(i) };
        await store.appendToStream(userStreamId(userId), [{ type: 'UserRegistered', data }], { expectedRevision: 'no_stream' });
      }
      // Renamed after everyone registered: read in order of position with little memory, their rows come back from the shadow.
      for (const [i, userId] of users.entries()) {
        const data = { userId, name: `Renamed ${i}`, occurredAt: at(10_000 + i) };
        await store.appendToStream(userStreamId(userId), [{ type: 'UserRenamed', data }], { expectedRevision: 0 });
      }
      const rebuild = userDataRebuild({ vault: testVault, store: replay.store(store), db, logger });
      const roomy = await rebuild.run();
      t.equal(roomy.rows, 4500);
      t.equal(roomy.rowsWritten, 4500, 'with room for every row, each is written once');
      t.same(await tableRows(db), await expectedRows(store));

      const tight = await rebuild.run({ maxRowsInMemory: 400, batchSize: 250, verify: true });
      if (replay.byStream) t.equal(tight.rowsWritten, 4500, 'stream after stream, each row is written once whatever the memory');
      else t.ok(tight.rowsWritten > 4500, `rows written again after being read back (${tight.rowsWritten})`);
      t.match(tight.verification, { compared: 4500, missing: 0, extra: 0, different: 0 });
      t.same(await tableRows(db), await expectedRows(store));
      await assertNoLeftovers(t, db);
    });
  }

  await t.test("progress, read stream after stream: the total expected is the user streams' share of the log", async (t) => {
    const store = inMemoryEventStore();
    await seedUsers(commandsOver(store), 60);
    const log = await testVault.open(await store.readAll({ maxCount: 100_000 }));
    const userEvents = log.filter((e) => e.streamId.startsWith('user-')).length;
    t.ok(userEvents < log.length * 0.9, `the log holds other streams' events too (${log.length - userEvents} of ${log.length})`);
    const seen: RebuildProgress[] = [];
    await userDataRebuild({ vault: testVault, store, db, logger }).run({ batchSize: 20, onProgress: (p) => seen.push({ ...p }) });
    const byStream = seen.filter((p) => p.expected !== undefined);
    t.ok(byStream.length >= userEvents / 20, `reported page by page while reading stream after stream (${byStream.length})`);
    const expected = byStream[0]!.expected!;
    t.ok(Math.abs(expected - userEvents) <= userEvents * 0.1, `expected ${expected}, read ${userEvents}`);
    t.equal(byStream.at(-1)!.events, userEvents, "that read held exactly the user streams' events");
    t.ok(
      seen.slice(seen.indexOf(byStream.at(-1)!) + 1).every((p) => p.expected === undefined),
      'afterwards the log position serves again',
    );
  });

  await t.test('only one rebuild at a time; a stale lock is taken over with its leftovers', async (t) => {
    const store = inMemoryEventStore();
    await seedUsers(commandsOver(store), 20);
    let started = false;
    const slow = userDataRebuild({ vault: testVault, store, db, logger, owner: 'host-a:123', pageDelayMs: 30 });
    const first = slow.run({ batchSize: 5, onProgress: () => (started = true) });
    await waitFor(() => started, 5000, 'the first rebuild to start');
    await t.rejects(userDataRebuild({ vault: testVault, store, db, logger }).run(), {
      code: 'REBUILD_LOCKED',
      message: /another rebuild is running \(owner host-a:123/,
    });
    t.ok((await first).swapped, 'the first one finishes undisturbed');

    // What a run killed while paused leaves behind: its lock (heartbeat long gone), its pause, its shadow.
    await db('PROJECTION_CONTROL').where({ PROJECTION: 'USER_DATA' }).update({
      REBUILD_OWNER: 'dead-host:42',
      REBUILD_STARTED: '2020-01-01 00:00:00.000',
      REBUILD_HEARTBEAT: '2020-01-01 00:00:00.000',
      PAUSED_BY: 'dead-host:42',
      PAUSED_UNTIL: '2999-01-01 00:00:00.000',
    });
    await shadowUserData(db).create();
    const result = await userDataRebuild({ vault: testVault, store, db, logger }).run();
    t.equal(result.tookOverFrom, 'dead-host:42');
    t.ok(result.swapped);
    t.same(await tableRows(db), await expectedRows(store));
    await assertNoLeftovers(t, db);
  });

  await t.test('aborted while the live projector is paused: live table untouched, pause lifted, shadow dropped', async (t) => {
    const store = inMemoryEventStore();
    await seedUsers(commandsOver(store), 20);
    const { projector, caughtUp } = await liveProjector(t, db, store);
    const before = await tableRows(db);
    const abort = new AbortController();
    await t.rejects(
      userDataRebuild({ vault: testVault, store, db, logger }).run({
        signal: abort.signal,
        onProgress: (p) => void (p.phase === 'catching up (paused)' && abort.abort()),
      }),
      { code: 'REBUILD_ABORTED' },
    );
    t.same(await tableRows(db), before);
    await assertNoLeftovers(t, db);
    await seedUsers(commandsOver(store), 2, 'after-abort');
    await caughtUp();
    t.notOk(projector.status().pausedByRebuild);
    t.same(await tableRows(db), await expectedRows(store), 'the live projector carries on');
  });

  await t.test('Kafka checkpoints are left alone; an empty log never replaces a filled table', async (t) => {
    const store = inMemoryEventStore();
    await seedUsers(commandsOver(store), 5);
    await db('PROJECTION_CHECKPOINT').del();
    await db('PROJECTION_CHECKPOINT').insert({ PROJECTION: 'USER_DATA', SOURCE: 'users.events.v1:0', POSITION: '17', DATE_UPDATED: '2026-01-01 00:00:00.000' });
    const result = await userDataRebuild({ vault: testVault, store, db, logger }).run();
    t.ok(result.swapped);
    t.same(await readCheckpoints(db), new Map([['users.events.v1:0', '17']]), 'no $all checkpoint added');
    t.same(await tableRows(db), await expectedRows(store));

    const before = await tableRows(db);
    await t.rejects(userDataRebuild({ vault: testVault, store: inMemoryEventStore(), db, logger }).run(), { message: /holds no users/ });
    // A log of other streams only (another service's store, say) is no better.
    const foreign = inMemoryEventStore();
    await foreign.appendToStream('order-1', [{ type: 'OrderPlaced', data: {} }], { expectedRevision: 'no_stream' });
    for (const replay of replays) await t.rejects(userDataRebuild({ vault: testVault, store: replay.store(foreign), db, logger }).run(), { message: /holds no users/ });
    t.same(await tableRows(db), before);
    await assertNoLeftovers(t, db);
  });

  await t.test('Kafka-fed: a $all checkpoint from before its first offsets moves neither --verify nor the pause off the head', async (t) => {
    const store = inMemoryEventStore();
    const commands = commandsOver(store);
    await seedUsers(commands, 10);
    // The read DB is filled by a rebuild before the Kafka-fed projector has committed anything.
    const rebuild = userDataRebuild({ vault: testVault, store, db, logger });
    const filled = await rebuild.run();
    t.same(await readCheckpoints(db), new Map([[globalLogSource, filled.position]]), 'a projection with no checkpoint yet gets the log position');
    // Then the Kafka-fed projector applies what follows, with its own offsets.
    await db('PROJECTION_CHECKPOINT').insert({ PROJECTION: 'USER_DATA', SOURCE: 'users.events.v1:0', POSITION: '17', DATE_UPDATED: '2026-01-01 00:00:00.000' });
    await seedUsers(commands, 5, 'after-fill');
    const later = await testVault.open(await store.readAll({ after: BigInt(filled.position!), maxCount: 10_000 }));
    await applyBatch(db, later, new Map([['users.events.v1:0', '99']]));

    const dry = await rebuild.run({ verify: true, dryRun: true });
    t.match(dry.verification, { compared: 15, missing: 0, extra: 0, different: 0, shadowAhead: false }, 'compared at the head');
    t.equal(dry.verification?.livePosition, undefined, 'the leftover $all is not taken for the live position');
    t.equal(dry.position, await head(store));

    let readBeforePause: number | undefined;
    const real = await rebuild.run({ verify: true, onProgress: (p) => void (p.phase !== 'replaying' && (readBeforePause ??= p.events)) });
    t.match(real.verification, { compared: 15, missing: 0, extra: 0, different: 0 });
    t.equal(real.events, readBeforePause, 'the log was read to its head before the pause: nothing left to read while the live projector is held');
    t.same(await readCheckpoints(db), new Map([['users.events.v1:0', '99']]), 'Kafka offsets left alone, the leftover $all gone');
    t.same(await tableRows(db), await expectedRows(store));
    await assertNoLeftovers(t, db);
  });
});
