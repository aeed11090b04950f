import type { EventStore, LogSubscription, RecordedEvent } from '../event-store/port.js';
import type { Vault } from './vault.js';

/**
 * The event store as a reader of clear events sees it: every read opens the
 * sealed personal fields (`vault.open`; an event whose key is gone reads as
 * UserForgotten). Appends pass through untouched. For replays that read the
 * log through the port (the rebuild); the write side opens what it reads itself.
 */
export function openedEventStore(store: EventStore, vault: Pick<Vault, 'open'>): EventStore {
  const opened: EventStore = {
    appendToStream: (streamId, events, options) => store.appendToStream(streamId, events, options),
    readStream: async (streamId, options) => vault.open(await store.readStream(streamId, options)),
    readAll: async (options) => vault.open(await store.readAll(options)),
    subscribeToAll(options) {
      const subscription = store.subscribeToAll(options);
      const events: LogSubscription = {
        async *[Symbol.asyncIterator]() {
          for await (const event of subscription) yield (await vault.open<RecordedEvent>([event]))[0]!;
        },
        close: () => subscription.close(),
      };
      return events;
    },
    close: () => store.close(),
  };
  if (store.appendToStreams) opened.appendToStreams = (appends) => store.appendToStreams!(appends);
  if (store.headPosition) opened.headPosition = () => store.headPosition!();
  if (store.readAllByStream) {
    opened.readAllByStream = (options) => {
      const pages = store.readAllByStream!(options);
      return {
        async *[Symbol.asyncIterator]() {
          // Each user's events come together, once: their keys need not stay in memory.
          for await (const page of pages) yield await vault.open(page, { keepKeys: false });
        },
      };
    };
  }
  return opened;
}
