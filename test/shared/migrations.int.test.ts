import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { execFile as execFileCallback } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Knex } from 'knex';
import t, { type Test } from 'tap';
import { openReadDb, readDbConnectionOf } from '../../shared/read-db.js';
import { migrateReadDb } from '../../shared/read-model/migrations.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { foldedNameIndex, foldNameVersion } from '../../shared/read-model/name-search.js';
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

const execFile = promisify(execFileCallback);

const tables = async (db: Knex) => ((await db.raw('SHOW TABLES')) as [Record<string, string>[]])[0].map((row) => Object.values(row)[0]!).sort();

async function embeddedReadDb(t: Test) {
  const dir = await mkdtemp(join(tmpdir(), 'users-migrate-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'queries.sqlite');
  return async () => {
    const db = await openReadDb({ client: 'sqlite', file });
    t.teardown(() => db.destroy());
    return db;
  };
}

/** Writes a user whose index entry another fold made (`fold`), as a process with other Unicode tables, or an earlier fold, would have. */
function writeUnderAnotherFold(db: Knex, fold: (name: string) => string, id: string, name: string) {
  const other = new Database(readDbConnectionOf(db).filename);
  try {
    other.function('users_fold_name', { deterministic: true }, (value: unknown) => (typeof value === 'string' ? fold(value) : value));
    other
      .prepare("INSERT INTO USER_DATA VALUES (?, ?, ?, 'registered', '2026-01-01 00:00:00.000', NULL, NULL, '2026-01-01 00:00:00.000', 1)")
      .run(id, name, `${id}@example.org`);
  } finally {
    other.close();
  }
}

/** The names the folded index finds in `[from, to)`. */
const foundInIndex = async (db: Knex, from: string, to: string) =>
  db.raw<{ NAME: string }[]>(`SELECT NAME FROM USER_DATA INDEXED BY ${foldedNameIndex} WHERE users_fold_name(NAME) >= ? AND users_fold_name(NAME) < ?`, [from, to]);

const recorded = async (db: Knex) => (await db('knex_migrations').select('name')).map((row: { name: string }) => row.name).sort();
const allMigrations = ['0001_user_data', '0002_projection_control', '0003_projection_dead_letter', '0004_name_folded_index', '0005_read_db_meta', '0006_rebuild_stale_after'];

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
    t.equal(Number((await dbs[0]!('knex_migrations').count({ n: '*' }))[0]!.n), allMigrations.length, `round ${round}: each migration recorded once`);
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
  t.same((await db('knex_migrations').select('name').orderBy('id')).map((row: { name: string }) => row.name), ['0001_user_data', '0002_projection_control', '0003_projection_dead_letter', '0004_name_folded_index', '0005_read_db_meta', '0006_rebuild_stale_after']);
  await migrateReadDb(await fresh.open());
  t.same((await db('knex_migrations').select('name')).length, allMigrations.length, 'and the start after that finds nothing to do: no migration recorded twice');
  t.same(await db('knex_migrations_lock').select('is_locked'), [{ is_locked: 0 }], 'the lock free');
});

void t.test('an embedded read DB made before the folded name index gets it, and loses the index no query used', async (t) => {
  const db = await (await embeddedReadDb(t))();
  await migrateReadDb(db);
  // The schema as the first three migrations left it, with a user in it.
  await db.raw(`DROP INDEX ${foldedNameIndex}`);
  await db.raw('CREATE INDEX IDX_USER_DATA_NAME ON USER_DATA (NAME, ID_USER_DATA)');
  await db('knex_migrations').where({ name: '0004_name_folded_index' }).delete();
  const dates = { DATE_REGISTER: '2026-01-01 00:00:00.000', DATE_UPDATED: '2026-01-01 00:00:00.000', VERSION: 1 };
  await db('USER_DATA').insert({ ID_USER_DATA: '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f00e1', NAME: 'Émile Zola', EMAIL: 'e@example.org', STATUS: 'registered', ...dates });
  const indexes = async () =>
    (await db.raw<{ name: string }[]>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'USER_DATA' AND sql IS NOT NULL ORDER BY name")).map((row) => row.name);
  t.same(await indexes(), ['IDX_USER_DATA_EMAIL', 'IDX_USER_DATA_NAME', 'IDX_USER_DATA_STATUS'], 'before');
  await migrateReadDb(db);
  t.same(await indexes(), ['IDX_USER_DATA_EMAIL', foldedNameIndex, 'IDX_USER_DATA_STATUS'], 'after');
  t.same(await foundInIndex(db, 'emile', 'emilf'), [{ NAME: 'Émile Zola' }], 'the row made before is in the new index');
});

void t.test('MariaDB keeps its index on NAME, which its collation serves', async (t) => {
  const fresh = await freshDatabase(t);
  if (!fresh) return;
  const db = await fresh.open();
  await migrateReadDb(db);
  const [rows] = (await db.raw("SHOW INDEX FROM USER_DATA WHERE Key_name LIKE 'IDX_USER_DATA_NAME%'")) as [{ Key_name: string }[]];
  t.same([...new Set(rows.map((row) => row.Key_name))], ['IDX_USER_DATA_NAME']);
});

void t.test('eight processes migrating a new embedded read DB at once all start, each migration recorded once', async (t) => {
  const child = fileURLToPath(new URL('../support/migrate-child.ts', import.meta.url));
  for (let round = 0; round < 2; round++) {
    const open = await embeddedReadDb(t);
    const db = await open();
    const file = readDbConnectionOf(db).filename!;
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const started = execFile(process.execPath, ['--import', 'tsx', child, file]);
        return started.then(
          () => 'ok',
          (error: Error & { stderr?: string }) => `failed: ${error.stderr ?? error.message}`,
        );
      }),
    );
    t.same(outcomes.filter((outcome) => outcome !== 'ok'), [], `round ${round}: every one succeeded`);
    t.same(await recorded(db), allMigrations, `round ${round}: each migration recorded once`);
    t.same(await db('PROJECTION_CONTROL').select('PROJECTION'), [{ PROJECTION: 'USER_DATA' }], `round ${round}: one control row`);
  }
});

void t.test('an embedded read DB that knex left locked mid-migration (a process killed while it migrated) starts', async (t) => {
  const open = await embeddedReadDb(t);
  const db = await open();
  await migrateReadDb(db);
  // What knex's migrator left when its process died during the last migration: its lock row set, the
  // migration unrecorded (SQLite undid the migration's own transaction).
  await db.raw('CREATE TABLE IF NOT EXISTS knex_migrations_lock (`index` integer primary key, is_locked integer)');
  await db('knex_migrations_lock').delete();
  await db('knex_migrations_lock').insert({ index: 1, is_locked: 1 });
  await db('knex_migrations').where({ name: '0004_name_folded_index' }).delete();
  await db.raw(`DROP INDEX ${foldedNameIndex}`);
  await migrateReadDb(await open());
  t.same(await recorded(db), allMigrations, 'the unrecorded migration ran');
  t.same(
    await db.raw<{ name: string }[]>("SELECT name FROM sqlite_master WHERE type = 'index' AND name = ?", [foldedNameIndex]),
    [{ name: foldedNameIndex }],
  );
  await migrateReadDb(await open());
  t.same(await recorded(db), allMigrations, 'and the start after that finds nothing to do');
});

void t.test('an embedded read DB whose folded names were folded by other Unicode tables has its index rebuilt', async (t) => {
  const open = await embeddedReadDb(t);
  const db = await open();
  await migrateReadDb(db);
  // A row written by a process whose fold differs (here: upper case), as another Node.js's tables might fold a rare letter.
  writeUnderAnotherFold(db, (name) => name.toUpperCase(), '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f00e9', 'Zola');
  await db('READ_DB_META').where({ NAME: 'folded name index' }).update({ VALUE: 'fold 2, unicode 1.1' });
  t.same(await foundInIndex(db, 'zola', 'zolb'), [], 'the index entry was folded otherwise');
  await migrateReadDb(await open());
  t.same(await foundInIndex(db, 'zola', 'zolb'), [{ NAME: 'Zola' }], 'rebuilt at the next start');
  t.same(
    await db('READ_DB_META').where({ NAME: 'folded name index' }).select('VALUE'),
    [{ VALUE: `fold ${foldNameVersion}, unicode ${process.versions.unicode}` }],
    "with this fold's and this Node.js's versions recorded",
  );
});

void t.test('an embedded read DB whose folded index no record vouches for (an earlier fold built it) has it rebuilt', async (t) => {
  const open = await embeddedReadDb(t);
  const db = await open();
  await migrateReadDb(db);
  // The read DB as the first version of the index left it: no record of what built the index, a name folded otherwise.
  await db.schema.dropTable('READ_DB_META');
  await db('knex_migrations').where({ name: '0005_read_db_meta' }).delete();
  writeUnderAnotherFold(db, (name) => name.toLowerCase(), '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f00ea', 'Straße');
  t.same(await foundInIndex(db, 'stras', 'strat'), [], 'the index entry was folded the earlier way (straße)');
  await migrateReadDb(await open());
  t.same(await foundInIndex(db, 'stras', 'strat'), [{ NAME: 'Straße' }], 'rebuilt at the next start: strase');
});
