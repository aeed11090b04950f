import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sodium from 'sodium-native';
import type { DataKey, KeyStore } from '../shared/personal-data/key-store.js';
import { openSqliteKeyStore } from '../shared/personal-data/sqlite-key-store.js';
import { createVault, type StoredEventLike } from '../shared/personal-data/vault.js';
import { benchExit, onInterrupt } from './bench/interrupt.js';
import { median } from './bench/stack.js';
import { benchUserEvent } from './bench/user-events.js';

/**
 * What opening sealed events costs a reader (the rebuild, the relay), against the
 * floor it cannot go below, both measured in the same run:
 *  - a page of 5,000 stored events in the form the rebuild reads (1,000 users, each
 *    registered, renamed twice, validated and with a changed email: four sealed
 *    events of five, as `bench:rebuild` seeds them), parsed from its JSON text;
 *  - `Vault.open` of the page with the keys in the vault's cache, and with a fresh
 *    vault over the embedded key store (every key read and its subkey derived, as in
 *    a rebuild's first pass);
 *  - the floor: libsodium's XChaCha20-Poly1305 decryption of the same sealed
 *    payloads in a bare loop (each sealed event's native call and nothing else).
 * BENCH_ROUNDS (30) rounds of each, in turn; prints the medians per event and per
 * sealed event, and each as a multiple of the floor, a figure the machine's pace of
 * the hour moves less than microseconds. To compare two versions of the code, run
 * it from each checkout in turn and compare the multiples. Asserts nothing.
 */
const rounds = Number(process.env.BENCH_ROUNDS ?? 30);
const users = 1000;
const occurredAt = '2025-01-01T00:00:00.000Z';

/** Each user's five events in stream order, as `bench:rebuild` seeds most users: registered, renamed, validated, renamed, email changed. */
const kinds = [0, 1, 3, 1, 2];

/** The page's JSON text (as the embedded store's reader hands it over), sealed under each user's key. */
async function pageText(keyStore: KeyStore): Promise<{ text: string; keys: DataKey[] }> {
  const keys = await keyStore.create(users);
  const sealer = createVault({ keyStore, emailHashSecret: Buffer.alloc(32, 1) });
  const tuples: unknown[] = [];
  let position = 0;
  for (let u = 0; u < users; u++) {
    const userId = randomUUID();
    const streamId = `user-${userId}`;
    kinds.forEach((kind, revision) => {
      const e = benchUserEvent(kind, u, userId, revision, occurredAt);
      tuples.push([String(++position), streamId, revision, e.type, sealer.seal(streamId, e, keys[u]!)]);
    });
  }
  return { text: JSON.stringify(tuples), keys };
}

type Tuple = [position: string, streamId: string, revision: number, type: string, data: unknown];
const parse = (text: string): Array<StoredEventLike & { revision: number; position: bigint }> =>
  (JSON.parse(text) as Tuple[]).map(([position, streamId, revision, type, data]) => ({ streamId, revision, position: BigInt(position), type, data }));

/** The sealed payloads' bytes, decrypted by libsodium alone: the floor of an open. */
function bareDecrypts(text: string, keys: Map<string, Buffer>) {
  const subkeys = new Map<string, Buffer>();
  const context = Buffer.from('usrseal2', 'latin1');
  const items = parse(text).flatMap((e) => {
    const data = e.data as { keyId?: string; sealed?: string };
    if (!data.sealed || !data.keyId) return [];
    const bytes = Buffer.from(data.sealed.slice(3), 'base64url');
    let subkey = subkeys.get(data.keyId);
    if (!subkey) {
      subkey = Buffer.alloc(32);
      sodium.crypto_kdf_derive_from_key(subkey, 1, context, keys.get(data.keyId)!);
      subkeys.set(data.keyId, subkey);
    }
    return [{ nonce: bytes.subarray(0, 24), tag: bytes.subarray(24, 40), cipher: bytes.subarray(40), aad: Buffer.from(`${e.streamId}\n${e.type}`), clear: Buffer.alloc(bytes.length - 40), subkey }];
  });
  return {
    count: items.length,
    run(): void {
      for (const i of items) sodium.crypto_aead_xchacha20poly1305_ietf_decrypt_detached(i.clear, null, i.cipher, i.tag, i.aad, i.nonce, i.subkey);
    },
  };
}

async function main() {
  const dir = await mkdtemp(join(tmpdir(), 'users-bench-open-'));
  onInterrupt(() => rm(dir, { recursive: true, force: true }));
  const keyStore = openSqliteKeyStore(join(dir, 'keys.sqlite'));
  try {
    const { text, keys } = await pageText(keyStore);
    const events = users * 5;
    const sealed = users * 4;
    // The warm vault's cache holds every key: read them once through a vault over the store, then keep them.
    const cached = createVault({ keyStore, emailHashSecret: Buffer.alloc(32, 1) });
    await cached.open(parse(text));
    const bare = bareDecrypts(text, new Map(keys.map((k) => [k.id, k.key])));
    const figures = { floor: [] as number[], warm: [] as number[], cold: [] as number[] };
    for (let round = 0; round < rounds; round++) {
      let t = performance.now();
      bare.run();
      figures.floor.push(((performance.now() - t) * 1000) / bare.count);
      let page = parse(text);
      t = performance.now();
      await cached.open(page);
      figures.warm.push(((performance.now() - t) * 1000) / events);
      page = parse(text);
      const fresh = createVault({ keyStore, emailHashSecret: Buffer.alloc(32, 1) });
      t = performance.now();
      await fresh.open(page);
      figures.cold.push(((performance.now() - t) * 1000) / events);
    }
    const floor = median(figures.floor);
    const line = (what: string, perEvent: number) =>
      `${what}: ${perEvent.toFixed(2)} µs per event, ${((perEvent * events) / sealed).toFixed(2)} µs per sealed event, ` +
      `${((perEvent * events) / sealed / floor).toFixed(2)}x the floor`;
    console.log(`page of ${events} events, ${sealed} of them sealed, ${users} users; medians of ${rounds} rounds`);
    console.log(`floor (libsodium's decryption of the same payloads alone): ${floor.toFixed(2)} µs per sealed event`);
    console.log(line('open, keys cached', median(figures.warm)));
    console.log(line('open, keys read from the embedded key store (a fresh vault)', median(figures.cold)));
  } finally {
    await keyStore.close();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => benchExit(1, error));
