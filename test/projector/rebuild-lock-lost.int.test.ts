import { testVault } from '../support/vault.js';
import type { Knex } from 'knex';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { v7 as uuidv7 } from 'uuid';
import { userDataRebuild } from '../../projector/rebuild.js';
import { shadowUserData } from '../../projector/shadow-table.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import type { EventStore } from '../../shared/event-store/port.js';
import type { UserRow } from '../../shared/read-model/user-row.js';
import { userStreamId } from '../../shared/user-events.js';
import { forEachReadDb } from '../support/read-dbs.js';
import { commandsOver, seedUsers, tableRows, waitFor } from '../support/seed.js';

/**
 * A run whose lock another run took over (its heartbeat went stale: a machine that
 * stood still, a network cut) leaves the other run's shadow table alone: it neither
 * drops it nor writes into it, whichever step finds out.
 */
const logger = pino({ level: 'silent' });

/** The store, its first read of the log after `hold()` kept waiting until `release()`. */
function heldOnce(store: EventStore) {
  let armed = false;
  let held = false;
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const wrapped: EventStore = {
    ...store,
    async readAll(options) {
      if (armed) {
        armed = false;
        held = true;
        await released;
      }
      return store.readAll(options);
    },
  };
  return { store: wrapped, hold: () => void (armed = true), isHeld: () => held, release };
}

const marker: UserRow = {
  ID_USER_DATA: '00000000-0000-7000-8000-0000000000aa',
  NAME: 'Written by the run that took over',
  EMAIL: 'other-run@example.org',
  STATUS: 'registered',
  DATE_REGISTER: '2026-01-02 03:04:05.678',
  DATE_VALIDATED: null,
  DATE_DEACTIVATED: null,
  DATE_UPDATED: '2026-01-02 03:04:05.678',
  VERSION: 0,
};

/** What a run that takes over does first: the lock is its own (the pause gone), and so is a new shadow, with a row in it. */
async function takeOver(db: Knex) {
  await db('PROJECTION_CONTROL').where({ PROJECTION: 'USER_DATA' }).update({
    REBUILD_OWNER: 'host-b:2',
    REBUILD_STARTED: '2999-01-01 00:00:00.000',
    REBUILD_HEARTBEAT: '2999-01-01 00:00:00.000',
    PAUSED_BY: null,
    PAUSED_UNTIL: null,
  });
  const shadow = shadowUserData(db);
  await shadow.drop();
  await shadow.create();
  await db(shadow.name).insert(marker);
}

/**
 * Run A (a heartbeat far too slow to notice anything) pauses the live projector; its
 * first read of the paused catch-up waits while another run takes over and `meanwhile`
 * appends to the log. Returns what A failed with.
 */
async function overtakenWhilePaused(t: Test, db: Knex, meanwhile: (store: EventStore) => Promise<unknown>) {
  t.teardown(async () => {
    await shadowUserData(db).drop();
    await db('PROJECTION_CONTROL')
      .where({ PROJECTION: 'USER_DATA' })
      .update({ REBUILD_OWNER: null, REBUILD_STARTED: null, REBUILD_HEARTBEAT: null, REBUILD_STALE_MS: null, PAUSED_BY: null, PAUSED_UNTIL: null });
  });
  const store = inMemoryEventStore();
  await seedUsers(commandsOver(store), 10);
  const held = heldOnce(store);
  const run = userDataRebuild({ vault: testVault, store: held.store, db, logger, owner: 'host-a:1', heartbeatMs: 60_000 }).run({
    batchSize: 5,
    onProgress: (p) => void (p.phase === 'catching up (paused)' && held.hold()),
  });
  let ended = false;
  const failed = run.then(
    () => undefined,
    (error: unknown) => error,
  ).finally(() => (ended = true));
  await waitFor(() => held.isHeld() || ended, 10_000, 'the paused catch-up to read the log');
  if (!held.isHeld()) throw new Error(`the run ended before its paused catch-up: ${String(await failed)}`);
  const before = await tableRows(db);
  await takeOver(db);
  await meanwhile(store);
  held.release();
  const error = await failed;
  t.same(await tableRows(db), before, 'the live table is untouched');
  t.match(await db('PROJECTION_CONTROL').where({ PROJECTION: 'USER_DATA' }).first(), { REBUILD_OWNER: 'host-b:2', PAUSED_BY: null }, "the other run's lock stays");
  return error;
}

forEachReadDb(t, async (t, db) => {
  t.beforeEach(async () => {
    await db('USER_DATA').del();
    await db('PROJECTION_CHECKPOINT').del();
  });

  await t.test("a run that finds its lock taken when it pauses again leaves the other run's shadow", async (t) => {
    // More than a page appended: the catch-up reads on, finds its pause gone, and pauses again.
    const error = await overtakenWhilePaused(t, db, (store) => seedUsers(commandsOver(store), 4, 'meanwhile'));
    t.match(error, { code: 'REBUILD_LOCK_LOST' });
    t.ok(await db.schema.hasTable('USER_DATA_REBUILD'), "the other run's shadow is still there");
    t.same(await tableRows(db, 'USER_DATA_REBUILD'), [marker], 'with what the other run wrote, and only that');
  });

  await t.test("a run that lost its lock writes nothing into the other run's shadow", async (t) => {
    // Less than a page appended: the catch-up is at the head at once and writes its rows.
    const userId = uuidv7();
    const registered = { userId, name: 'Meanwhile', email: 'meanwhile@example.org', occurredAt: '2026-01-03T00:00:00.000Z' };
    const error = await overtakenWhilePaused(t, db, (store) =>
      store.appendToStream(userStreamId(userId), [{ type: 'UserRegistered', data: registered }], { expectedRevision: 'no_stream' }),
    );
    t.match(error, { code: 'REBUILD_LOCK_LOST' });
    t.ok(await db.schema.hasTable('USER_DATA_REBUILD'), "the other run's shadow is still there");
    t.same(await tableRows(db, 'USER_DATA_REBUILD'), [marker], 'with what the other run wrote, and only that');
    t.same(await db('PROJECTION_CHECKPOINT').where({ PROJECTION: 'USER_DATA_REBUILD' }), [], 'and no position of the run that lost its lock');
  });
});
