import type { Config } from '../config.js';
import type { EventStore } from './port.js';
import { sqliteEventStore } from './sqlite-event-store.js';

/** The event store the configuration names. */
export function openEventStore(config: Pick<Config, 'eventStore' | 'pollMs'>): EventStore {
  return sqliteEventStore({ file: config.eventStore.file, pollMs: config.pollMs });
}
