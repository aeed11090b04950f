import type { Worker } from 'node:worker_threads';
import { StoreUnavailableError } from '../errors.js';
import type { DataKey, KeyStore } from './key-store.js';
import { startWorkerModule } from '../worker-module.js';

/** What the key store's thread is started with. */
export interface KeyStoreWorkerData {
  file: string;
  secret?: Uint8Array;
  busyTimeoutMs?: number;
}

export type KeyStoreCall =
  | { method: 'create'; count: number }
  | { method: 'get'; ids: readonly string[] }
  | { method: 'destroy'; ids: readonly string[] }
  | { method: 'secret' }
  | { method: 'close' };
export type KeyStoreRequest = { id: number } & KeyStoreCall;

export interface KeyStoreReply {
  id: number;
  result?: DataKey[] | Map<string, Buffer> | Buffer | void;
  error?: { message: string; name: string; code?: string };
}

/** Buffers cross a thread as Uint8Arrays: back to Buffers, without copying. */
const asBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/**
 * The embedded key store (`sqlite-key-store.ts`) run on a worker thread: the
 * same port, but a batch of new keys (one fsynced transaction, several
 * milliseconds) or a forget no longer blocks the event loop of the command side,
 * and the projector's key reads run beside its other work. What the services use;
 * tests and benchmarks that seed may use the synchronous adapter directly.
 */
export function sqliteKeyStoreThread(file: string, options: { secret?: Buffer; busyTimeoutMs?: number } = {}): KeyStore {
  const data: KeyStoreWorkerData = { file, ...(options.secret ? { secret: options.secret } : {}), ...(options.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: options.busyTimeoutMs }) };
  const worker = spawn(data);
  // The thread never keeps the process alive by itself; a pending call does (its promise).
  worker.unref();
  let nextId = 0;
  let closed = false;
  const pending = new Map<number, { resolve: (value: KeyStoreReply['result']) => void; reject: (error: Error) => void }>();
  const failAll = (error: Error) => {
    for (const waiter of pending.values()) waiter.reject(error);
    pending.clear();
  };
  worker.on('message', (reply: KeyStoreReply) => {
    const waiter = pending.get(reply.id);
    if (!waiter) return;
    pending.delete(reply.id);
    if (pending.size === 0) worker.unref();
    if (!reply.error) return waiter.resolve(reply.result);
    const { message, name, code } = reply.error;
    const error = name === 'StoreUnavailableError' ? new StoreUnavailableError(message) : Object.assign(new Error(message), code ? { code } : {});
    waiter.reject(error);
  });
  worker.on('error', (error) => failAll(new StoreUnavailableError(`embedded key store thread failed: ${error.message}`, { cause: error })));
  worker.on('exit', () => failAll(new StoreUnavailableError('embedded key store thread exited')));

  const call = <T>(request: KeyStoreCall): Promise<T> => {
    if (closed) return Promise.reject(new Error('the key store is closed'));
    const id = nextId++;
    worker.ref();
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (value: KeyStoreReply['result']) => void, reject });
      worker.postMessage({ ...request, id });
    });
  };

  return {
    create: async (count) => (await call<DataKey[]>({ method: 'create', count })).map(({ id, key }) => ({ id, key: asBuffer(key) })),
    async get(ids) {
      const found = await call<Map<string, Uint8Array>>({ method: 'get', ids });
      return new Map([...found].map(([id, key]) => [id, asBuffer(key)]));
    },
    destroy: (ids) => call<undefined>({ method: 'destroy', ids }),
    secret: async () => asBuffer(await call<Uint8Array>({ method: 'secret' })),
    async close() {
      if (closed) return;
      await call<undefined>({ method: 'close' }).catch(() => {});
      closed = true;
      await worker.terminate();
    },
  };
}

/** The key store's thread: `sqlite-key-store.worker.ts`. */
function spawn(data: KeyStoreWorkerData): Worker {
  return startWorkerModule('sqlite-key-store', import.meta.url, data);
}
