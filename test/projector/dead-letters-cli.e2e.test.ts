import { testVault } from '../support/vault.js';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { applyBatch } from '../../projector/apply-batch.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { projectionName } from '../../shared/read-model/user-row.js';
import { userStreamId } from '../../shared/user-events.js';
import { runScript } from '../support/processes.js';
import { forEachReadDb, mariadbUrl, readDbUrl } from '../support/read-dbs.js';
import { commandsOver, expectedRows, seedUsers, tableRows } from '../support/seed.js';

/** `npm run dead-letters` as an operator runs it: its own process, configured by the environment. */
forEachReadDb(t, async (t, db, kind) => {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  const [, a, b] = await seedUsers(commands, 3, 'cli');
  for (const user of [a!, b!]) {
    const stream = userStreamId(user);
    const revision = (await store.readStream(stream)).length - 1;
    // As a newer release would write them: this release's command side refuses a stream it cannot read.
    await store.appendToStream(
      stream,
      [
        { type: 'UserNicknamed', data: { userId: user } },
        { type: 'UserRenamed', data: { userId: user, name: `${user} after`, occurredAt: new Date().toISOString() } },
      ],
      { expectedRevision: revision },
    );
  }
  await applyBatch(db, await testVault.open(await store.readAll({ maxCount: 1000 })), new Map());

  const cli = async (...args: string[]) => {
    const run = runScript(t, 'scripts/dead-letters.ts', { READ_DB_URL: readDbUrl(db) }, args);
    const code = await run.exited;
    const output = run.output();
    // What a failed exit-code assertion shows: the first lines, not the whole usage text.
    return { code, output, head: output.split('\n').slice(0, 3).join(' | ') };
  };

  await t.test('list shows failed and held events with their errors; exit 3 while any are parked', async (t) => {
    const { code, output, head } = await cli('list');
    t.equal(code, 3, head);
    t.match(output, /#\d+ failed .*user-.*UserNicknamed/);
    t.match(output, /unknown event type "UserNicknamed"/);
    t.match(output, /held .*UserRenamed/);
    t.match(output, /2 failed, 2 held back behind them/);
    const json = await cli('list', '--json', '--stream', userStreamId(a!));
    t.match(JSON.parse(json.output), { counts: { failed: 2, held: 2 }, events: [{ STATE: 'failed' }, { STATE: 'held' }] });
  });

  await t.test('bad usage: exit 2 with the usage text; an unknown ID: exit 1', async (t) => {
    // Usage is checked before the read DB is opened: once is enough.
    const usageErrors = kind === 'sqlite' ? [[], ['frobnicate'], ['skip'], ['skip', 'x'], ['retry'], ['list', '--limit', '0'], ['list', '--nope']] : [['retry']];
    for (const args of usageErrors) {
      const { code, output, head } = await cli(...args);
      t.equal(code, 2, `${args.join(' ')}: ${head}`);
      t.match(output, /Usage: npm run dead-letters/);
    }
    const unknown = await cli('skip', '999999');
    t.equal(unknown.code, 1);
    t.match(unknown.output, /no parked event with ID 999999/);
  });

  await t.test('a mistyped DATA_DIR or database: exit 1 naming what is missing, and nothing is created', async (t) => {
    const run = async (env: Record<string, string>, ...args: string[]) => {
      const script = runScript(t, 'scripts/dead-letters.ts', env, args);
      return { code: await script.exited, output: script.output() };
    };
    if (kind === 'sqlite') {
      const dir = await mkdtemp(join(tmpdir(), 'users-dead-letters-'));
      t.teardown(() => rm(dir, { recursive: true, force: true }));
      const typo = join(dir, 'dta');
      for (const args of [['list'], ['retry', '--all']]) {
        const missingDir = await run({ DATA_DIR: typo, READ_DB_URL: '' }, ...args);
        t.equal(missingDir.code, 1, missingDir.output);
        t.equal(missingDir.output, `dead-letters failed: no read DB at ${join(typo, 'queries.sqlite')}: the directory ${typo} does not exist; nothing was created (the path comes from DATA_DIR or READ_DB_URL)\n`);
        t.notOk(existsSync(typo), 'the directory was not created');
      }
      const missingFile = await run({ DATA_DIR: dir, READ_DB_URL: '' }, 'list');
      t.equal(missingFile.code, 1);
      t.match(missingFile.output, `no read DB at ${join(dir, 'queries.sqlite')}; nothing was created`);
      t.same(await readdir(dir), [], 'no file was created');
    } else {
      const database = `queries_missing_${randomBytes(4).toString('hex')}`;
      const missing = await run({ READ_DB_URL: `${mariadbUrl.replace(/\/$/, '')}/${database}` }, 'list');
      t.equal(missing.code, 1, missing.output);
      t.match(missing.output, new RegExp(`^dead-letters failed: the read DB "${database}" does not exist on mysql://[^@/]+; nothing was created`));
      const found: unknown[] = await db('information_schema.SCHEMATA').where('SCHEMA_NAME', database).select('SCHEMA_NAME');
      t.same(found, [], 'the database was not created');
    }
  });

  await t.test('while a rebuild swaps its table in: exit 4 with something to do, exit 0 with nothing', async (t) => {
    const soon = (ms: number) => new Date(Date.now() + ms).toISOString().replace('T', ' ').replace('Z', '');
    await db('PROJECTION_CONTROL').where({ PROJECTION: projectionName }).update({ PAUSED_BY: 'host:1:swap', PAUSED_UNTIL: soon(60_000) });
    t.teardown(() => db('PROJECTION_CONTROL').where({ PROJECTION: projectionName }).update({ PAUSED_BY: null, PAUSED_UNTIL: null }));
    const refused = await cli('retry', userStreamId(a!));
    t.equal(refused.code, 4, refused.head);
    t.match(refused.output, /projection paused by rebuild host:1:swap/);
    const nothing = await cli('retry', userStreamId(randomUUID()));
    t.equal(nothing.code, 0, `a stream with nothing parked has nothing to refuse: ${nothing.head}`);
    t.match(nothing.output, /0 applied, 0 skipped, 0 still parked/);
  });

  await t.test('retry reports what failed again; skip releases the held events; then list exits 0', async (t) => {
    const again = await cli('retry', userStreamId(a!));
    t.equal(again.code, 3, again.head);
    t.match(again.output, /0 applied, 0 skipped, 2 still parked \(failed again: unknown event type/);

    const failedIds = await db('PROJECTION_DEAD_LETTER').where({ STATE: 'failed' }).orderBy('ID').pluck('ID');
    for (const id of failedIds) {
      const skipped = await cli('skip', String(id));
      t.equal(skipped.code, 0, skipped.head);
      t.match(skipped.output, /1 applied, 1 skipped, 0 still parked/);
    }
    const skippedEvents = new Set(
      (await db('PROJECTION_DEAD_LETTER').where({ STATE: 'skipped' }).select('STREAM_ID', 'REVISION')).map(
        (r: { STREAM_ID: string; REVISION: number }) => `${r.STREAM_ID}@${r.REVISION}`,
      ),
    );
    t.same(await tableRows(db), await expectedRows(store, { skipped: skippedEvents }));
    const listed = await cli('list');
    t.equal(listed.code, 0, listed.head);
    t.match(listed.output, /0 failed, 0 held/);
    const history = await cli('list', '--all');
    t.match(history.output, /skipped/);
    const none = await cli('retry', '--all');
    t.equal(none.code, 0);
    t.match(none.output, /nothing is parked/);
  });
});
