import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { openReadDb } from '../../shared/read-db.js';
import { freePort } from '../../scripts/free-port.js';
import { runScript, waitUntilHealthy } from '../support/processes.js';
import { mariadbMissing, mariadbUrl } from '../support/read-dbs.js';

/**
 * The proof of erasure on the whole service as `npm start` runs it: after a
 * person is forgotten, no file under DATA_DIR (event store and its WAL, key
 * store, read DB and its WAL, quarantine) holds their name, their email or the
 * bytes of their destroyed key; before, the same scan finds the key (so the scan
 * can find what it looks for). With MariaDB as the read DB, no row of any table
 * of the read database holds the name or email either.
 */
const suffix = () => randomBytes(5).toString('hex');
const stacks = [
  { name: 'embedded event store + embedded read DB', mariadb: false },
  { name: 'embedded event store + MariaDB read DB', mariadb: true },
];

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/** Every file under `dir` that contains any of `needles`, with which. */
async function scan(dir: string, needles: Record<string, Buffer>): Promise<string[]> {
  const hits: string[] = [];
  for (const file of await filesUnder(dir)) {
    // A file that went between the listing and the read (a journal) holds nothing; any other failure to read one fails the proof.
    const bytes = await readFile(file).catch((error: unknown) => {
      if ((error as { code?: unknown }).code === 'ENOENT') return Buffer.alloc(0);
      throw error;
    });
    for (const [what, needle] of Object.entries(needles)) if (bytes.includes(needle)) hits.push(`${what} in ${file}`);
  }
  return hits;
}

for (const stack of stacks) {
  void t.test(stack.name, async (t) => {
    // The MariaDB stack fails with advice (or is skipped with MARIADB_OPTIONAL=1) when MariaDB cannot be reached.
    if (stack.mariadb && (await mariadbMissing(t))) return;
    const dataDir = await mkdtemp(join(tmpdir(), 'users-forget-'));
    t.teardown(() => rm(dataDir, { recursive: true, force: true }));
    const readDbUrl = stack.mariadb ? `${mariadbUrl}/queries_forget_${suffix()}` : undefined;
    const keyStoreUrl = stack.mariadb ? `${mariadbUrl}/keys_forget_${suffix()}` : undefined;
    if (readDbUrl && keyStoreUrl) {
      t.teardown(async () => {
        const db = await openReadDb({ client: 'mysql', url: readDbUrl });
        for (const url of [readDbUrl, keyStoreUrl]) await db.raw('DROP DATABASE IF EXISTS ??', [new URL(url).pathname.slice(1)]);
        await db.destroy();
      });
    }
    const [commandPort, queryPort] = [await freePort(), await freePort()];
    const env = {
      DATA_DIR: dataDir,
      COMMAND_PORT: String(commandPort),
      QUERY_PORT: String(queryPort),
      ...(readDbUrl && keyStoreUrl ? { READ_DB_URL: readDbUrl, KEY_STORE_URL: keyStoreUrl } : {}),
    };
    const write = `http://127.0.0.1:${commandPort}`;
    const read = `http://127.0.0.1:${queryPort}`;
    const json = { 'content-type': 'application/json' };
    const service = runScript(t, 'scripts/start.ts', env);
    await waitUntilHealthy(`${write}/health`, service);
    await waitUntilHealthy(`${read}/health`, service);

    const name = `Zelda Quarantina ${suffix()}`;
    const renamed = `Zelda Q. ${suffix()}`;
    const email = `zq-${suffix()}@erase.example`;
    const registered = await fetch(`${write}/users`, { method: 'POST', headers: json, body: JSON.stringify({ name, email }) });
    t.equal(registered.status, 201);
    const { id } = (await registered.json()) as { id: string };
    const renaming = await fetch(`${write}/users/${id}/name`, { method: 'PUT', headers: json, body: JSON.stringify({ name: renamed }) });
    const { consistencyToken } = (await renaming.json()) as { consistencyToken: string };
    const before = await fetch(`${read}/users/${id}`, { headers: { 'consistency-token': consistencyToken } });
    t.equal(before.status, 200);
    t.match(await before.json(), { name: renamed, email });

    // The user's key, as the stores hold it: its id beside the ciphertext, its bytes in the key store.
    const events = new Database(join(dataDir, 'events.sqlite'), { readonly: true });
    const { data } = events.prepare('SELECT data FROM events WHERE stream_id = ? ORDER BY revision LIMIT 1').get(`user-${id}`) as { data: string };
    events.close();
    const { keyId } = JSON.parse(data) as { keyId: string };
    let key: Buffer;
    if (keyStoreUrl) {
      const keys = await openReadDb({ client: 'mysql', url: keyStoreUrl });
      key = ((await keys('DATA_KEY').where({ ID: keyId }).first()) as { KEY_BYTES: Buffer }).KEY_BYTES;
      await keys.destroy();
    } else {
      const keys = new Database(join(dataDir, 'keys.sqlite'), { readonly: true });
      key = (keys.prepare('SELECT KEY FROM DATA_KEY WHERE ID = ?').get(keyId) as { KEY: Buffer }).KEY;
      keys.close();
    }
    t.equal(key.length, 32, 'the user has a 256-bit key');
    const needles = { name: Buffer.from(name), 'the new name': Buffer.from(renamed), email: Buffer.from(email), 'the key': key };
    const hitsBefore = await scan(dataDir, needles);
    if (!stack.mariadb) {
      t.ok(hitsBefore.some((hit) => hit.startsWith('the key in ')), 'before forgetting, the scan finds the key in the key store');
      t.ok(hitsBefore.some((hit) => hit.startsWith('email in ')), 'and the email in the read DB');
    }
    t.notOk(hitsBefore.some((hit) => hit.includes('events.sqlite')), 'the event store never holds them in clear');
    /** Every row of every table of the MariaDB read DB, as text. */
    const readDbText = async () => {
      const db = await openReadDb({ client: 'mysql', url: readDbUrl! });
      const tables: { TABLE_NAME: string }[] = await db('information_schema.TABLES').where({ TABLE_SCHEMA: new URL(readDbUrl!).pathname.slice(1) }).select('TABLE_NAME');
      const text = new Map<string, string>();
      for (const { TABLE_NAME } of tables) text.set(TABLE_NAME, JSON.stringify(await db(TABLE_NAME).select()));
      await db.destroy();
      return text;
    };
    if (readDbUrl) t.ok((await readDbText()).get('USER_DATA')?.includes(email), 'before forgetting, the table scan finds the email in USER_DATA');

    const forgetting = await fetch(`${write}/users/${id}/personal-data`, { method: 'DELETE' });
    t.equal(forgetting.status, 200);
    const forgotten = (await forgetting.json()) as { consistencyToken: string };
    const after = await fetch(`${read}/users/${id}`, { headers: { 'consistency-token': forgotten.consistencyToken } });
    t.equal(after.status, 410, 'the read API answers 410 once the forget is projected');
    t.equal(((await after.json()) as { code: string }).code, 'USER_FORGOTTEN');
    const search = await fetch(`${read}/users?email=${encodeURIComponent(email)}`);
    t.same(((await search.json()) as { items?: unknown[] }).items ?? [], [], 'a search by the address finds nothing');

    // The stores checkpoint on their own after a forget; give them a moment.
    let hits: string[] = [];
    for (let i = 0; i < 50; i++) {
      hits = await scan(dataDir, needles);
      if (hits.length === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    t.same(hits, [], 'no file under DATA_DIR holds the name, the email or the key');
    if (readDbUrl && keyStoreUrl) {
      const tables = await readDbText();
      t.ok(tables.size >= 4, 'the read DB has its tables');
      for (const [table, rows] of tables) {
        for (const secret of [name, renamed, email]) t.notOk(rows.includes(secret), `${table} does not hold "${secret}"`);
      }
      const keys = await openReadDb({ client: 'mysql', url: keyStoreUrl });
      t.equal(await keys('DATA_KEY').where({ ID: keyId }).first(), undefined, 'the key store no longer has the key');
      await keys.destroy();
    }

    // The address is free again, and the projector moves on.
    const again = await fetch(`${write}/users`, { method: 'POST', headers: json, body: JSON.stringify({ name: 'Someone New', email }) });
    t.equal(again.status, 201, 'the address can be registered again');
    const next = (await again.json()) as { id: string; consistencyToken: string };
    const visible = await fetch(`${read}/users/${next.id}`, { headers: { 'consistency-token': next.consistencyToken } });
    t.equal(visible.status, 200, 'the projector is not stuck');
    await service.stop();
  });
}
