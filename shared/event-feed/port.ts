import type { Checkpoints, ProjectedEvent } from '../../projector/apply-batch.js';

/**
 * The projector's input: ordered batches, each carrying the checkpoints that hold
 * once it is applied. Adapters: the event store's global log (embedded default,
 * `event-store-feed.ts`); a Kafka consumer group in production.
 */
export interface FeedBatch {
  events: ProjectedEvent[];
  checkpoints: Checkpoints;
  /** For lag metrics, per source: how many messages were left behind this batch when it was fetched (Kafka). */
  behind?: Map<string, number>;
  /** For lag metrics: when the batch's last event entered its source (recorded in the log, appended to Kafka), in ms since the epoch. */
  lastEventAt?: number;
}

export interface EventFeed {
  /** Batches from the given checkpoints on; ends when the feed is closed. */
  batches(from: Checkpoints): AsyncIterable<FeedBatch>;
  close(): Promise<void>;
}
