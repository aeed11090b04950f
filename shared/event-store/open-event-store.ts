import type { Config } from '../config.js';
import { esdbEventStore } from './esdb-event-store.js';
import type { EventStore } from './port.js';
import { sqliteEventStore } from './sqlite-event-store.js';

/**
 * The event store the configuration names: EventStoreDB when EVENTSTORE_URL is set, else
 * the embedded file. `longReads` suits a reader of the whole log (a rebuild): the embedded
 * store then reads on a worker thread.
 */
export function openEventStore(config: Pick<Config, 'eventStore' | 'pollMs'>, options: { longReads?: boolean } = {}): EventStore {
  if (config.eventStore.url) return esdbEventStore({ connectionString: config.eventStore.url });
  return sqliteEventStore({ file: config.eventStore.file, pollMs: config.pollMs, readAllInWorker: options.longReads ?? false });
}
