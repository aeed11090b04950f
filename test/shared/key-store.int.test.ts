import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import knexFactory from 'knex';
import t, { type Test } from 'tap';
import { StoreUnavailableError } from '../../shared/errors.js';
import { inMemoryKeyStore } from '../../shared/personal-data/in-memory-key-store.js';
import type { DataKey, KeyStore } from '../../shared/personal-data/key-store.js';
import { openMariaDbKeyStore } from '../../shared/personal-data/mariadb-key-store.js';
import { openSqliteKeyStore } from '../../shared/personal-data/sqlite-key-store.js';
import { sqliteKeyStoreThread } from '../../shared/personal-data/sqlite-key-store-thread.js';
import { keyStoreContract } from '../contracts/key-store.contract.js';
import { mariadbMissing, mariadbUrl } from '../support/read-dbs.js';

/** A directory of its own, removed when `t` ends. */
async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'users-keys-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

void t.test('in memory', async (t) => {
  keyStoreContract(t, () => Promise.resolve(inMemoryKeyStore()));

  void t.test('destroy wipes the buffer it held', async (t) => {
    const store = inMemoryKeyStore();
    const [made] = await store.create(1);
    const held = (await store.get([made!.id])).get(made!.id)!;
    await store.destroy([made!.id]);
    t.ok(held.equals(made!.key), 'what get handed out was a copy');
    t.same(await store.get([made!.id]), new Map());
  });
});

/** The contract over a fresh key-store file, reopened on the same file. */
function contractOnFile(t: Test, open: (file: string) => KeyStore) {
  let file = '';
  keyStoreContract(
    t,
    async () => {
      file = join(await tempDir(t), 'keys', 'keys.sqlite');
      return open(file);
    },
    { reopen: () => Promise.resolve(open(file)) },
  );
}

void t.test('sqlite on a worker thread (what the services use)', async (t) => {
  contractOnFile(t, (file) => sqliteKeyStoreThread(file));
  void t.test('an outage crosses the thread as the retriable StoreUnavailableError', async (t) => {
    const locked = join(await tempDir(t), 'keys.sqlite');
    const store = sqliteKeyStoreThread(locked, { busyTimeoutMs: 50 });
    t.teardown(() => store.close());
    await store.create(1);
    const blocker = openSqliteKeyStore(locked);
    // Hold the write lock from another connection, as another process would.
    const raw = new Database(locked);
    raw.exec('BEGIN IMMEDIATE');
    await t.rejects(store.create(1), { name: 'StoreUnavailableError', retriable: true });
    raw.exec('ROLLBACK');
    raw.close();
    await blocker.close();
    t.equal((await store.create(2)).length, 2, 'and works again once the lock is gone');
  });
});

void t.test('sqlite', async (t) => {
  contractOnFile(t, (file) => openSqliteKeyStore(file));

  /** Every file in the store's directory, as raw bytes. */
  const everyFile = (dir: string) => readdirSync(dir).map((name) => ({ name, bytes: readFileSync(join(dir, name)) }));
  const scan = (t: Test, dir: string, gone: readonly DataKey[], kept: readonly DataKey[], when: string) => {
    const files = everyFile(dir);
    const inAnyFile = (key: Buffer) => files.some((f) => f.bytes.indexOf(key) >= 0);
    t.same(files.map((f) => f.name), ['keys.sqlite'], `${when}: the database file alone, no journal left`);
    t.equal(kept.filter((k) => !inAnyFile(k.key)).length, 0, `${when}: every kept key is found (the scan can find keys)`);
    t.equal(gone.filter((k) => inAnyFile(k.key)).length, 0, `${when}: no destroyed key is in any file`);
  };

  void t.test('a destroyed key leaves no copy of its bytes in any file, open or closed', async (t) => {
    const dir = await tempDir(t);
    const store = openSqliteKeyStore(join(dir, 'keys.sqlite'));
    t.teardown(() => store.close());
    const keys = await store.create(50);
    const [gone, kept] = [keys.filter((_, i) => i % 5 === 0), keys.filter((_, i) => i % 5 !== 0)];
    t.equal(gone.length, 10, 'ten of fifty destroyed');
    scan(t, dir, [], keys, 'before destroy');
    await store.destroy(gone.map((k) => k.id));
    scan(t, dir, gone, kept, 'after destroy, the store still open');
    await store.close();
    scan(t, dir, gone, kept, 'after close');
  });

  void t.test('no copy either after many batches, page splits and reopens', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'keys.sqlite');
    let store = openSqliteKeyStore(file);
    t.teardown(() => store.close());
    const gone: DataKey[] = [];
    let kept: DataKey[] = [];
    for (let round = 0; round < 4; round++) {
      kept.push(...(await store.create(800)));
      const destroyed = new Set(kept.filter((_, i) => (i + round) % 4 === 0));
      await store.destroy([...destroyed].map((k) => k.id));
      gone.push(...destroyed);
      kept = kept.filter((k) => !destroyed.has(k));
      if (round % 2 === 1) {
        await store.close();
        store = openSqliteKeyStore(file);
      }
    }
    t.ok(readFileSync(file).length > 100 * 4096, 'the table spans many pages');
    scan(t, dir, gone, kept, 'still open');
    await store.close();
    scan(t, dir, gone, kept, 'closed');
  });

  void t.test('the file is in rollback-journal mode, even one left in WAL mode', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'keys.sqlite');
    const raw = new Database(file);
    raw.pragma('journal_mode = WAL');
    raw.close();
    const store = openSqliteKeyStore(file);
    t.teardown(() => store.close());
    await store.create(1);
    const look = new Database(file, { readonly: true });
    t.teardown(() => look.close());
    t.equal(look.pragma('journal_mode', { simple: true }), 'delete');
  });

  void t.test('a file locked by another process longer than the busy timeout is a retriable StoreUnavailableError', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'keys.sqlite');
    const store = openSqliteKeyStore(file, { busyTimeoutMs: 50 });
    t.teardown(() => store.close());
    const [made] = await store.create(1);
    const other = new Database(file);
    other.pragma('busy_timeout = 0');
    other.exec('BEGIN EXCLUSIVE');
    try {
      await t.rejects(store.create(1), StoreUnavailableError);
      await t.rejects(store.destroy([made!.id]), StoreUnavailableError);
      await t.rejects(store.get([made!.id]), StoreUnavailableError);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    t.equal((await store.get([made!.id])).size, 1, 'it works again once the lock is gone');
  });

  void t.test('a configured secret is the one given', async (t) => {
    const secret = randomBytes(32);
    const store = openSqliteKeyStore(join(await tempDir(t), 'keys.sqlite'), { secret });
    t.teardown(() => store.close());
    t.ok((await store.secret()).equals(secret));
  });

  void t.test('keys read back byte for byte, packed or not: zero bytes, many at once, and a row of another length', async (t) => {
    const file = join(await tempDir(t), 'keys.sqlite');
    const store = openSqliteKeyStore(file);
    t.teardown(() => store.close());
    const keys = await store.create(1200);
    // Keys come back packed into one buffer per query: bytes a text would end at, or lose, must survive.
    const zeros = { id: 'zeros-and-high-bytes', key: Buffer.from(Array.from({ length: 32 }, (_, i) => (i % 3 === 0 ? 0 : 0x80 + i))) };
    const short = { id: 'sixteen-bytes', key: randomBytes(16) };
    const raw = new Database(file);
    for (const k of [zeros, short]) raw.prepare('INSERT INTO DATA_KEY (ID, KEY, CREATED_AT) VALUES (?, ?, ?)').run(k.id, k.key, new Date().toISOString());
    raw.close();
    const all = [...keys, zeros];
    const found = await store.get(all.map((k) => k.id));
    t.equal(all.filter((k) => found.get(k.id)?.equals(k.key) !== true).length, 0, `all ${all.length} keys as made`);
    // A row this store did not make (16 bytes) is handed back as stored, with the others of its query.
    const withShort = await store.get([short.id, zeros.id, keys[0]!.id]);
    t.ok(withShort.get(short.id)?.equals(short.key), 'the odd row as stored');
    t.ok(withShort.get(zeros.id)?.equals(zeros.key) && withShort.get(keys[0]!.id)?.equals(keys[0]!.key), 'its neighbours too');
    t.equal((await store.get(['no-such-key'])).size, 0, 'an id without a key: nothing');
  });
});

void t.test('mariadb', async (t) => {
  if (await mariadbMissing(t)) return;
  const base = mariadbUrl.replace(/\/$/, '');
  /** A database of its own per store, dropped at the end. */
  const freshUrl = () => {
    const database = `user_keys_test_${randomBytes(6).toString('hex')}`;
    t.teardown(async () => {
      const admin = knexFactory({ client: 'mysql2', connection: mariadbConnection(), pool: { min: 0, max: 1 } });
      await admin.raw('DROP DATABASE IF EXISTS ??', [database]);
      await admin.destroy();
    });
    return `${base}/${database}`;
  };
  let url = '';
  keyStoreContract(
    t,
    () => {
      url = freshUrl();
      return openMariaDbKeyStore(url);
    },
    { reopen: () => openMariaDbKeyStore(url) },
  );

  void t.test('opening twice finds the tables made by the first', async (t) => {
    const shared = freshUrl();
    const stores = await Promise.all([openMariaDbKeyStore(shared), openMariaDbKeyStore(shared)]);
    t.teardown(() => Promise.all(stores.map((s) => s.close())));
    const [a, b] = stores;
    const [made] = await a.create(1);
    t.ok((await b.get([made!.id])).get(made!.id)?.equals(made!.key), 'one store sees the keys of the other');
    const [sa, sb] = await Promise.all([a.secret(), b.secret()]);
    t.ok(sa.equals(sb), 'two processes making the secret at once agree on one');
  });

  void t.test('an unreachable server is a retriable StoreUnavailableError', async (t) => {
    const quiet = { warn: () => {}, error: () => {}, debug: () => {}, deprecate: () => {} };
    await t.rejects(openMariaDbKeyStore('mysql://root@127.0.0.1:1/user_keys', { log: quiet }), StoreUnavailableError);
  });
});

function mariadbConnection() {
  const url = new URL(mariadbUrl);
  return {
    host: url.hostname,
    port: Number(url.port || 3306),
    user: decodeURIComponent(url.username || 'root'),
    password: decodeURIComponent(url.password),
  };
}
