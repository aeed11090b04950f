import type { Checkpoints, ProjectedEvent } from '../../projector/apply-batch.js';

/**
 * The projector's input: ordered batches, each carrying the checkpoints that hold
 * once it is applied. Adapters: the event store's global log (embedded default,
 * `event-store-feed.ts`); a Kafka consumer group in production.
 */
export interface FeedBatch {
  events: ProjectedEvent[];
  checkpoints: Checkpoints;
}

export interface EventFeed {
  /** Batches from the given checkpoints on; ends when the feed is closed. */
  batches(from: Checkpoints): AsyncIterable<FeedBatch>;
  close(): Promise<void>;
}
