import type { Worker } from 'node:worker_threads';
import { threadCalls } from '../thread-calls.js';
import { StoreUnavailableError } from '../errors.js';
import type { DataKey, KeyStore } from './key-store.js';
import { startWorkerModule } from '../worker-module.js';
import { openSqliteKeyStore } from './sqlite-key-store.js';

/** What the key store's thread is started with. */
export interface KeyStoreWorkerData {
  file: string;
  secret?: Uint8Array;
  busyTimeoutMs?: number;
}

export type KeyStoreCall =
  | { method: 'create'; count: number }
  | { method: 'destroy'; ids: readonly string[] }
  | { method: 'close' };
export type KeyStoreResult = DataKey[] | void;

/** Buffers cross a thread as Uint8Arrays: back to Buffers, without copying. */
const asBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/**
 * The embedded key store (`sqlite-key-store.ts`) with its writes on a worker
 * thread: a batch of new keys or a forget (each one fsynced transaction, several
 * milliseconds) no longer blocks the event loop of the command side. Reads
 * (`get`, `secret`) go straight to a connection of this thread: a key lookup is a
 * few dozen microseconds of SQLite, while a round trip to a thread costs about
 * 150 µs of CPU on these machines (two wake-ups), which made the projector's key
 * reads a third of its cost per event. A read meets a commit in progress only for
 * the moment that commit writes the file (rollback journal), and then waits on the
 * busy timeout as any reader of the file does. What the services use; tests and
 * benchmarks that seed may use the synchronous adapter alone.
 */
export function sqliteKeyStoreThread(file: string, options: { secret?: Buffer; busyTimeoutMs?: number } = {}): KeyStore {
  // Opened here first: it makes the file and its tables before the thread opens them too.
  const reader = openSqliteKeyStore(file, options);
  const data: KeyStoreWorkerData = { file, ...(options.secret ? { secret: options.secret } : {}), ...(options.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: options.busyTimeoutMs }) };
  const thread = threadCalls<KeyStoreCall, KeyStoreResult>(() => spawn(data), (reason, cause) =>
    new StoreUnavailableError(`embedded key store: ${reason}`, cause ? { cause } : {}),
  );
  let closed = false;
  const call = <T extends KeyStoreResult>(request: KeyStoreCall): Promise<T> =>
    closed ? Promise.reject(new Error('the key store is closed')) : (thread.call(request) as Promise<T>);

  return {
    create: async (count) => (await call<DataKey[]>({ method: 'create', count })).map(({ id, key }) => ({ id, key: asBuffer(key) })),
    // On this thread's connection, which refuses once `close` has closed it.
    get: (ids) => reader.get(ids),
    destroy: (ids) => call<undefined>({ method: 'destroy', ids }),
    // Made (if it must be) on this connection: a read first, and at most one small insert, once.
    secret: () => reader.secret(),
    async close() {
      if (closed) return;
      await call<undefined>({ method: 'close' }).catch(() => {});
      closed = true;
      await reader.close();
      await thread.terminate();
    },
  };
}

/** The key store's thread: `sqlite-key-store.worker.ts`. */
function spawn(data: KeyStoreWorkerData): Worker {
  return startWorkerModule('sqlite-key-store', import.meta.url, data);
}
