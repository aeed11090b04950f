import { testVault } from '../support/vault.js';
import type { Knex } from 'knex';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { applyBatch } from '../../projector/apply-batch.js';
import { projectionName } from '../../shared/read-model/user-row.js';
import { readCheckpoints } from '../../shared/read-model/checkpoints.js';
import { listParked, parkedCounts } from '../../shared/read-model/dead-letters.js';
import { userProjector } from '../../projector/projector.js';
import { quarantine } from '../../projector/quarantine.js';
import { userDataRebuild } from '../../projector/rebuild.js';
import { userRowFrom } from '../../projector/user-row.js';
import { eventStoreFeed, globalLogSource } from '../../shared/event-feed/event-store-feed.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { userStreamId } from '../../shared/user-events.js';
import { inPositionOrderOnly } from '../support/event-stores.js';
import { forEachReadDb } from '../support/read-dbs.js';
import { commandsOver, expectedRows, seedUsers, tableRows, waitFor } from '../support/seed.js';

const logger = pino({ level: 'silent' });

const head = async (store: EventStore) => (await testVault.open(await store.readAll({ maxCount: 1_000_000 }))).at(-1)!.position.toString();

/** Appends an event the command side would never write (as an older or buggy writer might have). */
/**
 * Appends as another writer would (a newer release that knows more types, or a
 * buggy one): the command side of this release refuses to act on a stream it
 * cannot read, so events after a poison one are written here too.
 */
async function appendRaw(store: EventStore, userId: string, type: string, data: unknown): Promise<number> {
  const stream = userStreamId(userId);
  const revision = (await store.readStream(stream)).length - 1;
  await store.appendToStream(stream, [{ type, data }], { expectedRevision: revision });
  return revision + 1;
}

async function runProjector(t: Test, db: Knex, store: EventStore, options: Partial<Parameters<typeof userProjector>[0]> = {}) {
  const projector = userProjector({ db, feed: eventStoreFeed(store, { vault: testVault, batchSize: 7 }), logger, ...options });
  const done = projector.start();
  t.teardown(() => projector.stop());
  const caughtUp = async () => {
    const last = await head(store);
    await waitFor(() => projector.status().checkpoints[globalLogSource] === last, 20_000, 'the projector to reach the head');
  };
  await caughtUp();
  return { projector, caughtUp, done };
}

const deadLetters = (db: Knex) =>
  db('PROJECTION_DEAD_LETTER').orderBy('ID').select('STREAM_ID', 'REVISION', 'STATE', 'ERROR', 'ATTEMPTS');

forEachReadDb(t, async (t, db) => {
  t.beforeEach(async () => {
    await db('USER_DATA').del();
    await db('PROJECTION_CHECKPOINT').del();
    await db('PROJECTION_DEAD_LETTER').del();
  });

  await t.test('unknown type and invalid payload: parked, the user held back in order, everyone else flows', async (t) => {
    const store = inMemoryEventStore();
    const commands = commandsOver(store);
    const [, a, b, c] = await seedUsers(commands, 8, 'poison');
    const now = new Date().toISOString();
    const unknownAt = await appendRaw(store, a!, 'UserNicknamed', { userId: a, nickname: 'x', occurredAt: now });
    await appendRaw(store, a!, 'UserRenamed', { userId: a, name: 'A after the poison', occurredAt: new Date().toISOString() });
    const invalidAt = await appendRaw(store, b!, 'UserRenamed', { userId: b, name: '', occurredAt: now });
    await appendRaw(store, b!, 'UserRenamed', { userId: b, name: 'B after the poison', occurredAt: new Date().toISOString() });
    // Other users keep going meanwhile.
    const { id: fresh } = await commands.register({ name: 'Fresh', email: 'fresh@example.org' });
    await commands.rename(c!, 'C renamed');

    const { projector, caughtUp } = await runProjector(t, db, store);
    t.ok(projector.status().running, 'the projector did not stop');
    t.same(projector.status().parked, { failed: 2, held: 2 });
    t.match(await deadLetters(db), [
      { STREAM_ID: userStreamId(a!), REVISION: unknownAt, STATE: 'failed', ERROR: /unknown event type "UserNicknamed"/, ATTEMPTS: 1 },
      { STREAM_ID: userStreamId(a!), REVISION: unknownAt + 1, STATE: 'held', ERROR: /held behind/ },
      { STREAM_ID: userStreamId(b!), REVISION: invalidAt, STATE: 'failed', ERROR: /does not match its schema: name/ },
      { STREAM_ID: userStreamId(b!), REVISION: invalidAt + 1, STATE: 'held' },
    ]);
    const rows = await tableRows(db);
    t.same(rows, await expectedRows(store), 'the table is the fold of the log, each parked stream cut at its poison');
    t.equal(rows.find((r) => r.ID_USER_DATA === a)!.VERSION, unknownAt - 1, 'A stays at the revision before the poison');
    t.match(rows.find((r) => r.ID_USER_DATA === c), { NAME: 'C renamed' });
    t.match(rows.find((r) => r.ID_USER_DATA === fresh), { NAME: 'Fresh' });
    t.same(await readCheckpoints(db), new Map([[globalLogSource, await head(store)]]), 'the checkpoint moved on');

    // A's new events keep waiting behind the poison while it is parked.
    await appendRaw(store, a!, 'UserValidated', { userId: a, occurredAt: new Date().toISOString() });
    await caughtUp();
    t.same(await parkedCounts(db, projectionName), { failed: 2, held: 3 });

    // Replays and duplicates park nothing twice and change nothing.
    const table = await tableRows(db);
    const parked = await deadLetters(db);
    await applyBatch(db, await testVault.open(await store.readAll({ maxCount: 10_000 })), new Map());
    t.same(await tableRows(db), table);
    t.same(await deadLetters(db), parked);

    // A rebuild honours the quarantine, reading the log either way: the same table, the same parked events.
    for (const replayed of [store, inPositionOrderOnly(store)]) {
      const rebuilt = await userDataRebuild({ vault: testVault, store: replayed, db, logger }).run({ verify: true });
      t.match(rebuilt.verification, { missing: 0, extra: 0, different: 0 });
      await caughtUp();
      t.same(await tableRows(db), table);
      t.same(await deadLetters(db), parked);
    }

    const operator = quarantine({ db });
    const stillBroken = await operator.retry(userStreamId(a!));
    t.match(stillBroken, { applied: 0, stillParked: 3, error: /unknown event type/ });
    t.match(await listParked(db, projectionName, { stream: userStreamId(a!) }), [{ STATE: 'failed', ATTEMPTS: 2 }, {}, {}]);

    const [aHead] = await listParked(db, projectionName, { stream: userStreamId(a!), states: ['failed'] });
    await t.rejects(operator.skip(aHead!.ID + 1), /only a failed event can be skipped/, 'a held event cannot be skipped');
    t.match(await operator.skip(aHead!.ID), { skipped: 1, applied: 2, stillParked: 0 });
    const [bHead] = await listParked(db, projectionName, { stream: userStreamId(b!), states: ['failed'] });
    t.match(await operator.skip(bHead!.ID), { skipped: 1, applied: 1, stillParked: 0 });
    const skipped = new Set([`${userStreamId(a!)}@${unknownAt}`, `${userStreamId(b!)}@${invalidAt}`]);
    t.same(await tableRows(db), await expectedRows(store, { skipped }), 'released in order: the fold without the skipped events');
    t.match(await tableRows(db).then((r) => r.find((x) => x.ID_USER_DATA === a)), { NAME: 'A after the poison', STATUS: 'validated' });
    t.same(await parkedCounts(db, projectionName), { failed: 0, held: 0 });
    t.equal((await listParked(db, projectionName, { states: ['skipped'] })).length, 2, 'skipped events stay on record');

    // Once released, the stream flows again; a replay of the whole log changes nothing.
    await appendRaw(store, a!, 'UserRenamed', { userId: a, name: 'A flows again', occurredAt: new Date().toISOString() });
    await caughtUp();
    t.match(await tableRows(db).then((r) => r.find((x) => x.ID_USER_DATA === a)), { NAME: 'A flows again' });
    const released = await tableRows(db);
    await applyBatch(db, await testVault.open(await store.readAll({ maxCount: 10_000 })), new Map());
    t.same(await tableRows(db), released);
    t.same(await parkedCounts(db, projectionName), { failed: 0, held: 0 });
    // A rebuild agrees, skipped events included.
    for (const replayed of [store, inPositionOrderOnly(store)]) {
      t.match((await userDataRebuild({ vault: testVault, store: replayed, db, logger }).run({ verify: true })).verification, { missing: 0, extra: 0, different: 0 });
    }
  });

  for (const [order, replayed] of [
    ['stream after stream', (store: EventStore) => store],
    ['in order of position', inPositionOrderOnly],
  ] as const) {
    await t.test(`a rebuild that meets poison events first parks them as the live projector would (${order})`, async (t) => {
      const store = inMemoryEventStore();
      const commands = commandsOver(store);
      const [, a, b] = await seedUsers(commands, 8, 'first');
      const unknownAt = await appendRaw(store, a!, 'UserNicknamed', { userId: a, nickname: 'x', occurredAt: new Date().toISOString() });
      await appendRaw(store, a!, 'UserRenamed', { userId: a, name: 'A after the poison', occurredAt: new Date().toISOString() });
      const wrongUserAt = await appendRaw(store, b!, 'UserRenamed', { userId: a, name: 'Not B', occurredAt: new Date().toISOString() });

      const result = await userDataRebuild({ vault: testVault, store: replayed(store), db, logger }).run();
      t.ok(result.swapped);
      const skippedNothing = await expectedRows(store);
      t.same(await tableRows(db), skippedNothing, 'every user as far as the first poison event of their stream');
      t.match(await deadLetters(db), [
        { STREAM_ID: userStreamId(a!), REVISION: unknownAt, STATE: 'failed', ERROR: /unknown event type "UserNicknamed"/ },
        { STREAM_ID: userStreamId(a!), REVISION: unknownAt + 1, STATE: 'held', ERROR: /held behind/ },
        { STREAM_ID: userStreamId(b!), REVISION: wrongUserAt, STATE: 'failed', ERROR: /names user/ },
      ]);
      t.equal((await deadLetters(db)).length, 3);

      // The live projector, started on the rebuilt table, agrees and parks nothing more.
      const { projector } = await runProjector(t, db, store);
      t.same(projector.status().parked, { failed: 2, held: 1 });
      t.same(await tableRows(db), skippedNothing);
    });
  }

  await t.test('skipping a forget that fails erases the person all the same', async (t) => {
    const store = inMemoryEventStore();
    const commands = commandsOver(store);
    const { id: a } = await commands.register({ name: 'Parked Person', email: 'parked.person@example.org' });
    // A forget whose payload fails its schema (no occurredAt).
    const brokenAt = await appendRaw(store, a, 'UserForgotten', { userId: a });
    await runProjector(t, db, store);
    t.match(await tableRows(db).then((r) => r.find((x) => x.ID_USER_DATA === a)), { NAME: 'Parked Person' }, 'parked: the row keeps the name');
    // A rebuild's leftover table (a swap whose last drop failed) holds a copy of the row.
    await db.schema.dropTableIfExists('USER_DATA_OLD');
    await db.raw('CREATE TABLE ?? AS SELECT * FROM ??', ['USER_DATA_OLD', 'USER_DATA']);
    t.teardown(() => db.schema.dropTableIfExists('USER_DATA_OLD'));
    const operator = quarantine({ db });
    const [failed] = await listParked(db, projectionName, { stream: userStreamId(a), states: ['failed'] });
    t.equal(failed!.REVISION, brokenAt);
    t.match(await operator.skip(failed!.ID), { skipped: 1, stillParked: 0 });
    const erased = (await tableRows(db)).find((x) => x.ID_USER_DATA === a);
    t.match(erased, { STATUS: 'forgotten', NAME: '', EMAIL: '', VERSION: brokenAt }, 'the row is erased as the forget would have erased it');
    t.match(await db('USER_DATA_OLD').where({ ID_USER_DATA: a }).first(), { STATUS: 'forgotten', NAME: '', EMAIL: '' }, 'and its copy in the leftover table');
  });

  await t.test('a handler error that repeats: parked after the bounded attempts; one that passes parks nothing', async (t) => {
    const store = inMemoryEventStore();
    const commands = commandsOver(store);
    const [, x, y] = await seedUsers(commands, 4, 'handler');
    await commands.rename(x!, 'Boom');
    await commands.rename(x!, 'X after');
    await commands.rename(y!, 'Flaky');
    const { id: other } = await commands.register({ name: 'Other', email: 'other@example.org' });
    let flakyCalls = 0;
    const fold: typeof userRowFrom = (row, event, revision) => {
      if (event.type === 'UserRenamed' && event.data.name === 'Boom') throw new Error('handler bug: cannot project Boom');
      if (event.type === 'UserRenamed' && event.data.name === 'Flaky' && ++flakyCalls <= 2) throw new Error('passing trouble');
      return userRowFrom(row, event, revision);
    };

    const { projector } = await runProjector(t, db, store, { fold, maxAttempts: 3 });
    t.ok(projector.status().running);
    t.match(await deadLetters(db), [
      { STREAM_ID: userStreamId(x!), STATE: 'failed', ERROR: /handler bug: cannot project Boom/, ATTEMPTS: 3 },
      { STREAM_ID: userStreamId(x!), STATE: 'held' },
    ]);
    t.equal((await deadLetters(db)).length, 2, 'only X is parked');
    const rows = await tableRows(db);
    t.match(rows.find((r) => r.ID_USER_DATA === y), { NAME: 'Flaky' }, 'the passing error cost retries, not the event');
    t.match(rows.find((r) => r.ID_USER_DATA === other), { NAME: 'Other' });
    t.notMatch(rows.find((r) => r.ID_USER_DATA === x), { NAME: 'Boom' });

    // The fix is deployed (the real handler): retrying applies the parked events in order.
    t.match(await quarantine({ db }).retry(userStreamId(x!)), { applied: 2, stillParked: 0 });
    t.same(await tableRows(db), await expectedRows(store));
    t.same(await parkedCounts(db, projectionName), { failed: 0, held: 0 });
  });

  await t.test('a broken message from the feed is parked under its key and holds that stream', async (t) => {
    const store = inMemoryEventStore();
    const commands = commandsOver(store);
    const [, u] = await seedUsers(commands, 2, 'broken');
    const log = await testVault.open(await store.readAll({ maxCount: 1000 }));
    const stream = userStreamId(u!);
    const broken = { streamId: stream, revision: -1, type: '(unreadable)', data: '{"oops', position: '17', problem: 'message is not JSON' };
    // The user's row exists (its first events are applied) when the broken message arrives amid later ones.
    const mine = log.filter((e) => e.streamId === stream);
    await applyBatch(db, log.filter((e) => e.streamId !== stream || e.revision === 0), new Map([['users:0', '18']]));
    await applyBatch(db, [broken, ...mine.slice(1)], new Map([['users:0', '40']]));
    t.match(await deadLetters(db), [
      { STREAM_ID: stream, REVISION: -1, STATE: 'failed', ERROR: 'message is not JSON' },
      ...mine.slice(1).map((e) => ({ STREAM_ID: stream, REVISION: e.revision, STATE: 'held' })),
    ]);
    t.equal((await deadLetters(db)).length, mine.length, 'the broken message and every later event of its stream');
    t.match((await tableRows(db)).find((r) => r.ID_USER_DATA === u), { VERSION: 0 }, 'nothing of the stream is applied behind it');
    const [first] = await listParked(db, projectionName, { states: ['failed'] });
    // While a rebuild runs (its heartbeat is fresh) the quarantine is left alone.
    await db('PROJECTION_CONTROL').where({ PROJECTION: projectionName }).update({ REBUILD_OWNER: 'host:1:abc', REBUILD_HEARTBEAT: new Date().toISOString().replace('T', ' ').replace('Z', '') });
    await t.rejects(quarantine({ db }).skip(first!.ID), { name: 'RebuildRunningError', message: /a rebuild is running \(owner host:1:abc\)/ });
    t.same(await parkedCounts(db, projectionName), { failed: 1, held: mine.length - 1 }, 'nothing released');
    await db('PROJECTION_CONTROL').where({ PROJECTION: projectionName }).update({ REBUILD_OWNER: null, REBUILD_HEARTBEAT: null });
    t.match(await quarantine({ db }).skip(first!.ID), { skipped: 1, stillParked: 0 });
    t.same(await tableRows(db), await expectedRows(store));
  });

  await t.test('the quarantine counts follow releases made outside the projector (dead-letters), with no batch to trigger them', async (t) => {
    const store = inMemoryEventStore();
    const [a] = await seedUsers(commandsOver(store), 2, 'recount');
    await appendRaw(store, a!, 'UserNicknamed', { userId: a, nickname: 'x', occurredAt: new Date().toISOString() });
    const { projector } = await runProjector(t, db, store, { housekeepingMs: 100 });
    t.same(projector.status().parked, { failed: 1, held: 0 });
    const [failed] = await listParked(db, projectionName, { states: ['failed'] });
    await quarantine({ db }).skip(failed!.ID);
    await waitFor(() => projector.status().parked.failed === 0, 5000, 'the projector to see the quarantine empty');
    t.same(projector.status().parked, { failed: 0, held: 0 }, 'the gauge and the readiness detail no longer report the released event');
  });

  await t.test('a batch merged from many partitions parks each event under its own partition', async (t) => {
    // Catching up, the Kafka feed merges what every partition fetched into one batch; the names of
    // all of them together are longer than the quarantine's SOURCE column (191 characters).
    const store = inMemoryEventStore();
    const commands = commandsOver(store);
    const [u] = await seedUsers(commands, 1, 'wide');
    const stream = userStreamId(u!);
    const topic = 'users.events.v1';
    const checkpoints = new Map(Array.from({ length: 24 }, (_, p) => [`${topic}:${p}`, '100'] as [string, string]));
    t.ok([...checkpoints.keys()].join(',').length > 191, 'the sources together overflow the column');
    const broken = { streamId: stream, revision: -1, type: '(unreadable)', data: '{"oops', position: '99', source: `${topic}:17`, problem: 'message is not JSON' };
    await applyBatch(db, [broken], checkpoints);
    const parked = await listParked(db, projectionName, { states: ['failed'] });
    t.same(parked.map((p) => [p.STREAM_ID, p.SOURCE, p.POSITION]), [[stream, `${topic}:17`, '99']]);
    t.equal((await readCheckpoints(db)).get(`${topic}:23`), '100', 'the checkpoints moved on with the batch');
  });
});
