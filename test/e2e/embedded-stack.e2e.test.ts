import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { freePort } from '../../scripts/free-port.js';
import { runScript, waitUntilHealthy } from '../support/processes.js';
import { mariadbMissing, mariadbUrl } from '../support/read-dbs.js';

/**
 * The whole service as `npm start` runs it (three role processes), over real
 * HTTP: once on the embedded defaults, once with MariaDB as the read database.
 */
const stacks = [
  { name: 'embedded event store + embedded read DB', readDbUrl: undefined },
  { name: 'embedded event store + MariaDB read DB', readDbUrl: `${mariadbUrl}/queries_e2e_${randomBytes(5).toString('hex')}` },
];

for (const stack of stacks) {
  void t.test(stack.name, async (t) => {
    // The MariaDB stack fails with advice (or is skipped with MARIADB_OPTIONAL=1) when MariaDB cannot be reached.
    if (stack.readDbUrl && (await mariadbMissing(t))) return;
    const dataDir = await mkdtemp(join(tmpdir(), 'users-e2e-'));
    t.teardown(() => rm(dataDir, { recursive: true, force: true }));
    const [commandPort, queryPort] = [await freePort(), await freePort()];
    const env = {
      DATA_DIR: dataDir,
      COMMAND_PORT: String(commandPort),
      QUERY_PORT: String(queryPort),
      ...(stack.readDbUrl ? { READ_DB_URL: stack.readDbUrl } : {}),
    };
    const write = `http://127.0.0.1:${commandPort}`;
    const read = `http://127.0.0.1:${queryPort}`;
    const json = { 'content-type': 'application/json' };
    const start = async () => {
      const service = runScript(t, 'scripts/start.ts', env);
      await waitUntilHealthy(`${write}/health`, service);
      await waitUntilHealthy(`${read}/health`, service);
      return service;
    };

    let service = await start();
    if (stack.readDbUrl) {
      t.teardown(async () => {
        const { openReadDb } = await import('../../shared/read-db.js');
        const db = await openReadDb({ client: 'mysql', url: stack.readDbUrl });
        await db.raw('DROP DATABASE IF EXISTS ??', [new URL(stack.readDbUrl).pathname.slice(1)]);
        await db.destroy();
      });
    }

    const registered = await fetch(`${write}/users`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ name: 'Ada Lovelace', email: 'ada@example.org' }),
    });
    t.equal(registered.status, 201);
    const { id, consistencyToken } = (await registered.json()) as { id: string; consistencyToken: string };

    const readBack = await fetch(`${read}/users/${id}`, { headers: { 'consistency-token': consistencyToken } });
    t.equal(readBack.status, 200, 'read-your-writes: visible at once with the token');
    t.match(await readBack.json(), { id, name: 'Ada Lovelace', email: 'ada@example.org', status: 'registered', version: 0 });

    const renamed = await fetch(`${write}/users/${id}/name`, {
      method: 'PUT',
      headers: { ...json, 'if-match': '"0"' },
      body: JSON.stringify({ name: 'Countess of Lovelace' }),
    });
    t.equal(renamed.status, 200);
    const stale = await fetch(`${write}/users/${id}/name`, {
      method: 'PUT',
      headers: { ...json, 'if-match': '"0"' },
      body: JSON.stringify({ name: 'Stale' }),
    });
    t.equal(stale.status, 409, 'rename with a stale If-Match');
    t.match(await stale.json(), { code: 'REVISION_CONFLICT', currentRevision: 1 });

    const duplicate = await fetch(`${write}/users`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ name: 'Other', email: 'ADA@example.org' }),
    });
    t.equal(duplicate.status, 409, 'duplicate email');

    for (const body of ['{"name":', '{}', '{"name":"x","email":"nope"}', '[1,2]', '{"name":"x","email":"a@b.org","role":"admin"}']) {
      const bad = await fetch(`${write}/users`, { method: 'POST', headers: json, body });
      t.equal(bad.status, 400, `bad body ${body}`);
      t.match(await bad.json(), { statusCode: 400, message: String });
    }

    const { consistencyToken: renameToken } = (await renamed.json()) as { consistencyToken: string };
    const listed = await fetch(`${read}/users?name=Countess`, { headers: { 'consistency-token': renameToken } });
    t.same(((await listed.json()) as { items: { id: string }[] }).items.map((u) => u.id), [id]);

    // Restart the whole service: everything written is still there.
    t.equal(await service.stop('SIGTERM'), 0, 'graceful shutdown exits 0');
    service = await start();
    const afterRestart = await fetch(`${read}/users/${id}`);
    t.match(await afterRestart.json(), { name: 'Countess of Lovelace', version: 1 });
    const stillTaken = await fetch(`${write}/users`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ name: 'Other', email: 'ada@example.org' }),
    });
    t.equal(stillTaken.status, 409, 'the event store kept the email reservation');
    const validated = await fetch(`${write}/users/${id}/validation`, { method: 'POST' });
    t.equal(validated.status, 200);
    const { consistencyToken: validatedToken } = (await validated.json()) as { consistencyToken: string };
    const seen = await fetch(`${read}/users/${id}`, { headers: { 'consistency-token': validatedToken } });
    t.match(await seen.json(), { status: 'validated', version: 2 }, 'the projector resumed after the restart');
    t.equal(await service.stop('SIGTERM'), 0);
  });
}
