import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Knex } from 'knex';
import { pino } from 'pino';
import t from 'tap';
import { admit } from '../../projector/admit.js';
import { applyBatch } from '../../projector/apply-batch.js';
import { classify } from '../../projector/classify.js';
import { quarantine } from '../../projector/quarantine.js';
import { userProjector } from '../../projector/projector.js';
import { userRowFrom } from '../../projector/user-row.js';
import type { EventFeed, FeedBatch, ProjectedEvent } from '../../shared/event-feed/port.js';
import { eraseFreedPages, openReadDb, walTruncationPending } from '../../shared/read-db.js';
import { blockedStreams, erasedData, erasedError, quarantinedEvents } from '../../shared/read-model/dead-letters.js';
import { migrateReadDb } from '../../shared/read-model/migrations.js';
import { projectionName, type UserRow } from '../../shared/read-model/user-row.js';
import { userStreamId, type UserEvent } from '../../shared/user-events.js';
import { forEachReadDb } from '../support/read-dbs.js';
import { waitFor } from '../support/seed.js';

/**
 * GDPR erasure on the read side: UserForgotten turns the row into a tombstone,
 * overrides the quarantine (and erases it), and on SQLite the bytes go too.
 */

const at = (s: number) => new Date(Date.UTC(2026, 0, 2, 3, 4, s)).toISOString();
const toDb = (iso: string) => iso.replace('T', ' ').replace('Z', '');
const dbDate = (s: number) => toDb(at(s));

// --- the pure fold ---------------------------------------------------------

const userId = '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c21';
const registered: UserEvent = { type: 'UserRegistered', data: { userId, name: 'Ada', email: 'ada@example.org', occurredAt: at(0) } };
const validated: UserEvent = { type: 'UserValidated', data: { userId, occurredAt: at(1) } };
const forgotten = (s: number): UserEvent => ({ type: 'UserForgotten', data: { userId, occurredAt: at(s) } });
const fold = (events: Array<[UserEvent, number]>, from?: UserRow) =>
  events.reduce<UserRow | undefined>((row, [event, revision]) => userRowFrom(row, event, revision), from);

void t.test('fold: forgotten after registration is an anonymised tombstone that keeps its registration date only', async (t) => {
  t.same(fold([[registered, 0], [validated, 1], [forgotten(5), 2]]), {
    ID_USER_DATA: userId,
    NAME: '',
    EMAIL: '',
    STATUS: 'forgotten',
    DATE_REGISTER: dbDate(0),
    DATE_VALIDATED: null,
    DATE_DEACTIVATED: null,
    DATE_UPDATED: dbDate(5),
    VERSION: 2,
  });
});

void t.test('fold: forgotten at revision 0 with no row creates the tombstone', async (t) => {
  t.same(fold([[forgotten(3), 0]]), {
    ID_USER_DATA: userId,
    NAME: '',
    EMAIL: '',
    STATUS: 'forgotten',
    DATE_REGISTER: dbDate(3),
    DATE_VALIDATED: null,
    DATE_DEACTIVATED: null,
    DATE_UPDATED: dbDate(3),
    VERSION: 0,
  });
});

void t.test('fold: events after forgotten only move VERSION and DATE_UPDATED on', async (t) => {
  const tombstone = fold([[registered, 0], [forgotten(2), 1]])!;
  const later: Array<[UserEvent, number]> = [
    [{ type: 'UserRegistered', data: { userId, name: 'Back', email: 'back@example.org', occurredAt: at(3) } }, 2],
    [{ type: 'UserRenamed', data: { userId, name: 'Again', occurredAt: at(4) } }, 3],
    [{ type: 'UserEmailChanged', data: { userId, email: 'new@example.org', previousEmail: 'ada@example.org', occurredAt: at(5) } }, 4],
    [{ type: 'UserValidated', data: { userId, occurredAt: at(6) } }, 5],
    [{ type: 'UserDeactivated', data: { userId, occurredAt: at(7) } }, 6],
    [forgotten(8), 7],
  ];
  for (const [event, revision] of later) {
    const after = userRowFrom(tombstone, event, revision);
    t.same(after, { ...tombstone, DATE_UPDATED: toDb(event.data.occurredAt), VERSION: revision }, event.type);
  }
  t.same(fold(later, tombstone), { ...tombstone, DATE_UPDATED: dbDate(8), VERSION: 7 }, 'all of them');
  // Several UserForgotten in one stream: every event whose key was destroyed reads back as one.
  t.same(fold([[forgotten(0), 0], [forgotten(1), 1], [forgotten(2), 2]]), { ...fold([[forgotten(0), 0]])!, DATE_UPDATED: dbDate(2), VERSION: 2 });
});

void t.test('fold: replays change nothing (revision <= VERSION)', async (t) => {
  const events: Array<[UserEvent, number]> = [[registered, 0], [validated, 1], [forgotten(5), 2], [validated, 3]];
  const once = fold(events)!;
  t.equal(fold(events, once), once, 'the same object: nothing re-applied');
  t.equal(userRowFrom(once, forgotten(9), 2), once);
  t.equal(userRowFrom(once, registered, 0), once, 'a replayed registration never brings the name back');
});

void t.test('admit: a UserForgotten is applied on a blocked stream; other events are held', async (t) => {
  const stream = userStreamId(userId);
  const blocked = new Map([[stream, 1]]);
  const forget = classify({ streamId: stream, revision: 3, type: 'UserForgotten', data: forgotten(3).data })!;
  const other = classify({ streamId: stream, revision: 3, type: 'UserValidated', data: validated.data })!;
  t.same(admit(forget, 0, { blocked }), { action: 'apply' });
  t.match(admit(other, 0, { blocked }), { action: 'hold' });
  t.same(admit(forget, 3, { blocked }), { action: 'skip' }, 'applied already');
});

// --- applyBatch ------------------------------------------------------------

/** Events of one user's stream, for applyBatch. */
function stream(id = randomUUID()) {
  const streamId = userStreamId(id);
  let position = 0;
  const event = (revision: number, type: string, data: Record<string, unknown>): ProjectedEvent => ({
    streamId,
    revision,
    type,
    data: { userId: id, occurredAt: at(revision), ...data },
    position: BigInt(++position),
  });
  return { id, streamId, event };
}

const deadLetters = (knex: Knex, streamId: string) =>
  knex('PROJECTION_DEAD_LETTER').where({ STREAM_ID: streamId }).orderBy('REVISION').select('REVISION', 'STATE', 'DATA', 'ERROR');

const row = async (knex: Knex, id: string) => {
  const found = await knex<UserRow>('USER_DATA').where({ ID_USER_DATA: id }).first();
  return found && { ...found, VERSION: Number(found.VERSION) };
};

forEachReadDb(t, async (t, knex) => {
  t.beforeEach(async () => {
    await knex('USER_DATA').del();
    await knex('PROJECTION_CHECKPOINT').del();
    await knex('PROJECTION_DEAD_LETTER').del();
  });

  await t.test('a blocked stream: UserForgotten is applied anyway, its quarantine erased and unblocked', async (t) => {
    const u = stream();
    const secretName = 'Philomena Secretname';
    const secretEmail = 'philomena.secret@example.org';
    await applyBatch(
      knex,
      [
        u.event(0, 'UserRegistered', { name: secretName, email: secretEmail }),
        u.event(1, 'UserValidated', {}),
        // Poison: an invalid date, with personal data in its payload.
        { ...u.event(2, 'UserRenamed', { name: `${secretName} II` }), data: { userId: u.id, name: `${secretName} II`, occurredAt: 'yesterday' } },
        u.event(3, 'UserEmailChanged', { email: 'held.secret@example.org', previousEmail: secretEmail }),
      ],
      new Map([['$all', '4']]),
    );
    t.match(await deadLetters(knex, u.streamId), [
      { REVISION: 2, STATE: 'failed', DATA: /Philomena/ },
      { REVISION: 3, STATE: 'held', DATA: /held\.secret/ },
    ]);
    t.equal((await blockedStreams(knex, projectionName, [u.streamId])).get(u.streamId), 2);

    const applied = await applyBatch(knex, [u.event(4, 'UserForgotten', {}), u.event(5, 'UserDeactivated', {})], new Map([['$all', '6']]));
    t.match(applied, { forgotten: 1, parked: 0 });
    t.match(await row(knex, u.id), { NAME: '', EMAIL: '', STATUS: 'forgotten', DATE_REGISTER: dbDate(0), DATE_VALIDATED: null, DATE_DEACTIVATED: null, DATE_UPDATED: dbDate(5), VERSION: 5 });
    const letters = await deadLetters(knex, u.streamId);
    t.same(letters.map((l) => [Number(l.REVISION), l.STATE, l.DATA, l.ERROR]), [
      [2, 'skipped', erasedData, erasedError],
      [3, 'skipped', erasedData, erasedError],
    ]);
    t.notOk(JSON.stringify(letters).includes('secret'), 'nothing personal left in the quarantine');
    t.same([...(await blockedStreams(knex, projectionName, [u.streamId]))], [], 'the stream is unblocked');
    t.same((await quarantinedEvents(knex, projectionName)).blocked.size, 0, 'and a rebuild sees it unblocked too');
    t.same(await knex('PROJECTION_CHECKPOINT').select('POSITION').first(), { POSITION: '6' });

    // A redelivery of the whole history changes nothing.
    const before = await row(knex, u.id);
    await applyBatch(knex, [u.event(0, 'UserRegistered', { name: secretName, email: secretEmail }), u.event(4, 'UserForgotten', {})], new Map());
    t.same(await row(knex, u.id), before);
  });

  await t.test('poison, held and forgotten in one batch (and in isolation): nothing personal is stored', async (t) => {
    for (const isolate of [false, true]) {
      const u = stream();
      const applied = await applyBatch(
        knex,
        [
          u.event(0, 'UserRegistered', { name: 'Batch Person', email: 'batch.person@example.org' }),
          u.event(1, 'UserNicknamed', { nickname: 'Batchy' }),
          u.event(2, 'UserRenamed', { name: 'Batch Renamed' }),
          u.event(3, 'UserForgotten', {}),
          u.event(4, 'UserValidated', {}),
        ],
        new Map(),
        { isolate },
      );
      t.match(applied, { forgotten: 1 }, `isolate: ${isolate}`);
      t.match(await row(knex, u.id), { NAME: '', EMAIL: '', STATUS: 'forgotten', VERSION: 4 });
      const letters = await deadLetters(knex, u.streamId);
      t.same(letters.map((l) => [Number(l.REVISION), l.STATE, l.DATA, l.ERROR]), [
        [1, 'skipped', erasedData, erasedError],
        [2, 'skipped', erasedData, erasedError],
      ]);
    }
  });

  await t.test('forgotten at revision 0 with no row, then more forgotten events: one tombstone', async (t) => {
    const u = stream();
    await applyBatch(knex, [u.event(0, 'UserForgotten', {}), u.event(1, 'UserForgotten', {})], new Map());
    await applyBatch(knex, [u.event(2, 'UserForgotten', {}), u.event(3, 'UserValidated', {})], new Map());
    t.same(await row(knex, u.id), {
      ID_USER_DATA: u.id,
      NAME: '',
      EMAIL: '',
      STATUS: 'forgotten',
      DATE_REGISTER: dbDate(0),
      DATE_VALIDATED: null,
      DATE_DEACTIVATED: null,
      DATE_UPDATED: dbDate(3),
      VERSION: 3,
    });
  });

  await t.test('an event parked after the user was forgotten keeps no payload, and a retry never applies it', async (t) => {
    const u = stream();
    await applyBatch(knex, [u.event(0, 'UserRegistered', { name: 'Later Person', email: 'later@example.org' }), u.event(1, 'UserForgotten', {})], new Map());
    await applyBatch(
      knex,
      [
        { ...u.event(2, 'UserRenamed', {}), data: { userId: u.id, name: 'Later Person', occurredAt: 'soon' } },
        u.event(3, 'UserRenamed', { name: 'Later Person Held' }),
      ],
      new Map(),
    );
    t.match(await deadLetters(knex, u.streamId), [
      { REVISION: 2, STATE: 'failed', DATA: erasedData },
      { REVISION: 3, STATE: 'held', DATA: erasedData },
    ]);
    const released = await quarantine({ db: knex }).retry(u.streamId);
    t.match(released, { applied: 0, skipped: 2, stillParked: 0 });
    t.same(
      (await deadLetters(knex, u.streamId)).map((l) => [l.STATE, l.DATA, l.ERROR]),
      [
        ['skipped', erasedData, erasedError],
        ['skipped', erasedData, erasedError],
      ],
    );
    t.match(await row(knex, u.id), { NAME: '', EMAIL: '', STATUS: 'forgotten', VERSION: 1 });
  });

  await t.test('a user not forgotten: the quarantine works as before', async (t) => {
    const u = stream();
    await applyBatch(knex, [u.event(0, 'UserRegistered', { name: 'Kept', email: 'kept@example.org' }), u.event(1, 'UserNicknamed', { nickname: 'k' })], new Map());
    t.match(await deadLetters(knex, u.streamId), [{ REVISION: 1, STATE: 'failed', DATA: /nickname/ }]);
    t.match(await row(knex, u.id), { NAME: 'Kept', STATUS: 'registered' });
  });

  await t.test('the copies a rebuild that died left behind are erased with the live row', async (t) => {
    const u = stream();
    const other = stream();
    await applyBatch(
      knex,
      [u.event(0, 'UserRegistered', { name: 'Left Behind', email: 'left.behind@example.org' }), other.event(0, 'UserRegistered', { name: 'Someone Else', email: 'someone.else@example.org' })],
      new Map(),
    );
    // A rebuild killed mid-replay (its shadow) and a swap whose last drop failed (the old table), both holding the rows.
    for (const table of ['USER_DATA_REBUILD', 'USER_DATA_OLD']) {
      await knex.schema.dropTableIfExists(table);
      await knex.raw('CREATE TABLE ?? AS SELECT * FROM ??', [table, 'USER_DATA']);
    }
    t.teardown(async () => {
      for (const table of ['USER_DATA_REBUILD', 'USER_DATA_OLD']) await knex.schema.dropTableIfExists(table);
    });
    await applyBatch(knex, [u.event(1, 'UserForgotten', {})], new Map());
    for (const table of ['USER_DATA_REBUILD', 'USER_DATA_OLD']) {
      t.match(await knex(table).where({ ID_USER_DATA: u.id }).first(), { NAME: '', EMAIL: '', STATUS: 'forgotten' }, `${table}: the forgotten user's copy is a tombstone`);
      t.match(await knex(table).where({ ID_USER_DATA: other.id }).first(), { NAME: 'Someone Else' }, `${table}: others' rows are left alone`);
    }
  });
});

// --- the bytes on disk -----------------------------------------------------

/** Whether `text` occurs in the file (UTF-8), and the file exists. */
const fileHolds = (file: string, text: string) => existsSync(file) && readFileSync(file).includes(Buffer.from(text, 'utf8'));

void t.test('SQLite: after forgetting, neither the DB file nor its WAL holds the name or email', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'users-forget-bytes-'));
  const file = join(dir, 'queries.sqlite');
  const knex = await openReadDb({ client: 'sqlite', file });
  t.teardown(async () => {
    await knex.destroy();
    await rm(dir, { recursive: true, force: true });
  });
  await migrateReadDb(knex);
  t.equal(String(await knex.raw('PRAGMA secure_delete').then((r: Array<{ secure_delete: number }>) => r[0]!.secure_delete)), '1', 'secure_delete is on');
  // 2 = MEMORY: a batch's statement journal never goes through a file of its own (see openReadDb).
  t.equal(String(await knex.raw('PRAGMA temp_store').then((r: Array<{ temp_store: number }>) => r[0]!.temp_store)), '2', 'statement journals in memory');

  const name = 'Xanthippe Quorvendale';
  const email = 'xanthippe.quorvendale@bytes.example.org';
  const poisonName = 'Xanthippe Quorvendale-Poison';
  const u = stream();
  const others = Array.from({ length: 20 }, () => stream());
  await applyBatch(
    knex,
    [
      ...others.map((o, i) => o.event(0, 'UserRegistered', { name: `Other ${i}`, email: `other${i}@example.org` })),
      u.event(0, 'UserRegistered', { name, email }),
      u.event(1, 'UserRenamed', { name: `${name} Jr` }),
      { ...u.event(2, 'UserRenamed', {}), data: { userId: u.id, name: poisonName, occurredAt: 'never' } },
      u.event(3, 'UserEmailChanged', { email: `held.${email}`, previousEmail: email }),
    ],
    new Map([['$all', '1']]),
  );
  const files = [file, `${file}-wal`];
  const scan = (text: string) => files.filter((f) => fileHolds(f, text));
  // The scan is proven: before forgetting it finds them.
  t.ok(scan(name).length > 0, 'the name is on disk before forgetting');
  t.ok(scan(email).length > 0, 'the email is on disk before forgetting');
  t.ok(scan(poisonName).length > 0, 'the parked payload is on disk before forgetting');
  // Some of it checkpointed into the DB file too, as happens in production over time.
  await knex.raw('PRAGMA wal_checkpoint(PASSIVE)');
  t.ok(fileHolds(file, email), 'the email is in the DB file itself too');

  // A read API connection (idle) does not prevent the truncation.
  const applied = await applyBatch(knex, [u.event(4, 'UserForgotten', {})], new Map([['$all', '2']]));
  t.equal(applied.forgotten, 1);
  t.match(await row(knex, u.id), { STATUS: 'forgotten', NAME: '', EMAIL: '' });
  t.notOk(walTruncationPending(knex), 'the WAL was truncated');
  t.equal(existsSync(`${file}-wal`) ? readFileSync(`${file}-wal`).length : 0, 0, 'the WAL is empty');
  for (const text of [name, email, poisonName, `held.${email}`, 'Quorvendale', 'quorvendale']) {
    t.same(scan(text), [], `${text} is in no file`);
  }
  t.ok(scan('Other 7').length > 0, 'other users are still there');
  t.ok(await eraseFreedPages(knex), 'eraseFreedPages can be called again');
});

/**
 * An embedded read DB in a directory of its own, migrated, with a reader of the read
 * API's kind (see query-side/user-reads.ts) that can hold a read transaction open, as
 * a long read does: it pins the WAL.
 */
async function readDbWithReader(prefix: string) {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const file = join(dir, 'queries.sqlite');
  const knex = await openReadDb({ client: 'sqlite', file });
  await migrateReadDb(knex);
  const reader = new Database(file, { fileMustExist: true });
  reader.pragma('query_only = ON');
  return {
    file,
    knex,
    pinWal() {
      reader.exec('BEGIN');
      reader.prepare('SELECT COUNT(*) FROM USER_DATA').get();
    },
    unpinWal: () => void reader.exec('COMMIT'),
    async close() {
      if (reader.open) reader.close();
      await knex.destroy();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

void t.test('SQLite: a reader in the WAL delays the truncation to the next batch, which then erases the bytes', async (t) => {
  const { file, knex, pinWal, unpinWal, close } = await readDbWithReader('users-forget-wal-');
  t.teardown(close);
  const email = 'delayed.truncation@bytes.example.org';
  const u = stream();
  await applyBatch(knex, [u.event(0, 'UserRegistered', { name: 'Delayed Truncation', email })], new Map());
  pinWal();
  await applyBatch(knex, [u.event(1, 'UserForgotten', {})], new Map());
  t.ok(walTruncationPending(knex), 'the truncation could not finish and is remembered');
  t.match(await row(knex, u.id), { STATUS: 'forgotten' }, 'the batch committed all the same');
  unpinWal();
  // The next batch, whatever it holds, tries again.
  const other = stream();
  await applyBatch(knex, [other.event(0, 'UserRegistered', { name: 'Someone Else', email: 'else@example.org' })], new Map());
  t.notOk(walTruncationPending(knex), 'truncated after the next batch');
  t.notOk(fileHolds(file, email) || fileHolds(`${file}-wal`, email), 'the email is in no file');
  t.notOk(fileHolds(file, 'Delayed Truncation') || fileHolds(`${file}-wal`, 'Delayed Truncation'), 'the name is in no file');
});

void t.test('SQLite: with no next batch, the projector truncates the WAL a reader held after a forget within seconds', async (t) => {
  const { file, knex, pinWal, unpinWal, close } = await readDbWithReader('users-forget-idle-');
  const email = 'idle.truncation@bytes.example.org';
  const u = stream();
  // A feed the test hands batches to, as the log would.
  const queue: FeedBatch[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  const feed: EventFeed = {
    async *batches() {
      while (!closed) {
        const next = queue.shift();
        if (next) yield next;
        else await new Promise<void>((resolve) => (wake = resolve));
      }
    },
    close() {
      closed = true;
      wake?.();
      return Promise.resolve();
    },
  };
  const hand = (events: ProjectedEvent[]) => {
    queue.push({ events, checkpoints: new Map([['log', String(events.at(-1)!.position)]]) });
    wake?.();
  };
  const projector = userProjector({ db: knex, feed, logger: pino({ level: 'silent' }), housekeepingMs: 100 });
  void projector.start();
  t.teardown(async () => {
    await projector.stop();
    await close();
  });
  hand([u.event(0, 'UserRegistered', { name: 'Idle Truncation', email })]);
  await waitFor(async () => (await row(knex, u.id)) !== undefined, 5000, 'the registration applied');
  // A long read of the read API pins the WAL while the forget commits.
  pinWal();
  hand([u.event(1, 'UserForgotten', {})]);
  await waitFor(async () => (await row(knex, u.id))?.STATUS === 'forgotten', 5000, 'the forget applied');
  t.ok(walTruncationPending(knex), 'the truncation could not finish while the reader was in the WAL');
  unpinWal();
  // No further batch comes.
  await waitFor(() => !walTruncationPending(knex), 5000, 'the projector to truncate the WAL on its own');
  t.notOk(fileHolds(file, email) || fileHolds(`${file}-wal`, email), 'the email is in no file');
  t.notOk(fileHolds(file, 'Idle Truncation') || fileHolds(`${file}-wal`, 'Idle Truncation'), 'the name is in no file');
});

void t.test('SQLite: a truncation a reader held when the projector stopped is done by the next projector to start', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'users-forget-restart-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'queries.sqlite');
  const email = 'restart.truncation@bytes.example.org';
  const before = await openReadDb({ client: 'sqlite', file });
  await migrateReadDb(before);
  const reader = new Database(file, { fileMustExist: true });
  t.teardown(() => {
    if (reader.open) reader.close();
  });
  const u = stream();
  await applyBatch(before, [u.event(0, 'UserRegistered', { name: 'Restart Truncation', email })], new Map());
  reader.exec('BEGIN');
  reader.prepare('SELECT COUNT(*) FROM USER_DATA').get();
  await applyBatch(before, [u.event(1, 'UserForgotten', {})], new Map());
  t.ok(walTruncationPending(before), 'the truncation could not finish while the reader was in the WAL');
  // The projector stops (a deploy, a crash) before its housekeeping comes round; the reader then finishes.
  await before.destroy();
  reader.exec('COMMIT');
  t.ok(fileHolds(`${file}-wal`, email), 'the WAL still holds the erased email');

  const after = await openReadDb({ client: 'sqlite', file });
  const feed: EventFeed = {
    // Nothing to apply: the feed waits until it is closed.
    async *batches(): AsyncGenerator<FeedBatch> {
      await new Promise<void>((resolve) => (stopFeed = resolve));
      yield* [];
    },
    close() {
      stopFeed?.();
      return Promise.resolve();
    },
  };
  let stopFeed: (() => void) | undefined;
  const projector = userProjector({ db: after, feed, logger: pino({ level: 'silent' }), housekeepingMs: 100 });
  void projector.start();
  t.teardown(async () => {
    await projector.stop();
    await after.destroy();
  });
  await waitFor(() => !fileHolds(`${file}-wal`, email) && !fileHolds(`${file}-wal`, 'Restart Truncation'), 5000, 'the new projector to truncate the WAL, with no batch to apply');
  t.notOk(fileHolds(file, email) || fileHolds(file, 'Restart Truncation'), 'and the database file holds neither');
});
