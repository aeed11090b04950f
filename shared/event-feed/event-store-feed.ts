import type { EventStore, LogSubscription, RecordedEvent } from '../event-store/port.js';
import type { Vault } from '../personal-data/vault.js';
import { retrying } from '../retry.js';
import { traceContextOf, tracingOn } from '../tracing.js';
import { inBatches } from './batches.js';
import type { EventFeed, ProjectedEvent } from './port.js';

export const globalLogSource = '$all';

/** The event with the trace context its metadata names, for the projector's batch span. */
function withTrace(event: RecordedEvent): ProjectedEvent {
  const trace = traceContextOf(event.metadata.traceparent, event.metadata.tracestate);
  if (!trace) return event;
  const { streamId, revision, type, data, position } = event;
  return { streamId, revision, type, data, position, trace };
}

/** The projector's feed straight from the event store's global log (no Kafka). */
export function eventStoreFeed(
  store: EventStore,
  options: {
    batchSize: number;
    /** Opens the sealed personal fields (an event whose key is gone reads as UserForgotten) and finishes forgets (destroys the keys a UserForgotten names). */
    vault: Pick<Vault, 'open'>;
    onLiveChange?: (live: boolean) => void;
    /** Told of each failure to open a batch while the key store is down (the feed waits and tries again). */
    onKeyStoreRetry?: (error: unknown, attempt: number) => void;
  },
): EventFeed {
  const subscriptions = new Set<LogSubscription>();
  const closing = new AbortController();
  return {
    async *batches(from) {
      const after = from.get(globalLogSource);
      // Unfiltered on purpose: the checkpoint must move past other streams' events too,
      // or a log that ends in one would be re-read after every restart. The projector
      // ignores events that are not user events.
      const subscription = store.subscribeToAll({
        ...(after === undefined ? {} : { after: BigInt(after) }),
        ...(options.onLiveChange ? { onLiveChange: options.onLiveChange } : {}),
      });
      subscriptions.add(subscription);
      try {
        for await (const stored of inBatches(subscription, options.batchSize)) {
          // The key store down is an outage: wait for it rather than read events as forgotten.
          const events = await retrying(() => options.vault.open(stored, { finishForgets: true }), {
            signal: closing.signal,
            ...(options.onKeyStoreRetry ? { onRetry: options.onKeyStoreRetry } : {}),
          });
          const last = events[events.length - 1]!;
          yield {
            events: tracingOn() ? events.map(withTrace) : events,
            checkpoints: new Map([[globalLogSource, last.position.toString()]]),
            lastEventAt: new Map([[globalLogSource, last.recordedAt.getTime()]]),
          };
        }
      } finally {
        subscriptions.delete(subscription);
        await subscription.close();
      }
    },
    async close() {
      closing.abort();
      await Promise.all([...subscriptions].map((s) => s.close()));
    },
  };
}
