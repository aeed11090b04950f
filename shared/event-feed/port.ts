import type { TraceContext } from '../tracing.js';

/** What the projector needs of an event, whichever feed delivered it. */
export interface ProjectedEvent {
  streamId: string;
  revision: number;
  type: string;
  data: unknown;
  /** Where the feed found it (log position or offset), kept with it if it is parked. */
  position?: bigint | string;
  /** Which of the feed's sources `position` is in (`topic:partition`), when the feed has several; kept with it if it is parked. */
  source?: string;
  /** Set by a feed that could not read the event at all (e.g. a broken Kafka message): it is parked. */
  problem?: string;
  /** The trace context the event was written under (Kafka headers, event metadata); set by the feeds only while tracing is on. */
  trace?: TraceContext;
}

/** Where a feed has got to: e.g. `$all` -> a log position, or `topic:partition` -> an offset. */
export type Checkpoints = Map<string, string>;

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
  /**
   * For lag metrics, per source: when the batch's last event of that source entered it (recorded in
   * the log, appended to Kafka), in ms since the epoch. Per source because a batch merged from
   * several Kafka partitions may hold one partition's live events beside another's ten minutes late:
   * the freshest says nothing of the others.
   */
  lastEventAt?: Map<string, number>;
  /**
   * Set by a feed that counts a batch applied only when told (the projector calls
   * it once the batch is committed to the read DB), so that the next batch may be
   * asked for while this one commits. A feed without it counts a batch applied
   * when the next one is asked for, and the projector then applies one at a time.
   */
  applied?: () => void;
}

export interface EventFeed {
  /**
   * Batches from the given checkpoints on; ends when the feed is closed. `current` reads where the
   * read DB is now: a feed whose sources move between processes (Kafka partitions handed from member
   * to member) asks it for a source it takes on without knowing where the DB holds it.
   */
  batches(from: Checkpoints, current?: () => Promise<Checkpoints>): AsyncIterable<FeedBatch>;
  close(): Promise<void>;
}
