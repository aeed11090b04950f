import { randomUUID } from 'node:crypto';
import t from 'tap';
import { applyBatch } from '../../projector/apply-batch.js';
import { classify } from '../../projector/classify.js';
import { applyPreparedOnSqlite } from '../../projector/sqlite-batch.js';
import { applyPreparedOnMariaDb } from '../../projector/mariadb-batch.js';
import { userRowFrom } from '../../projector/user-row.js';
import type { ProjectedEvent } from '../../shared/event-feed/port.js';
import { checkpointTable } from '../../shared/read-model/checkpoints.js';
import { userDataTable } from '../../shared/read-model/user-row.js';
import { openReadDb } from '../../shared/read-db.js';
import { openUnlessAbsent, readDbsUnderTest } from '../support/read-dbs.js';
import { seededRandom } from '../support/seeded-random.js';
import { everything, randomLog } from '../support/random-log.js';

/**
 * The prepared batch paths (`projector/sqlite-batch.ts` on the embedded read DB,
 * `projector/mariadb-batch.ts` on MariaDB) against the knex path they stand in
 * for: the same batches, from the same random log, into two read DBs, must leave
 * the same rows, checkpoints and quarantine after every batch. The log holds
 * replays, events of streams held back by a poison event, and forgets, so batches
 * that need the full path are among them.
 */
const preparedPath = { sqlite: applyPreparedOnSqlite, mariadb: applyPreparedOnMariaDb };
const seed = Number(process.env.FUZZ_SEED ?? 20261202);

for (const kind of readDbsUnderTest) void t.test(`${kind.name}: prepared batches leave the read DB exactly as the knex path does, batch after batch`, async (t) => {
  const random = seededRandom(seed);
  const first = await openUnlessAbsent(t, kind);
  if (!first) return;
  const { db: prepared } = first;
  const { db: builder } = await kind.open(t);
  const log = randomLog(random, 40);
  let batches = 0;
  for (let i = 0; i < log.length; batches++) {
    const batch = log.slice(i, (i += 1 + Math.floor(random() * 12)));
    const checkpoints = new Map([['log', batch.at(-1)!.position!.toString()]]);
    const [a, b] = [await applyBatch(prepared, batch, checkpoints), await applyBatch(builder, batch, checkpoints, { viaQueryBuilder: true })];
    t.same(a, b, `batch ${batches}: the same outcome`, { diagnostic: false });
  }
  const [a, b] = [await everything(prepared), await everything(builder)];
  t.ok(a.rows.length > 10 && a.parked.length > 0, `a log with rows (${a.rows.length}) and a quarantine (${a.parked.length}); seed ${seed}`);
  t.same(a, b, `after ${batches} batches of ${log.length} events: the same rows, checkpoints and quarantine`);
});

for (const kind of readDbsUnderTest) void t.test(`${kind.name}: the prepared path takes a batch it can apply whole, and leaves one that needs more untouched`, async (t) => {
  const opened = await openUnlessAbsent(t, kind);
  if (!opened) return;
  const { db, config } = opened;
  const applyPrepared = preparedPath[kind.name];
  const userId = randomUUID();
  const occurredAt = '2026-01-01T00:00:00.000Z';
  const registered: ProjectedEvent = { streamId: `user-${userId}`, revision: 0, type: 'UserRegistered', data: { userId, name: 'Ada', email: 'ada@example.org', occurredAt }, position: 1n };
  const batch = (events: ProjectedEvent[], position: string) => {
    const classified = events.flatMap((e) => classify(e) ?? []);
    const streams = [...new Set(classified.map((c) => c.streamId))];
    return { classified, ids: streams.map((s) => s.slice('user-'.length)), streams, checkpoints: new Map([['log', position]]), fold: userRowFrom };
  };
  if (kind.name === 'mariadb') {
    // A connection that takes one statement at a time (the other roles'): nothing sent, the knex path runs it.
    const single = await openReadDb(config);
    t.teardown(() => single.destroy());
    t.equal(await applyPrepared(single, batch([registered], '1')), undefined, 'one statement at a time: left to the knex path');
    t.same(await db(userDataTable).select('ID_USER_DATA'), [], 'nothing written');
  }
  t.same(await applyPrepared(db, batch([registered], '1')), { rows: 1 }, 'taken by the prepared path');
  t.match(await db(userDataTable).first(), { ID_USER_DATA: userId, NAME: 'Ada', EMAIL: 'ada@example.org', STATUS: 'registered', VERSION: 0 });
  t.same(await db(checkpointTable).select('SOURCE', 'POSITION'), [{ SOURCE: 'log', POSITION: '1' }]);

  const before = await everything(db);
  const forget: ProjectedEvent = { streamId: `user-${userId}`, revision: 1, type: 'UserForgotten', data: { userId, occurredAt }, position: 2n };
  const poison: ProjectedEvent = { streamId: `user-${userId}`, revision: 1, type: 'UserRenamed', data: { userId, name: 7, occurredAt }, position: 2n };
  for (const [what, event] of [['a forget', forget], ['a poison event', poison]] as const) {
    t.equal(await applyPrepared(db, batch([event], '2')), undefined, `${what}: left to the full path`);
    t.same(await everything(db), before, `${what}: nothing written`);
  }
});
