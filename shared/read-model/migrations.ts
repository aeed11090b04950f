import type { Knex } from 'knex';

/**
 * The read model's schema, as knex migrations kept in code (no files to find at
 * run time). The proof of concept's names ID_USER_DATA, NAME and DATE_REGISTER
 * stay. EMAIL is indexed but deliberately not UNIQUE: events of different users
 * may be applied out of their real order, and uniqueness belongs to the write side.
 */
const migrations: Record<string, Knex.Migration> = {
  '0001_user_data': {
    async up(knex) {
      await knex.schema.createTable('USER_DATA', (table) => {
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
      await knex.schema.createTable('PROJECTION_CHECKPOINT', (table) => {
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
      await knex.schema.createTable('PROJECTION_CONTROL', (table) => {
        table.string('PROJECTION', 64).primary();
        table.string('PAUSED_BY', 191).nullable();
        table.datetime('PAUSED_UNTIL', { precision: 3 }).nullable();
        table.string('REBUILD_OWNER', 191).nullable();
        table.datetime('REBUILD_STARTED', { precision: 3 }).nullable();
        table.datetime('REBUILD_HEARTBEAT', { precision: 3 }).nullable();
      });
      await knex('PROJECTION_CONTROL').insert({ PROJECTION: 'USER_DATA' });
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
      await knex.schema.createTable('PROJECTION_DEAD_LETTER', (table) => {
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
};

const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: () => Promise.resolve(Object.keys(migrations).sort()),
  getMigrationName: (name) => name,
  getMigration: (name) => Promise.resolve(migrations[name]!),
};

/**
 * Brings the schema up to date. Two processes starting on a fresh database can
 * race to create knex's own bookkeeping tables; the loser simply tries again.
 */
export async function migrateReadDb(db: Knex): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await db.migrate.latest({ migrationSource });
      return;
    } catch (error) {
      if (attempt >= 3) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
    }
  }
}
