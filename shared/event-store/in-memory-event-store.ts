import { randomUUID } from 'node:crypto';
import { ConcurrencyError } from '../errors.js';
import { wakeSignal } from '../change-signal.js';
import { pollingSubscription } from './log-subscription.js';
import {
  describeExpected,
  satisfiesExpected,
  type EventStore,
  type RecordedEvent,
} from './port.js';

/** The event store in process memory: for unit tests and benchmarks of pure logic. */
export function inMemoryEventStore(): EventStore {
  const log: RecordedEvent[] = [];
  const streams = new Map<string, RecordedEvent[]>();
  const appended = wakeSignal();

  let closed = false;
  const store: EventStore = {
    appendToStream(streamId, events, { expectedRevision }) {
      return store.appendToStreams!([{ streamId, events, expectedRevision }]).then(([result]) => result!);
    },
    appendToStreams(appends) {
      if (closed) return Promise.reject(new Error('the event store is closed'));
      // Checked in order, as if each stream's share were appended before the next is checked.
      const lengths = new Map<string, number>();
      for (const { streamId, events, expectedRevision } of appends) {
        const length = lengths.get(streamId) ?? streams.get(streamId)?.length ?? 0;
        if (!satisfiesExpected(expectedRevision, length - 1)) {
          return Promise.reject(new ConcurrencyError(streamId, describeExpected(expectedRevision), length - 1));
        }
        lengths.set(streamId, length + events.length);
      }
      const recordedAt = new Date();
      const results = appends.map(({ streamId, events }) => {
        const stream = streams.get(streamId) ?? [];
        for (const event of events) {
          const recorded: RecordedEvent = {
            id: event.id ?? randomUUID(),
            streamId,
            revision: stream.length,
            position: BigInt(log.length + 1),
            type: event.type,
            data: structuredClone(event.data),
            metadata: structuredClone(event.metadata ?? {}),
            recordedAt,
          };
          stream.push(recorded);
          log.push(recorded);
        }
        streams.set(streamId, stream);
        return { nextExpectedRevision: stream.length - 1, position: BigInt(log.length) };
      });
      appended.notify();
      return Promise.resolve(results);
    },
    readStream(streamId, { fromRevision, backwards = false, maxCount = Infinity } = {}) {
      // A stream's revisions are its indexes here.
      const stream = streams.get(streamId) ?? [];
      if (!backwards) return Promise.resolve(stream.slice(fromRevision ?? 0, (fromRevision ?? 0) + maxCount));
      const end = fromRevision === undefined ? stream.length : Math.min(stream.length, fromRevision + 1);
      return Promise.resolve(stream.slice(Math.max(0, end - maxCount), end).reverse());
    },
    readAll({ after = 0n, maxCount }) {
      // Positions are 1-based and consecutive here, so the index of position p is p - 1.
      const start = Number(after);
      return Promise.resolve(log.slice(start, start + maxCount));
    },
    // The port's pages are async; memory has nothing to wait for.
    // eslint-disable-next-line @typescript-eslint/require-await
    async *readAllByStream({ streamPrefix, until, pageSize }) {
      if (!streamPrefix) throw new Error('readAllByStream needs a stream prefix');
      const ids = [...streams.keys()].filter((id) => id.startsWith(streamPrefix)).sort();
      let page: RecordedEvent[] = [];
      for (const id of ids) {
        for (const event of streams.get(id) ?? []) {
          // A stream's positions grow with its revisions.
          if (event.position > until) break;
          page.push(event);
          if (page.length === pageSize) {
            yield page;
            page = [];
          }
        }
      }
      if (page.length > 0) yield page;
    },
    headPosition() {
      return Promise.resolve(log.length === 0 ? undefined : BigInt(log.length));
    },
    subscribeToAll(options = {}) {
      return pollingSubscription({ readAll: (o) => store.readAll(o), waitForAppend: (ms) => appended.wait(ms) }, options);
    },
    close() {
      closed = true;
      return Promise.resolve();
    },
  };
  return store;
}
