import { mkdtemp, rm } from 'node:fs/promises';
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
import { forEachReadDb, readDbUrl } from '../support/read-dbs.js';
import { commandsOver, expectedRows, seedUsers, tableRows, waitFor } from '../support/seed.js';

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
  t.teardown(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  const commands = commandsOver(store);
  await seedUsers(commands, 80);
  const projector = userProjector({ db, feed: eventStoreFeed(store, { batchSize: 50 }), logger, pausePollMs: 10 });
  void projector.start();
  t.teardown(() => projector.stop());
  const caughtUp = async () => {
    const last = (await store.headPosition!())!.toString();
    await waitFor(() => projector.status().checkpoints[globalLogSource] === last, 10_000, 'the live projector to reach the head');
  };
  await caughtUp();

  const env = { DATA_DIR: dir, READ_DB_URL: readDbUrl(db), REBUILD_HEARTBEAT_MS: String(heartbeatMs) };
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
    t.same(await tableRows(db), await expectedRows(store));
    await assertNoLeftovers(t, db);
  });

  await t.test('a second run is refused; Ctrl-C leaves the live table, drops the shadow, exits 130', async (t) => {
    await db('USER_DATA').where('ID_USER_DATA', (await tableRows(db))[0]!.ID_USER_DATA).update({ NAME: 'Kept as it is' });
    const before = await tableRows(db);
    const interrupted = rebuild({ REBUILD_PAGE_DELAY_MS: '200' }, smallSteps);
    await waitFor(() => shadowFlushed(db), 20_000, 'the shadow to be part built');

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
      t.match(lines[0], /^rebuild failed: (cannot reach mysql:\/\/\*\*\*@127\.0\.0\.1:1\/queries: ECONNREFUSED|cannot open the read DB \(.+\): E|EventStoreDB unavailable)/);
    }
    await assertNoLeftovers(t, db);
  });
});
