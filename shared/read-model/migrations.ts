import type { Knex } from 'knex';
import { StoreUnavailableError } from '../errors.js';
import { readDbDialect } from './dialect.js';
import { foldedNameIndex, foldNameFunction, foldNameVersion } from './name-search.js';

/**
 * The read model's schema, as knex migrations kept in code (no files to find at
 * run time). The proof of concept's names ID_USER_DATA, NAME and DATE_REGISTER
 * stay. EMAIL is indexed but deliberately not UNIQUE: events of different users
 * may be applied out of their real order, and uniqueness belongs to the write side.
 */
/**
 * A table made only if it is missing: on MariaDB every CREATE commits at once, so a process that died
 * between two of a migration's left the first for the next start (under the advisory lock below).
 */
async function createMissing(knex: Knex, table: string, build: (table: Knex.CreateTableBuilder) => void): Promise<void> {
  if (!(await knex.schema.hasTable(table))) await knex.schema.createTable(table, build);
}

const migrations: Record<string, Knex.Migration> = {
  '0001_user_data': {
    async up(knex) {
      await createMissing(knex, 'USER_DATA', (table) => {
        table.string('ID_USER_DATA', 36).primary();
        table.string('NAME', 255).notNullable();
        table.string('EMAIL', 254).notNullable();
        table.string('STATUS', 16).notNullable();
        table.datetime('DATE_REGISTER', { precision: 3 }).notNullable();
        table.datetime('DATE_VALIDATED', { precision: 3 }).nullable();
        table.datetime('DATE_DEACTIVATED', { precision: 3 }).nullable();
        table.datetime('DATE_UPDATED', { precision: 3 }).notNullable();
        table.integer('VERSION').unsigned().notNullable();
        table.index(['EMAIL'], 'IDX_USER_DATA_EMAIL');
        table.index(['NAME', 'ID_USER_DATA'], 'IDX_USER_DATA_NAME');
        table.index(['STATUS', 'ID_USER_DATA'], 'IDX_USER_DATA_STATUS');
      });
      await createMissing(knex, 'PROJECTION_CHECKPOINT', (table) => {
        table.string('PROJECTION', 64).notNullable();
        table.string('SOURCE', 191).notNullable();
        table.string('POSITION', 40).notNullable();
        table.datetime('DATE_UPDATED', { precision: 3 }).notNullable();
        table.primary(['PROJECTION', 'SOURCE']);
      });
    },
    async down(knex) {
      await knex.schema.dropTable('PROJECTION_CHECKPOINT');
      await knex.schema.dropTable('USER_DATA');
    },
  },
  /**
   * One row per projection that a rebuild coordinates through: the pause that
   * holds the live projector while the rebuilt table is swapped in, and the lock
   * (owner + heartbeat) that lets only one rebuild run at a time.
   */
  '0002_projection_control': {
    async up(knex) {
      await createMissing(knex, 'PROJECTION_CONTROL', (table) => {
        table.string('PROJECTION', 64).primary();
        table.string('PAUSED_BY', 191).nullable();
        table.datetime('PAUSED_UNTIL', { precision: 3 }).nullable();
        table.string('REBUILD_OWNER', 191).nullable();
        table.datetime('REBUILD_STARTED', { precision: 3 }).nullable();
        table.datetime('REBUILD_HEARTBEAT', { precision: 3 }).nullable();
      });
      if (!(await knex('PROJECTION_CONTROL').where({ PROJECTION: 'USER_DATA' }).first())) await knex('PROJECTION_CONTROL').insert({ PROJECTION: 'USER_DATA' });
    },
    async down(knex) {
      await knex.schema.dropTable('PROJECTION_CONTROL');
    },
  },
  /**
   * Quarantined events: one that the projector cannot apply ('failed', with the
   * error) and the later events of the same stream held back behind it ('held'),
   * so a user's events are never applied out of order. 'skipped' rows stay as the
   * record of what an operator chose to leave out. One row per stream revision:
   * a redelivered event adds nothing.
   */
  '0003_projection_dead_letter': {
    async up(knex) {
      await createMissing(knex, 'PROJECTION_DEAD_LETTER', (table) => {
        table.bigIncrements('ID').primary();
        table.string('PROJECTION', 64).notNullable();
        table.string('STREAM_ID', 200).notNullable();
        // -1 when a message was too broken to tell its revision.
        table.integer('REVISION').notNullable();
        table.string('EVENT_TYPE', 200).notNullable();
        table.text('DATA', 'mediumtext').notNullable();
        table.string('STATE', 16).notNullable();
        table.text('ERROR').notNullable();
        table.integer('ATTEMPTS').notNullable();
        table.string('SOURCE', 191).nullable();
        table.string('POSITION', 40).nullable();
        table.datetime('DATE_PARKED', { precision: 3 }).notNullable();
        table.datetime('DATE_UPDATED', { precision: 3 }).notNullable();
        table.unique(['PROJECTION', 'STREAM_ID', 'REVISION'], { indexName: 'UQ_DEAD_LETTER_EVENT' });
        table.index(['PROJECTION', 'STATE'], 'IDX_DEAD_LETTER_STATE');
      });
    },
    async down(knex) {
      await knex.schema.dropTable('PROJECTION_DEAD_LETTER');
    },
  },
  /**
   * The embedded read DB finds names by a prefix through an index on the name folded
   * (`shared/read-model/name-search.ts`), which replaces the index on NAME itself: no query
   * of the embedded read DB could use that one (SQLite's case-insensitive LIKE uses no
   * index on a binary column). MariaDB keeps its index, which its collation serves.
   */
  '0004_name_folded_index': {
    async up(knex) {
      if (readDbDialect(knex).kind === 'mariadb') return;
      await knex.raw(
        `CREATE INDEX IF NOT EXISTS ${foldedNameIndex} ON USER_DATA (${foldNameFunction}(NAME), STATUS, ID_USER_DATA)`,
      );
      await knex.raw('DROP INDEX IF EXISTS IDX_USER_DATA_NAME');
    },
    async down(knex) {
      if (readDbDialect(knex).kind === 'mariadb') return;
      await knex.raw('CREATE INDEX IF NOT EXISTS IDX_USER_DATA_NAME ON USER_DATA (NAME, ID_USER_DATA)');
      await knex.raw(`DROP INDEX IF EXISTS ${foldedNameIndex}`);
    },
  },
  /**
   * What the embedded read DB's schema depends on beyond its migrations: the fold and the Unicode
   * version the folded name's index was built with (`migrateSqlite` rebuilds the index when either changes).
   */
  '0005_read_db_meta': {
    async up(knex) {
      if (readDbDialect(knex).kind === 'mariadb') return;
      await createMissing(knex, 'READ_DB_META', (table) => {
        table.string('NAME', 64).primary();
        table.string('VALUE', 255).notNullable();
      });
    },
    async down(knex) {
      if (readDbDialect(knex).kind === 'mariadb') return;
      await knex.schema.dropTableIfExists('READ_DB_META');
    },
  },
  /**
   * How old the lock holder's heartbeat may get before its lock counts as stale: its own
   * three intervals, written when it takes the lock, so that a run started with a shorter
   * REBUILD_HEARTBEAT_MS does not take over a live run with a longer one.
   */
  '0006_rebuild_stale_after': {
    async up(knex) {
      if (await knex.schema.hasColumn('PROJECTION_CONTROL', 'REBUILD_STALE_MS')) return;
      await knex.schema.alterTable('PROJECTION_CONTROL', (table) => {
        table.integer('REBUILD_STALE_MS').nullable();
      });
    },
    async down(knex) {
      await knex.schema.alterTable('PROJECTION_CONTROL', (table) => {
        table.dropColumn('REBUILD_STALE_MS');
      });
    },
  },
};

const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: () => Promise.resolve(Object.keys(migrations).sort()),
  getMigrationName: (name) => name,
  getMigration: (name) => Promise.resolve(migrations[name]!),
};

/**
 * Brings the schema up to date. On MariaDB, where several processes (the projector, every read
 * API replica) may start on one database at once, under an advisory lock of the server's
 * (`GET_LOCK`, held by a connection of this process and let go with it, a crash included): knex's
 * own lock is a row it inserts after looking for one (two processes starting together can both
 * insert, and every later start then finds the table "already locked"), and a process that dies
 * while migrating leaves it set, since MariaDB commits each CREATE at once. Holding the advisory
 * lock, a process knows no one else is migrating, so it resets knex's lock to one free row first.
 * On SQLite, whose schema changes are transactional, without knex's migrator: see `migrateSqlite`.
 */
export async function migrateReadDb(db: Knex): Promise<void> {
  if (readDbDialect(db).kind === 'mariadb') {
    await underAdvisoryLock(db, async () => {
      await db.migrate.forceFreeMigrationsLock({ migrationSource });
      await db.migrate.latest({ migrationSource });
    });
    return;
  }
  await migrateSqlite(db);
}

/**
 * The pending migrations of an embedded read DB, all in one transaction that takes the database's
 * write lock before it reads what is done: two processes starting on one file take turns, and one
 * killed while migrating (during an index build over a large table, say) leaves nothing behind, its
 * transaction undone. knex's migrator runs each migration in a transaction of its own between
 * setting and clearing a lock row, which such a process left set: every later start of every role
 * then failed with "Migration table is already locked". The record is knex's own table, so a read
 * DB migrated by knex before goes on from where it was; knex's lock table is left as it is.
 */
async function migrateSqlite(db: Knex): Promise<void> {
  const deadline = Date.now() + migrationLockWaitSeconds * 1000;
  for (let attempt = 1; ; attempt++) {
    try {
      await db.raw(
        'CREATE TABLE IF NOT EXISTS knex_migrations (id integer not null primary key autoincrement, name varchar(255), batch integer, migration_time datetime)',
      );
      await db.transaction(async (trx) => {
        // A write first, changing nothing: the write lock before any read (busy_timeout waits for another's migration).
        await trx.raw('UPDATE knex_migrations SET name = name WHERE 0');
        const done = new Set((await trx('knex_migrations').select('name')).map((row: { name: string }) => row.name));
        const pending = Object.keys(migrations).sort().filter((name) => !done.has(name));
        if (pending.length > 0) {
          const [{ batch }] = (await trx('knex_migrations').max({ batch: 'batch' })) as [{ batch: number | null }];
          for (const name of pending) {
            await migrations[name]!.up(trx);
            await trx('knex_migrations').insert({ name, batch: Number(batch ?? 0) + 1, migration_time: new Date() });
          }
        }
        await foldedIndexOfThisFold(trx, pending.includes('0004_name_folded_index'));
      });
      return;
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      const busy = typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
      if (!busy) throw error;
      if (Date.now() >= deadline) {
        throw new StoreUnavailableError(`read DB: another process has been migrating this database for ${migrationLockWaitSeconds} s`, { cause: error });
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(200 * attempt, 1000)));
    }
  }
}

/**
 * The folded name's index (`0004_name_folded_index`) holds each name as `foldName` folded it: as that
 * version of the fold did, under the Unicode tables of the Node.js that ran it. Under another fold, or a
 * Node.js with other tables, a name may fold otherwise: SQLite would then not find the index entry of a
 * row it updates or deletes and take the index for corrupt (stopping the projector on that user), and a
 * search through the index would disagree with one that folds rows as it reads them. So the read DB
 * records what built its index (`fold <version>, unicode <version>`), and a start under anything else
 * rebuilds it (REINDEX: about a second per 500,000 users, before the role serves), a read DB that has
 * no record yet included, unless the index was made in this very transaction. Roles of one read DB
 * must run one Node.js: each start under another rebuilds the index for its own tables.
 */
async function foldedIndexOfThisFold(trx: Knex.Transaction, builtNow: boolean): Promise<void> {
  const built = `fold ${foldNameVersion}, unicode ${process.versions.unicode}`;
  const recorded = (await trx('READ_DB_META').where({ NAME: 'folded name index' }).first()) as { VALUE: string } | undefined;
  if (recorded?.VALUE === built) return;
  if (!builtNow) await trx.raw(`REINDEX ${foldedNameIndex}`);
  await trx('READ_DB_META').insert({ NAME: 'folded name index', VALUE: built }).onConflict('NAME').merge();
}

/** Seconds a process waits for another's migration of the same database. */
const migrationLockWaitSeconds = 60;

async function underAdvisoryLock(db: Knex, work: () => Promise<void>): Promise<void> {
  // One connection of the pool for the lock's whole life: MariaDB ties an advisory lock to its session.
  const pool = db.client as { acquireConnection(): Promise<unknown>; releaseConnection(connection: unknown): Promise<unknown> };
  const connection = await pool.acquireConnection();
  // One lock per database of the server (a lock's name is the server's; at most 64 characters).
  const name = db.raw("CONCAT('users-read-db-migrate:', MD5(DATABASE()))");
  try {
    const [rows] = (await db.raw('SELECT GET_LOCK(?, ?) AS taken', [name, migrationLockWaitSeconds]).connection(connection)) as [{ taken: number | null }[]];
    if (Number(rows[0]?.taken) !== 1) {
      throw new StoreUnavailableError(`read DB: another process has been migrating this database for ${migrationLockWaitSeconds} s`);
    }
    try {
      await work();
    } finally {
      await db.raw('SELECT RELEASE_LOCK(?)', [name]).connection(connection).catch(() => {});
    }
  } finally {
    await pool.releaseConnection(connection);
  }
}
