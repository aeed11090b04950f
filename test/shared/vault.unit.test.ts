import t from 'tap';
import { inMemoryKeyStore } from '../../shared/personal-data/in-memory-key-store.js';
import type { KeyStore } from '../../shared/personal-data/key-store.js';
import { createVault } from '../../shared/personal-data/vault.js';

/** The vault's memory of keys: what it reads from the key store, and when it reads again. */

/** A key store that counts the ids it is asked for. */
function countingKeyStore(): KeyStore & { asked: string[] } {
  const store = inMemoryKeyStore();
  const get = store.get.bind(store);
  const asked: string[] = [];
  return Object.assign(store, {
    asked,
    get: (ids: readonly string[]) => {
      asked.push(...ids);
      return get(ids);
    },
  });
}

const secret = Buffer.from('a secret of the tests, long enough to use');

void t.test('a key is read from the store once, then served from memory until cacheMs has passed', async (t) => {
  const keyStore = countingKeyStore();
  let clock = 0;
  const vault = createVault({ keyStore, emailHashSecret: secret, cacheMs: 1000, clock: () => clock });
  const [key] = await keyStore.create(1);
  t.same((await vault.key(key!.id))?.key, key!.key);
  t.same((await vault.key(key!.id))?.key, key!.key);
  t.same(keyStore.asked, [key!.id], 'asked once');
  clock = 1500;
  await keyStore.destroy([key!.id]);
  t.equal(await vault.key(key!.id), undefined, 'read again once older than cacheMs, and found gone');
  t.equal(keyStore.asked.length, 2);
});

void t.test('past its size the memory keeps the newest keys and lets the oldest eighth go together', async (t) => {
  const keyStore = countingKeyStore();
  const vault = createVault({ keyStore, emailHashSecret: secret, maxCachedKeys: 16 });
  const keys = await keyStore.create(40);
  for (const key of keys) t.same((await vault.key(key.id))?.key, key.key);
  t.equal(keyStore.asked.length, 40, 'each key read once');
  // 40 keys through 16 places, two (an eighth) let go at a time: the last 16 or fewer are still held.
  keyStore.asked.length = 0;
  for (const key of keys.slice(-14)) t.same((await vault.key(key.id))?.key, key.key);
  t.same(keyStore.asked, [], 'the newest keys come from memory');
  t.same((await vault.key(keys[0]!.id))?.key, keys[0]!.key, 'an evicted key is read again, and found');
  t.same(keyStore.asked, [keys[0]!.id]);

  // A full memory lets go of the two oldest when a new key comes, not one per key.
  const small = countingKeyStore();
  const filled = createVault({ keyStore: small, emailHashSecret: secret, maxCachedKeys: 16 });
  const some = await small.create(17);
  for (const key of some) await filled.key(key.id);
  small.asked.length = 0;
  for (const key of some.slice(2)) await filled.key(key.id);
  t.same(small.asked, [], 'the third oldest and newer are still held');
  await filled.key(some[1]!.id);
  t.same(small.asked, [some[1]!.id], 'the second oldest went with the oldest');
});

void t.test('keepKeys: false opens as usual and keeps no key it read', async (t) => {
  const keyStore = countingKeyStore();
  const vault = createVault({ keyStore, emailHashSecret: secret });
  const [key] = await keyStore.create(1);
  const userId = '01941f29-7c00-78e7-ac5e-7ff5c2b05aa8';
  const streamId = `user-${userId}`;
  const clear = { userId, name: 'Ada', email: 'ada@example.org', occurredAt: '2025-01-01T00:00:00.000Z' };
  const stored = [{ streamId, type: 'UserRegistered', data: vault.seal(streamId, { type: 'UserRegistered', data: clear }, key!) }];
  t.same((await vault.open(stored, { keepKeys: false }))[0]!.data, clear);
  t.same((await vault.open(stored, { keepKeys: false }))[0]!.data, clear);
  t.equal(keyStore.asked.length, 2, 'read from the store each time');
  await vault.open(stored);
  await vault.open(stored);
  t.equal(keyStore.asked.length, 3, 'kept by a usual open');
});

void t.test('a key destroyed while another call reads it is not remembered as alive', async (t) => {
  const keyStore = inMemoryKeyStore();
  const get = keyStore.get.bind(keyStore);
  let readDone!: () => void;
  const destroyed = new Promise<void>((resolve) => (readDone = resolve));
  // The read (an export, a rename) finds the key, then answers only after the forget destroyed it.
  const slow: KeyStore = Object.assign(keyStore, {
    get: async (ids: readonly string[]) => {
      const found = await get(ids);
      await destroyed;
      return found;
    },
  });
  const vault = createVault({ keyStore: slow, emailHashSecret: secret, cacheMs: 60_000 });
  const [key] = await keyStore.create(1);
  const reading = vault.key(key!.id);
  await vault.destroy([key!.id]);
  readDone();
  t.same((await reading)?.key, key!.key, 'the read that began before the forget opens what it read');
  t.equal(await vault.key(key!.id), undefined, 'but the key is not served again from memory');
});
