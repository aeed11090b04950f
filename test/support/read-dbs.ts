import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import type { Test } from 'tap';
import type { ReadDbConfig } from '../../shared/config.js';
import { openReadDb } from '../../shared/read-db.js';
import { migrateReadDb } from '../../shared/read-model/migrations.js';

/**
 * The read databases every read-side suite runs against: the embedded SQLite
 * file and MariaDB. MariaDB is at MARIADB_URL (default mysql://root@127.0.0.1:3306);
 * each test gets a database of its own, dropped afterwards. When MariaDB cannot
 * be reached the MariaDB cases FAIL with advice, unless MARIADB_OPTIONAL=1 says
 * it may be skipped.
 */
export const mariadbUrl = process.env.MARIADB_URL ?? 'mysql://root@127.0.0.1:3306';

/** The READ_DB_URL that names the database `db` is connected to. */
export function readDbUrl(db: Knex): string {
  const { client, connection } = db.client.config as { client: string; connection: { filename?: string; database?: string } };
  if (client === 'better-sqlite3') return `sqlite://${connection.filename}`;
  return `${mariadbUrl.replace(/\/$/, '')}/${connection.database}`;
}

/** MariaDB cannot be reached: the test has recorded it (a failure with advice, or the skip MARIADB_OPTIONAL=1 allows). */
export class MariaDbAbsent extends Error {
  override readonly name = 'MariaDbAbsent';
}

export interface ReadDbUnderTest {
  name: 'sqlite' | 'mariadb';
  open(t: Test): Promise<{ db: Knex; config: ReadDbConfig }>;
}

/**
 * Whether MariaDB is out of reach: undefined when it answers; else the advice,
 * reported as a failure (or as a skip when MARIADB_OPTIONAL=1 says it may be absent).
 */
export async function mariadbMissing(t: Test): Promise<string | undefined> {
  const problem = await mariadbReachable();
  if (!problem) return undefined;
  const advice =
    `MariaDB is not reachable at ${mariadbUrl} (${problem}). Start it with ` +
    '`start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`, ' +
    'point MARIADB_URL at one, or set MARIADB_OPTIONAL=1 to skip the MariaDB cases.';
  if (process.env.MARIADB_OPTIONAL === '1') t.pass('MariaDB cases skipped', { skip: advice });
  else t.fail(advice);
  return advice;
}

async function mariadbReachable(): Promise<string | undefined> {
  const url = new URL(mariadbUrl);
  const probe = knexFactory({
    client: 'mysql2',
    connection: {
      host: url.hostname,
      port: Number(url.port || 3306),
      user: decodeURIComponent(url.username || 'root'),
      password: decodeURIComponent(url.password),
      connectTimeout: 3000,
    },
    pool: { min: 0, max: 1 },
  });
  try {
    await probe.raw('SELECT 1');
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  } finally {
    await probe.destroy();
  }
}

export const readDbsUnderTest: ReadDbUnderTest[] = [
  {
    name: 'sqlite',
    async open(t) {
      const dir = await mkdtemp(join(tmpdir(), 'users-read-'));
      const config: ReadDbConfig = { client: 'sqlite', file: join(dir, 'queries.sqlite') };
      const db = await openReadDb(config);
      t.teardown(async () => {
        await db.destroy();
        await rm(dir, { recursive: true, force: true });
      });
      await migrateReadDb(db);
      return { db, config };
    },
  },
  {
    name: 'mariadb',
    async open(t) {
      const advice = await mariadbMissing(t);
      if (advice) throw new MariaDbAbsent(advice);
      const database = `queries_test_${randomBytes(6).toString('hex')}`;
      const config: ReadDbConfig = { client: 'mysql', url: `${mariadbUrl.replace(/\/$/, '')}/${database}` };
      // As the projector role opens it: its batches take two round trips (`projector/mariadb-batch.ts`).
      const db = await openReadDb(config, { batchStatements: true });
      t.teardown(async () => {
        await db.raw('DROP DATABASE IF EXISTS ??', [database]);
        await db.destroy();
      });
      await migrateReadDb(db);
      return { db, config };
    },
  },
];

/**
 * `kind` opened for `t`; undefined only when MariaDB cannot be reached (the test has then failed
 * with advice, or been skipped as MARIADB_OPTIONAL=1 allows). Any other failure to open or
 * migrate it fails the test: it must not pass with nothing checked.
 */
export async function openUnlessAbsent(t: Test, kind: ReadDbUnderTest | ReadDbUnderTest['name']): Promise<Awaited<ReturnType<ReadDbUnderTest['open']>> | undefined> {
  const under = typeof kind === 'string' ? readDbsUnderTest.find((candidate) => candidate.name === kind)! : kind;
  try {
    return await under.open(t);
  } catch (error) {
    if (error instanceof MariaDbAbsent) return undefined;
    throw error;
  }
}

/** Runs `body` once per read database, as subtests named after it. */
export function forEachReadDb(t: Test, body: (t: Test, db: Knex, kind: ReadDbUnderTest['name']) => Promise<void>) {
  for (const kind of readDbsUnderTest) {
    void t.test(kind.name, async (t) => {
      const opened = await openUnlessAbsent(t, kind);
      if (opened) await body(t, opened.db, kind.name);
    });
  }
}
