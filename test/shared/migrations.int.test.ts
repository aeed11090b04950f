import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import t, { type Test } from 'tap';
import { openReadDb } from '../../shared/read-db.js';
import { migrateReadDb } from '../../shared/read-model/migrations.js';
import { mariadbMissing, mariadbUrl } from '../support/read-dbs.js';

/**
 * The read DB's schema on MariaDB, made by several processes starting at once (the projector and
 * every read API replica migrate at start) or after one died while migrating: every start succeeds.
 */

async function freshDatabase(t: Test): Promise<{ url: string; open: () => Promise<Knex> } | undefined> {
  if (await mariadbMissing(t)) return undefined;
  const database = `queries_test_${randomBytes(6).toString('hex')}`;
  const url = `${mariadbUrl.replace(/\/$/, '')}/${database}`;
  const opened: Knex[] = [];
  t.teardown(async () => {
    await opened[0]?.raw('DROP DATABASE IF EXISTS ??', [database]);
    for (const db of opened) await db.destroy();
  });
  return {
    url,
    async open() {
      const db = await openReadDb({ client: 'mysql', url });
      opened.push(db);
      return db;
    },
  };
}

const tables = async (db: Knex) => ((await db.raw('SHOW TABLES')) as [Record<string, string>[]])[0].map((row) => Object.values(row)[0]!).sort();

void t.test('eight processes migrating a new database at once all start, and leave one lock row', async (t) => {
  for (let round = 0; round < 4; round++) {
    const fresh = await freshDatabase(t);
    if (!fresh) return;
    const dbs = await Promise.all(Array.from({ length: 8 }, () => fresh.open()));
    const outcomes = await Promise.allSettled(dbs.map((db) => migrateReadDb(db)));
    t.same(
      outcomes.filter((o) => o.status === 'rejected').map((o) => String(o.reason)),
      [],
      `round ${round}: every one succeeded`,
    );
    t.same(await dbs[0]!('knex_migrations_lock').select('is_locked'), [{ is_locked: 0 }], `round ${round}: one lock row, free`);
    t.equal(Number((await dbs[0]!('knex_migrations').count({ n: '*' }))[0]!.n), 3, `round ${round}: each migration recorded once`);
    t.same(await dbs[0]!('PROJECTION_CONTROL').select('PROJECTION'), [{ PROJECTION: 'USER_DATA' }], `round ${round}: one control row`);
  }
});

void t.test('a process that died while migrating (a table made, the lock left set) does not stop the next start', async (t) => {
  const fresh = await freshDatabase(t);
  if (!fresh) return;
  const db = await fresh.open();
  // What a process killed after the first CREATE leaves on MariaDB, where each CREATE commits at once:
  // knex's tables, its lock set, USER_DATA made, nothing recorded (made here from a whole migration, undone).
  await migrateReadDb(db);
  await db('knex_migrations').delete();
  for (const table of ['PROJECTION_CHECKPOINT', 'PROJECTION_CONTROL', 'PROJECTION_DEAD_LETTER']) await db.schema.dropTable(table);
  await db('knex_migrations_lock').update({ is_locked: 1 });
  t.same(await tables(db), ['USER_DATA', 'knex_migrations', 'knex_migrations_lock'], 'the state a crash after the first CREATE leaves');
  await migrateReadDb(await fresh.open());
  t.same(await tables(db), ['PROJECTION_CHECKPOINT', 'PROJECTION_CONTROL', 'PROJECTION_DEAD_LETTER', 'USER_DATA', 'knex_migrations', 'knex_migrations_lock']);
  t.same(await db('knex_migrations_lock').select('is_locked'), [{ is_locked: 0 }], 'the lock is free again');
  t.same((await db('knex_migrations').select('name').orderBy('id')).map((row: { name: string }) => row.name), ['0001_user_data', '0002_projection_control', '0003_projection_dead_letter']);
  await migrateReadDb(await fresh.open());
  t.same((await db('knex_migrations').select('name')).length, 3, 'and the start after that finds nothing to do: no migration recorded twice');
  t.same(await db('knex_migrations_lock').select('is_locked'), [{ is_locked: 0 }], 'the lock free');
});
