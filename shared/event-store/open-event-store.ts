import type { Config } from '../config.js';
import { requireExistingFile } from '../store-files.js';
import { esdbEventStore } from './esdb-event-store.js';
import type { EventStore } from './port.js';
import { sqliteEventStore } from './sqlite-event-store.js';

/**
 * The event store the configuration names: EventStoreDB when EVENTSTORE_URL is set, else
 * the embedded file. `longReads` suits a reader of the whole log (a rebuild): the embedded
 * store then reads on a worker thread. `create: false` (operator commands, which read the
 * store) refuses a missing embedded file with StoreMissingError instead of creating it.
 */
export function openEventStore(
  config: Pick<Config, 'eventStore' | 'pollMs'>,
  options: { longReads?: boolean; create?: boolean } = {},
): EventStore {
  if (config.eventStore.url) return esdbEventStore({ connectionString: config.eventStore.url });
  const create = options.create ?? true;
  if (!create) requireExistingFile(config.eventStore.file, 'embedded event store', 'DATA_DIR or EVENT_STORE_FILE; EVENTSTORE_URL selects EventStoreDB');
  return sqliteEventStore({ file: config.eventStore.file, pollMs: config.pollMs, readAllInWorker: options.longReads ?? false, create });
}
