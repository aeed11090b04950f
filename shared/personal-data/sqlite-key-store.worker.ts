import { parentPort, workerData } from 'node:worker_threads';
import type { KeyStore } from './key-store.js';
import { openSqliteKeyStore } from './sqlite-key-store.js';
import type { KeyStoreReply, KeyStoreRequest, KeyStoreWorkerData } from './sqlite-key-store-thread.js';

/**
 * The embedded key store on a thread of its own: its fsyncs (a batch of new keys,
 * a forget) and its reads never hold up the event loop of the process that uses it.
 */
const options = workerData as KeyStoreWorkerData;
const port = parentPort!;
const store: KeyStore = openSqliteKeyStore(options.file, {
  ...(options.secret ? { secret: Buffer.from(options.secret) } : {}),
  ...(options.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: options.busyTimeoutMs }),
});

async function answer(request: KeyStoreRequest): Promise<KeyStoreReply['result']> {
  switch (request.method) {
    case 'create':
      return store.create(request.count);
    case 'get':
      return store.get(request.ids);
    case 'destroy':
      return store.destroy(request.ids);
    case 'secret':
      return store.secret();
    case 'close':
      return store.close();
  }
}

port.on('message', (request: KeyStoreRequest) => {
  answer(request).then(
    (result) => port.postMessage({ id: request.id, result } satisfies KeyStoreReply),
    (error: unknown) => {
      const { message, name, code } = (error ?? {}) as { message?: unknown; name?: unknown; code?: unknown };
      port.postMessage({ id: request.id, error: { message: String(message), name: String(name), ...(typeof code === 'string' ? { code } : {}) } } satisfies KeyStoreReply);
    },
  );
});
