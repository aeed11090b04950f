import { parentPort, workerData } from 'node:worker_threads';
import type { KeyStore } from './key-store.js';
import { openSqliteKeyStore } from './sqlite-key-store.js';
import type { KeyStoreCall, KeyStoreResult, KeyStoreWorkerData } from './sqlite-key-store-thread.js';
import { answerCalls } from '../thread-calls.js';

/**
 * The embedded key store's writes on a thread of their own: their fsyncs (a batch
 * of new keys, a forget) never hold up the event loop of the process that uses it.
 * Reads go to a connection of the process's own thread (`sqlite-key-store-thread.ts`).
 */
const options = workerData as KeyStoreWorkerData;
const port = parentPort!;
const store: KeyStore = openSqliteKeyStore(options.file, {
  ...(options.secret ? { secret: Buffer.from(options.secret) } : {}),
  ...(options.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: options.busyTimeoutMs }),
});

answerCalls<KeyStoreCall, KeyStoreResult>(port, async (request) => {
  switch (request.method) {
    case 'create':
      return store.create(request.count);
    case 'destroy':
      return store.destroy(request.ids);
    case 'close':
      return store.close();
  }
});
