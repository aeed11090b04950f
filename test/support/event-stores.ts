import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { esdbEventStore } from '../../shared/event-store/esdb-event-store.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { sqliteEventStore } from '../../shared/event-store/sqlite-event-store.js';
import { startEsdbTestServer } from './esdb-test-server.js';

/** The embedded store, empty, in a directory of its own; closed and removed in teardown. */
export async function openEmbeddedStore(t: Test, options: { readAllInWorker?: boolean } = {}): Promise<EventStore> {
  const dir = await mkdtemp(join(tmpdir(), 'users-es-'));
  const store = sqliteEventStore({ file: join(dir, 'events.sqlite'), pollMs: 5, ...options });
  t.teardown(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  return store;
}

/** The embedded store as the rebuild opens it (long reads on a worker thread), empty, closed in teardown. */
export const openEmbeddedStoreReadOnWorker = (t: Test): Promise<EventStore> => openEmbeddedStore(t, { readAllInWorker: true });

/** Every event store backend, each opened empty and closed in teardown. */
export const eventStoreKinds: Array<{ name: string; open(t: Test): Promise<EventStore> }> = [
  {
    name: 'in-memory',
    open: () => Promise.resolve(inMemoryEventStore()),
  },
  { name: 'embedded SQLite', open: (t) => openEmbeddedStore(t) },
  { name: 'embedded SQLite, reading on a worker thread', open: openEmbeddedStoreReadOnWorker },
  {
    name: 'EventStoreDB (gRPC test server)',
    async open(t) {
      const server = await startEsdbTestServer();
      const store = esdbEventStore({ connectionString: server.connectionString });
      t.teardown(async () => {
        await store.close();
        await server.stop();
      });
      return store;
    },
  },
];

/** The store as one that reads its log only in order of position (as EventStoreDB's $all): a replay then takes that path. */
export const inPositionOrderOnly = (store: EventStore): EventStore => ({ ...store, readAllByStream: undefined });
