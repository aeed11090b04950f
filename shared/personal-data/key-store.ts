import { randomBytes } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
/**
 * The key store port: per-user data keys that can really be deleted. Personal
 * fields of user events are sealed under such a key (see `vault.ts`); destroying
 * the key is how a person is forgotten while the event log stays append-only.
 *
 * Adapters: `sqlite-key-store.ts` (embedded, its own file beside the event
 * store, rollback journal and secure_delete so a deleted key leaves no copy in
 * any file), `mariadb-key-store.ts` (production: a database of its own on the
 * MariaDB server), `in-memory-key-store.ts` (unit tests). Every adapter passes
 * `test/contracts/key-store.contract.ts`.
 *
 * Keys are made ahead of need in batches (`create`) and handed to users by the
 * command side; a key's id is stored in clear beside the ciphertext it opens.
 */
export interface DataKey {
  /** Opaque, unique, at most 64 characters of [A-Za-z0-9_-]. */
  id: string;
  /** 32 random bytes (AES-256). */
  key: Buffer;
}

export interface KeyStore {
  /**
   * Makes `count` new keys and stores them durably (all or none) before it
   * returns them: a key handed out is never lost by a crash.
   */
  create(count: number): Promise<DataKey[]>;
  /**
   * The keys among `ids` that exist. A destroyed or never-made key is simply
   * absent from the map; an outage throws (StoreUnavailableError), so "absent"
   * always means gone.
   */
  get(ids: readonly string[]): Promise<Map<string, Buffer>>;
  /**
   * Deletes the keys so that no file the store keeps holds their bytes once it
   * returns. Idempotent: unknown ids are ignored.
   */
  destroy(ids: readonly string[]): Promise<void>;
  /**
   * The server secret of the keyed hash that names email reservations: the
   * configured one, else one made on first use and kept in the store.
   */
  secret(): Promise<Buffer>;
  close(): Promise<void>;
}

/** A data key's length in bytes. */
export const dataKeyBytes = 32;

/**
 * `count` new keys: the key bytes drawn from the CSPRNG in one call (one call per
 * key costs a few microseconds each), each key then in a buffer of its own, so
 * destroying one can zero it without touching another. Ids are time-ordered
 * (UUIDv7): a batch lands at the end of a store's id index instead of on a
 * thousand scattered pages, which the embedded store's rollback journal would
 * copy before changing (the key store's thread spent 11 -> 7 µs of CPU per
 * registration). An id says when the key
 * was made, which tells nothing the event beside it does not already say.
 */
export function newDataKeys(count: number): DataKey[] {
  const bytes = randomBytes(dataKeyBytes * count);
  const keys = Array.from({ length: count }, (_, i) => ({ id: uuidv7(), key: Buffer.from(bytes.subarray(i * dataKeyBytes, (i + 1) * dataKeyBytes)) }));
  bytes.fill(0);
  return keys;
}
