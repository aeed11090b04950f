import { randomUUID } from 'node:crypto';
import type { Test } from 'tap';
import type { KeyStore } from '../../shared/personal-data/key-store.js';

/**
 * What every key store does. `open` gives a fresh, empty store; `reopen`, where
 * the store keeps its keys in a file or a database, opens again the one that the
 * last `open` gave (after the case closed it), to show what survives a restart.
 * Each case closes the stores it opened.
 */
export function keyStoreContract(
  t: Test,
  open: () => Promise<KeyStore>,
  options: { reopen?: () => Promise<KeyStore> } = {},
): void {
  /** A store closed at the end of the case unless the case closed it. */
  const opened = async (t: Test, how: () => Promise<KeyStore> = open): Promise<KeyStore> => {
    const store = await how();
    const close = store.close.bind(store);
    let closed = false;
    const closeOnce = async () => {
      if (closed) return;
      closed = true;
      await close();
    };
    t.teardown(closeOnce);
    return Object.assign(store, { close: closeOnce });
  };

  void t.test('create makes as many keys as asked: distinct ids, 32 random bytes each', async (t) => {
    const store = await opened(t);
    const keys = await store.create(20);
    t.equal(keys.length, 20, 'as many as asked');
    t.equal(new Set(keys.map((k) => k.id)).size, 20, 'the ids are distinct');
    t.ok(keys.every(({ id }) => /^[A-Za-z0-9_-]{1,64}$/.test(id)), 'an id is at most 64 characters of [A-Za-z0-9_-]');
    t.ok(keys.every(({ key }) => Buffer.isBuffer(key) && key.length === 32), 'a key is 32 bytes');
    t.equal(new Set(keys.map((k) => k.key.toString('hex'))).size, 20, 'the keys are distinct');
    const more = await store.create(5);
    t.equal(new Set([...keys, ...more].map((k) => k.id)).size, 25, 'a second batch has ids of its own');
  });

  void t.test('create(0) makes nothing', async (t) => {
    const store = await opened(t);
    t.same(await store.create(0), []);
  });

  void t.test('get returns exactly the keys asked for that exist', async (t) => {
    const store = await opened(t);
    const keys = await store.create(10);
    const asked = keys.slice(0, 6);
    const unknown = [randomUUID(), 'never-made'];
    const found = await store.get([...asked.map((k) => k.id), ...unknown, asked[0]!.id]);
    t.same([...found.keys()].sort(), asked.map((k) => k.id).sort(), 'the asked keys that exist, each once; no unknown id');
    t.ok(asked.every(({ id, key }) => found.get(id)?.equals(key)), 'with the bytes create gave');
    t.same(await store.get([]), new Map(), 'an empty list gives an empty map');
    t.same(await store.get(unknown), new Map(), 'unknown ids give an empty map');
  });

  void t.test('get and destroy take more ids than one query holds', async (t) => {
    const store = await opened(t);
    const keys = await store.create(1234);
    const found = await store.get(keys.map((k) => k.id));
    t.equal(found.size, 1234, 'get finds them all');
    t.ok(keys.every(({ id, key }) => found.get(id)?.equals(key)), 'every key comes back as made');
    await store.destroy(keys.slice(0, 1100).map((k) => k.id));
    const left = await store.get(keys.map((k) => k.id));
    t.same([...left.keys()].sort(), keys.slice(1100).map((k) => k.id).sort(), 'destroy removed them all');
  });

  void t.test('destroy removes the keys, leaves the others, and may be repeated', async (t) => {
    const store = await opened(t);
    const keys = await store.create(6);
    const [gone, kept] = [keys.slice(0, 3), keys.slice(3)];
    await store.destroy([...gone.map((k) => k.id), randomUUID()]);
    const found = await store.get(keys.map((k) => k.id));
    t.same([...found.keys()].sort(), kept.map((k) => k.id).sort(), 'only the kept keys are left');
    t.ok(kept.every(({ id, key }) => found.get(id)?.equals(key)), 'the kept keys are unchanged');
    await store.destroy(gone.map((k) => k.id));
    await store.destroy([]);
    t.same([...(await store.get(keys.map((k) => k.id))).keys()].sort(), kept.map((k) => k.id).sort(), 'destroying again changes nothing');
  });

  void t.test('secret() is 32 bytes, the same at every call', async (t) => {
    const store = await opened(t);
    const first = await store.secret();
    t.ok(Buffer.isBuffer(first) && first.length === 32, '32 bytes');
    t.ok((await store.secret()).equals(first), 'the same again');
    const [a, b] = await Promise.all([store.secret(), store.secret()]);
    t.ok(a.equals(first) && b.equals(first), 'the same to concurrent callers');
  });

  const reopen = options.reopen;
  if (reopen) {
    void t.test('keys, destructions and the secret survive a close and reopen', async (t) => {
      const store = await opened(t);
      const keys = await store.create(8);
      await store.destroy(keys.slice(0, 3).map((k) => k.id));
      const secret = await store.secret();
      await store.close();

      const again = await opened(t, reopen);
      const found = await again.get(keys.map((k) => k.id));
      t.same([...found.keys()].sort(), keys.slice(3).map((k) => k.id).sort(), 'the kept keys, and only they');
      t.ok(keys.slice(3).every(({ id, key }) => found.get(id)?.equals(key)), 'with their bytes');
      t.ok((await again.secret()).equals(secret), 'the same secret');
    });
  }
}
