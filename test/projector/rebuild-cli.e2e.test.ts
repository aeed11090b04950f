import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Knex } from 'knex';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { userProjector } from '../../projector/projector.js';
import { shadowUserData } from '../../projector/shadow-table.js';
import { buildQueryApp } from '../../query-side/app.js';
import { eventStoreFeed, globalLogSource } from '../../shared/event-feed/event-store-feed.js';
import { sqliteEventStore } from '../../shared/event-store/sqlite-event-store.js';
import { runScript, type RunningScript } from '../support/processes.js';
import { forEachReadDb, mariadbUrl, readDbUrl } from '../support/read-dbs.js';
import { expectedRows, seedUsers, tableRows, waitFor } from '../support/seed.js';
import { userCommands } from '../../command-side/user-commands.js';
import { openSqliteKeyStore } from '../../shared/personal-data/sqlite-key-store.js';
import { openVault } from '../../shared/personal-data/vault.js';

/**
 * `npm run rebuild` as an operator runs it: its own process, configured by the
 * environment, against the embedded event store and each read DB.
 */
const logger = pino({ level: 'silent' });
const heartbeatMs = 200;

const exitOf = (run: RunningScript) =>
  new Promise<number | null>((resolve) => {
    if (run.child.exitCode !== null || run.child.signalCode !== null) resolve(run.child.exitCode);
    else run.child.once('exit', (code) => resolve(code));
  });

const shadowFlushed = async (db: Knex) =>
  (await db.schema.hasTable('USER_DATA_REBUILD')) && (await shadowUserData(db).count()) > 0;

async function assertNoLeftovers(t: Test, db: Knex) {
  t.notOk(await db.schema.hasTable('USER_DATA_REBUILD'), 'no shadow table left');
  t.match(await db('PROJECTION_CONTROL').where({ PROJECTION: 'USER_DATA' }).first(), { REBUILD_OWNER: null, PAUSED_BY: null });
}

forEachReadDb(t, async (t, db) => {
  const dir = await mkdtemp(join(tmpdir(), 'users-rebuild-cli-'));
  const store = sqliteEventStore({ file: join(dir, 'events.sqlite'), pollMs: 5 });
  // The key store the rebuild's process opens too (KEY_STORE_URL below).
  const keyStore = openSqliteKeyStore(join(dir, 'keys.sqlite'));
  const vault = await openVault({ keyStore });
  t.teardown(async () => {
    await store.close();
    await keyStore.close();
    await rm(dir, { recursive: true, force: true });
  });
  const commands = userCommands({ store, vault, emailGraceMs: 60_000 });
  await seedUsers(commands, 80);
  const projector = userProjector({ db, feed: eventStoreFeed(store, { vault, batchSize: 50 }), logger, pausePollMs: 10 });
  void projector.start();
  t.teardown(() => projector.stop());
  const caughtUp = async () => {
    const last = (await store.headPosition!())!.toString();
    await waitFor(() => projector.status().checkpoints[globalLogSource] === last, 10_000, 'the live projector to reach the head');
  };
  await caughtUp();

  const env = { DATA_DIR: dir, READ_DB_URL: readDbUrl(db), KEY_STORE_URL: `sqlite://${join(dir, 'keys.sqlite')}`, REBUILD_HEARTBEAT_MS: String(heartbeatMs) };
  const slowly = { REBUILD_PAGE_DELAY_MS: '40' };
  const smallSteps = ['--batch-size', '10', '--max-rows', '30'];
  const rebuild = (extraEnv: Record<string, string>, args: string[] = []) =>
    runScript(t, 'scripts/rebuild.ts', { ...env, ...extraEnv }, args);

  await t.test('killed mid-way: the live table keeps serving, the next run says so and succeeds', async (t) => {
    const before = await tableRows(db);
    const killed = rebuild(slowly, smallSteps);
    await waitFor(() => shadowFlushed(db), 20_000, 'the shadow to be part built');
    killed.child.kill('SIGKILL');
    await exitOf(killed);
    const killedAt = Date.now();

    t.same(await tableRows(db), before, 'the live table is as it was');
    const query = buildQueryApp({ db, consistencyWaitMs: 500 });
    t.teardown(() => query.close());
    const read = await query.inject({ url: '/users?limit=5' });
    t.equal(read.statusCode, 200, 'reads answer');
    t.equal(read.json().items.length, 5);

    const { id } = await commands.register({ name: 'After the kill', email: 'after.kill@example.org' });
    await waitFor(async () => (await db('USER_DATA').where('ID_USER_DATA', id)).length === 1, 10_000, 'the projector to keep working');

    await new Promise((resolve) => setTimeout(resolve, Math.max(0, killedAt + 3 * heartbeatMs + 100 - Date.now())));
    const second = rebuild({}, ['--verify']);
    t.equal(await exitOf(second), 0, second.output());
    t.match(second.output(), /an earlier rebuild was interrupted/);
    t.match(second.output(), /rebuilt USER_DATA: \d+ events, 81 rows/);
    t.match(second.output(), /verify: 81 rows compared: 0 missing, 0 extra, 0 different/);
    await caughtUp();
    t.same(await tableRows(db), await expectedRows(store, { vault }));
    await assertNoLeftovers(t, db);
  });

  await t.test('a second run is refused; Ctrl-C leaves the live table, drops the shadow, exits 130', async (t) => {
    await db('USER_DATA').where('ID_USER_DATA', (await tableRows(db))[0]!.ID_USER_DATA).update({ NAME: 'Kept as it is' });
    const before = await tableRows(db);
    // Slow enough (about 20 s in all) that a second process started on a busy machine still finds it
    // running; it is interrupted as soon as the refusal is seen, and the delay gives way to the signal.
    const interrupted = rebuild({ REBUILD_PAGE_DELAY_MS: '500' }, smallSteps);
    await waitFor(() => shadowFlushed(db), 40_000, 'the shadow to be part built');

    const refused = rebuild({});
    t.equal(await exitOf(refused), 4, 'only one rebuild at a time');
    t.match(refused.output(), /^rebuild: another rebuild is running \(owner [^ ]+:\d+:\w+, last heartbeat [\d.]+ s ago\); only one may run at a time/);
    t.equal(interrupted.child.exitCode, null, 'the first one was still running');

    interrupted.child.kill('SIGINT');
    t.equal(await exitOf(interrupted), 130, interrupted.output());
    t.match(interrupted.output(), /the live table was left as it was and the shadow table dropped/);
    t.same(await tableRows(db), before);
    await assertNoLeftovers(t, db);
  });

  await t.test('unreachable read DB or event store: one clear line, exit 1', async (t) => {
    const unreachable = [
      rebuild({ READ_DB_URL: db.client.config.client === 'mysql2' ? 'mysql://root@127.0.0.1:1/queries' : `sqlite://${join(dir, 'events.sqlite', 'queries.sqlite')}` }),
      rebuild({ EVENTSTORE_URL: 'esdb://127.0.0.1:1?tls=false' }),
    ];
    for (const run of unreachable) {
      t.equal(await exitOf(run), 1);
      const lines = run.output().trim().split('\n');
      t.equal(lines.length, 1, `one line: ${run.output()}`);
      t.match(lines[0], /^rebuild failed: (cannot reach mysql:\/\/\*\*\*@127\.0\.0\.1:1\/queries: ECONNREFUSED|no read DB at .+; nothing was created|EventStoreDB unavailable)/);
    }
    await assertNoLeftovers(t, db);
  });

  await t.test('a mistyped DATA_DIR or read DB: one line naming what is missing, exit 1, nothing created', async (t) => {
    const before = await tableRows(db);
    const typo = join(dir, 'dta');
    const noStore = rebuild({ DATA_DIR: typo });
    t.equal(await exitOf(noStore), 1);
    t.equal(
      noStore.output(),
      `rebuild failed: no embedded event store at ${join(typo, 'events.sqlite')}: the directory ${typo} does not exist; nothing was created ` +
        '(the path comes from DATA_DIR or EVENT_STORE_FILE; EVENTSTORE_URL selects EventStoreDB)\n',
    );
    t.notOk(existsSync(typo), 'the directory was not created');
    const wrongFile = rebuild({ EVENT_STORE_FILE: join(dir, 'event.sqlite') });
    t.equal(await exitOf(wrongFile), 1);
    t.match(wrongFile.output(), `rebuild failed: no embedded event store at ${join(dir, 'event.sqlite')}; nothing was created`);

    if (db.client.config.client === 'mysql2') {
      const database = `queries_missing_${randomBytes(4).toString('hex')}`;
      const noReadDb = rebuild({ READ_DB_URL: `${mariadbUrl.replace(/\/$/, '')}/${database}` });
      t.equal(await exitOf(noReadDb), 1);
      t.match(noReadDb.output(), new RegExp(`^rebuild failed: the read DB "${database}" does not exist on mysql://[^@/]+; nothing was created[^\n]*\n$`));
      t.same(await db('information_schema.SCHEMATA').where('SCHEMA_NAME', database).select('SCHEMA_NAME'), [], 'the database was not created');
    } else {
      const elsewhere = join(dir, 'elsewhere');
      const noReadDb = rebuild({ READ_DB_URL: `sqlite://${join(elsewhere, 'queries.sqlite')}` });
      t.equal(await exitOf(noReadDb), 1);
      t.match(noReadDb.output(), new RegExp(`^rebuild failed: no read DB at ${join(elsewhere, 'queries.sqlite')}: the directory ${elsewhere} does not exist; nothing was created[^\n]*\n$`));
      t.notOk(existsSync(elsewhere), 'the directory was not created');
    }
    const noKeys = rebuild({ KEY_STORE_URL: `sqlite://${join(dir, 'keys-elsewhere.sqlite')}` });
    t.equal(await exitOf(noKeys), 1);
    t.match(noKeys.output(), `rebuild failed: no embedded key store at ${join(dir, 'keys-elsewhere.sqlite')}; nothing was created`, 'a missing key store is refused: it would rebuild everyone as forgotten');
    t.same((await readdir(dir)).filter((name) => !name.startsWith('events.sqlite') && name !== 'keys.sqlite'), [], 'no file was created beside the event store');
    t.same(await tableRows(db), before, 'the live table is untouched');
    await assertNoLeftovers(t, db);
  });

  await t.test("a key store that is not the service's (another one that exists): refused before the swap, exit 1", async (t) => {
    const before = await tableRows(db);
    const otherFile = join(dir, 'keys-other.sqlite');
    const other = openSqliteKeyStore(otherFile);
    await openVault({ keyStore: other });
    await other.close();
    const wrongKeys = rebuild({ KEY_STORE_URL: `sqlite://${otherFile}` });
    t.equal(await exitOf(wrongKeys), 1);
    t.match(
      wrongKeys.output(),
      new RegExp(`rebuild failed: \\d+ users would be rebuilt as forgotten though nobody forgot them \\(e\\.g\\. user-[0-9a-f-]{36}\\): the key store lacks their keys\\..* \\(the key store read: ${otherFile.replace(/[.]/g, '\\.')}\\)\\n$`),
    );
    t.same(await tableRows(db), before, 'the live table is untouched: nobody made forgotten');
    await assertNoLeftovers(t, db);
    const looking = rebuild({ KEY_STORE_URL: `sqlite://${otherFile}` }, ['--dry-run']);
    t.equal(await exitOf(looking), 0, 'a dry run only warns');
    t.match(looking.output(), /warning: \d+ users nobody forgot would be rebuilt as forgotten/);
    await assertNoLeftovers(t, db);
  });
});
