import { randomBytes } from 'node:crypto';
import { newDataKeys, type DataKey, type KeyStore } from './key-store.js';

/**
 * The key store of unit tests: a Map in this process. `destroy` zeroes the
 * buffer it held before dropping it (`get` and `create` hand out copies, so no
 * caller is holding that one).
 */
export function inMemoryKeyStore(options: { secret?: Buffer } = {}): KeyStore {
  const keys = new Map<string, Buffer>();
  let secret = options.secret ? Buffer.from(options.secret) : undefined;
  let closed = false;
  /** Runs `body` as the port's promise; a closed store refuses. */
  const settle = <T>(body: () => T): Promise<T> => {
    try {
      if (closed) throw new Error('the key store is closed');
      return Promise.resolve(body());
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  };
  return {
    create: (count) =>
      settle(() => {
        if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`cannot create ${count} keys`);
        const made: DataKey[] = newDataKeys(count);
        for (const { id, key } of made) keys.set(id, Buffer.from(key));
        return made;
      }),
    get: (ids) =>
      settle(() => {
        const found = new Map<string, Buffer>();
        for (const id of ids) {
          const key = keys.get(id);
          if (key) found.set(id, Buffer.from(key));
        }
        return found;
      }),
    destroy: (ids) =>
      settle(() => {
        for (const id of ids) {
          keys.get(id)?.fill(0);
          keys.delete(id);
        }
      }),
    secret: () =>
      settle(() => {
        secret ??= randomBytes(32);
        return Buffer.from(secret);
      }),
    close() {
      closed = true;
      return Promise.resolve();
    },
  };
}
