import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import t, { type Test } from 'tap';
import type * as SqliteStoreModule from '../../shared/event-store/sqlite-event-store.js';

/**
 * The embedded store's threads, gone: a writer or log reader that dies (an uncaught
 * error, out of memory) is an outage of the moment. What waited on it fails as
 * retriable (503 with Retry-After on the APIs; the relay retries), and the next call
 * starts a new thread.
 */

/** A thread that exits (code 3) when it is first told anything, as one that died under its work would. */
const dying = () => new Worker("require('node:worker_threads').parentPort.once('message', () => process.exit(3))", { eval: true });

// Resolved here, at load: `import.meta.resolve` called during a test, under the mocking loader's hooks, does not return.
const tsxApi = import.meta.resolve('tsx/esm/api');

/** A thread as `startWorkerModule` starts one from the sources (which resolves tsx as it starts it, so cannot serve here). */
function sourceThread(name: string, baseUrl: string, workerData: unknown): Worker {
  const moduleUrl = new URL(`./${name}.worker.ts`, baseUrl);
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(moduleUrl.href)}); })`;
  return new Worker(bootstrap, { eval: true, workerData });
}

/** The embedded store module, its first thread of `name` replaced by one that dies. */
async function storeWhoseFirst(t: Test, name: 'sqlite-appends' | 'sqlite-log-reader') {
  let deaths = 1;
  const { sqliteEventStore } = await t.mockImport<typeof SqliteStoreModule>(
    '../../shared/event-store/sqlite-event-store.js',
    {
      '../../shared/worker-module.ts': {
        startWorkerModule: (started: string, baseUrl: string, data: unknown) =>
          started === name && deaths-- > 0 ? dying() : sourceThread(started, baseUrl, data),
      },
    },
  );
  const dir = await mkdtemp(join(tmpdir(), 'users-threads-'));
  const store = sqliteEventStore({ file: join(dir, 'events.sqlite'), pollMs: 5, readAllInWorker: true });
  t.teardown(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  return store;
}

const event = { type: 'Happened', data: { n: 1 } };

void t.test('a writer thread that dies fails its appends as retriable, and the next append starts a new one', async (t) => {
  const store = await storeWhoseFirst(t, 'sqlite-appends');
  await t.rejects(store.appendToStream('s-1', [event], { expectedRevision: 'no_stream' }), {
    name: 'StoreUnavailableError',
    code: 'STORE_UNAVAILABLE',
    retriable: true,
    message: /writer thread exited \(code 3\)/,
  });
  const appended = await store.appendToStream('s-1', [event], { expectedRevision: 'no_stream' });
  t.equal(appended.nextExpectedRevision, 0, 'the new writer appends');
  t.equal((await store.readStream('s-1')).length, 1);
});

void t.test('a log reader thread that dies fails its read as retriable, and the next read starts a new one', async (t) => {
  const store = await storeWhoseFirst(t, 'sqlite-log-reader');
  await store.appendToStream('s-1', [event, event], { expectedRevision: 'no_stream' });
  await t.rejects(store.readAll({ maxCount: 10 }), {
    name: 'StoreUnavailableError',
    retriable: true,
    message: /log reader stopped \(exit code 3\)/,
  });
  t.equal((await store.readAll({ maxCount: 10 })).length, 2, 'read by a new reader');
});
