/**
 * The event store port. Adapters: `sqlite-event-store.ts` (embedded, file-backed,
 * the default), `esdb-event-store.ts` (EventStoreDB, production),
 * `in-memory-event-store.ts` (unit tests). Every adapter passes
 * `test/contracts/event-store.contract.ts`.
 *
 * Revisions count events within a stream from 0. Positions order events in the
 * global log; they only grow, but need not be consecutive.
 */
export type ExpectedRevision = 'no_stream' | 'stream_exists' | 'any' | number;

export interface EventMetadata {
  correlationId?: string;
  causationId?: string;
  /** The W3C trace context the event was written under, handed on to its Kafka message and its projection. */
  traceparent?: string;
  tracestate?: string;
  [key: string]: unknown;
}

export interface EventToAppend {
  /** Unique event id; generated when absent. */
  id?: string;
  type: string;
  data: unknown;
  metadata?: EventMetadata;
}

export interface RecordedEvent {
  id: string;
  streamId: string;
  revision: number;
  position: bigint;
  type: string;
  data: unknown;
  metadata: EventMetadata;
  recordedAt: Date;
}

export interface AppendResult {
  /** Revision of the last event appended. */
  nextExpectedRevision: number;
  /** Global position of the last event appended. */
  position: bigint;
}

/** One stream's share of a multi-stream append. */
export interface StreamAppend {
  streamId: string;
  events: readonly EventToAppend[];
  expectedRevision: ExpectedRevision;
}

export interface ReadAllOptions {
  /** Only events whose position is greater than this; from the start when absent. */
  after?: bigint;
  maxCount: number;
}

export interface ReadStreamOptions {
  /**
   * Where the read starts, that event included: forwards, the first revision read
   * (default 0); backwards, the last (default the stream's last event).
   */
  fromRevision?: number;
  /**
   * From `fromRevision` towards the stream's start, in descending order of revision.
   * With `maxCount: 1`, the stream's last event: a reader that needs only the latest
   * state of a long stream (the relay's lease) reads one event, not the stream.
   */
  backwards?: boolean;
  /** At most this many events (at least 1); all of them when absent. */
  maxCount?: number;
}

/** An event as a projection replaying the log needs it: no id, metadata or recording time. */
export type LoggedEvent = Pick<RecordedEvent, 'streamId' | 'revision' | 'position' | 'type' | 'data'>;

export interface ReadAllByStreamOptions {
  /** Only streams whose id starts with this (not empty). */
  streamPrefix: string;
  /** Only events at or before this position: the log as it stood when the replay began. */
  until: bigint;
  /** Events per page. */
  pageSize: number;
}

export interface SubscribeOptions {
  after?: bigint;
  /** Only events of streams whose id starts with one of these prefixes. */
  streamPrefixes?: readonly string[];
  /**
   * Told `true` when the subscription has caught up with the head of the log and
   * `false` when it falls behind again (or dropped and is resubscribing).
   */
  onLiveChange?: (live: boolean) => void;
}

/** A live, ordered view of the global log; iterate it, close it to stop. */
export interface LogSubscription extends AsyncIterable<RecordedEvent> {
  close(): Promise<void>;
}

export interface EventStore {
  /** Appends atomically; throws ConcurrencyError when the stream is not where expected. */
  appendToStream(
    streamId: string,
    events: readonly EventToAppend[],
    options: { expectedRevision: ExpectedRevision },
  ): Promise<AppendResult>;
  /**
   * Optional: appends to several streams in one transaction, all or nothing, in
   * the order given (their events get consecutive positions in that order).
   * Throws ConcurrencyError for the first stream not where expected, having
   * written nothing; resolves with one result per stream. Stores without
   * multi-stream transactions (EventStoreDB) leave it out, and callers append
   * stream by stream.
   */
  appendToStreams?(appends: readonly StreamAppend[]): Promise<AppendResult[]>;
  /**
   * The stream's events in order of revision (descending with `backwards`); an empty
   * array when the stream does not exist.
   */
  readStream(streamId: string, options?: ReadStreamOptions): Promise<RecordedEvent[]>;
  /**
   * Optional: keeps the stream to its last `maxCount` events, the rest dropped by the
   * store in its own time (EventStoreDB: `$maxCount` in the stream's metadata, set
   * once; a stream whose metadata already names one keeps it). Revisions go on
   * counting, so an append still names the stream's real last revision; a read finds
   * only the events kept, the last one always among them. Stores whose log is kept
   * whole (the embedded one, append-only) leave it out.
   */
  capStream?(streamId: string, maxCount: number): Promise<void>;
  readAll(options: ReadAllOptions): Promise<RecordedEvent[]>;
  /**
   * Optional: the log up to a position, in pages, stream after stream (each
   * stream's events together, in order of revision; the streams in an order of
   * the store's choosing). A replay of one-row-per-stream projections (the
   * rebuild) then completes each row before the next begins and holds none of
   * them. The store may read ahead while the caller works; leaving the loop early
   * stops it. Stores that can only read the log in order of position
   * (EventStoreDB's $all) leave it out, and such replays read `readAll`.
   */
  readAllByStream?(options: ReadAllByStreamOptions): AsyncIterable<readonly LoggedEvent[]>;
  /**
   * The position of the last event in the log, if the store can tell cheaply;
   * for progress displays (e.g. the rebuild's), never for correctness.
   */
  headPosition?(): Promise<bigint | undefined>;
  /**
   * Optional: what the store's own writer has done since it opened, for metrics
   * (`writer-metrics.ts`). The embedded store's group-commit writer gives it; a
   * store whose writes happen in a server (EventStoreDB) leaves it out.
   */
  writerStats?(): WriterStats;
  /**
   * Optional, beside `writerStats`: calls `listener` with the wall time of each
   * transaction the writer finishes (committed or failed), in seconds, for a
   * histogram (`writer-metrics.ts`): the counts give the mean, this the spikes
   * (a commit that also checkpoints) that set a write's tail latency. Once per
   * transaction, not per append. Returns what stops the calls.
   */
  observeCommits?(listener: (seconds: number) => void): () => void;
  /** Catches up from `after`, then tails new appends. */
  subscribeToAll(options?: SubscribeOptions): LogSubscription;
  /** Lets the appends under way finish, then releases the store; appends after it are refused. */
  close(): Promise<void>;
}

/** A group-commit writer's work since it started (see `EventStore.writerStats`). */
export interface WriterStats {
  /** Transactions run (each a group of appends and one fsync), committed or failed. */
  groups: number;
  /** Appends those transactions held. */
  appends: number;
  /** Wall time spent in them, from BEGIN to COMMIT's return, in seconds: the writer's busy time. */
  seconds: number;
}

export const describeExpected = (expected: ExpectedRevision): string => String(expected);

/** Whether a stream currently at `current` (-1: no stream) satisfies `expected`. */
export function satisfiesExpected(expected: ExpectedRevision, current: number): boolean {
  switch (expected) {
    case 'any':
      return true;
    case 'no_stream':
      return current === -1;
    case 'stream_exists':
      return current >= 0;
    default:
      return current === expected;
  }
}
