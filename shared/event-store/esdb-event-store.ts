import { randomUUID } from 'node:crypto';
import {
  ANY,
  BACKWARDS,
  CancelledError,
  DeadlineExceededError,
  END,
  EventStoreDBClient,
  FORWARDS,
  NO_STREAM,
  NotLeaderError,
  START,
  STREAM_EXISTS,
  StreamNotFoundError,
  TimeoutError,
  UnavailableError,
  WrongExpectedVersionError,
  excludeSystemEvents,
  jsonEvent,
  streamNameFilter,
  type AllStreamResolvedEvent,
  type AppendExpectedRevision,
  type JSONType,
  type ResolvedEvent,
} from '@eventstore/db-client';
import { ConcurrencyError, ServiceError, StoreUnavailableError } from '../errors.js';
import { withTimeout } from '../retry.js';
import {
  describeExpected,
  type EventMetadata,
  type EventStore,
  type EventToAppend,
  type ExpectedRevision,
  type LogSubscription,
  type ReadStreamOptions,
  type RecordedEvent,
  type SubscribeOptions,
} from './port.js';

export interface EsdbEventStoreOptions {
  /** e.g. `esdb://node1:2113,node2:2113?tls=true`. */
  connectionString: string;
  /**
   * Upper bound on each append and read. The client sets no deadline on reads and
   * on the shared BatchAppend call, so without it a hung node would hang callers.
   */
  operationTimeoutMs?: number;
  /** Backoff between resubscriptions after a subscription dropped (doubling, capped). */
  resubscribeDelayMs?: { initial: number; max: number };
  /** Told of every drop that is followed by a resubscription, e.g. to log it. */
  onSubscriptionDropped?: (error: unknown, attempt: number) => void;
}

type Resolved = ResolvedEvent | AllStreamResolvedEvent;

/** gRPC status codes that mean "the node is not reachable right now". */
const UNAVAILABLE_CODES = new Set([
  1, // CANCELLED: by the server, e.g. it shut down under a call
  4, // DEADLINE_EXCEEDED
  10, // ABORTED: the client maps it to TimeoutError
  14, // UNAVAILABLE
]);

/**
 * The client reports the same outage in two shapes: its own CommandErrors, or the
 * raw gRPC ServiceError when it failed while asking for the server's features
 * (which happens first on every append after a reconnect).
 */
function isUnavailable(error: unknown): boolean {
  if (
    error instanceof UnavailableError ||
    error instanceof DeadlineExceededError ||
    error instanceof TimeoutError ||
    error instanceof CancelledError ||
    error instanceof NotLeaderError
  ) {
    return true;
  }
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' && UNAVAILABLE_CODES.has(code) && !isClientCancellation(error);
}

const isClientCancellation = (error: unknown) =>
  (error as { details?: unknown } | null)?.details === 'Cancelled on client';

const message = (error: unknown) => (error instanceof Error ? error.message : String(error));

function translate(error: unknown, what: string): Error {
  if (error instanceof ServiceError) return error;
  if (isUnavailable(error)) {
    return new StoreUnavailableError(`EventStoreDB unavailable during ${what}: ${message(error)}`, { cause: error });
  }
  return new Error(`EventStoreDB ${what} failed: ${message(error)}`, { cause: error });
}

function toVendorExpected(expected: ExpectedRevision): AppendExpectedRevision {
  switch (expected) {
    case 'no_stream':
      return NO_STREAM;
    case 'stream_exists':
      return STREAM_EXISTS;
    case 'any':
      return ANY;
    default:
      return BigInt(expected);
  }
}

/** A node before 22.6 sends 2^64-1 ("no position") for events read from a stream. */
const NO_POSITION = 2n ** 64n - 1n;

function toRecorded(resolved: Resolved): RecordedEvent | undefined {
  const event = resolved.event;
  if (!event) return undefined;
  const position = event.position?.commit ?? resolved.commitPosition;
  if (position === undefined || position === NO_POSITION) {
    throw new Error(`EventStoreDB sent no log position for ${event.streamId}@${event.revision}; 22.6 or newer is needed`);
  }
  // JSON metadata arrives parsed; anything else (bytes, arrays) is not ours.
  const metadata: unknown = event.metadata;
  return {
    id: event.id,
    streamId: event.streamId,
    revision: Number(event.revision),
    position,
    type: event.type,
    data: event.data,
    metadata:
      metadata && typeof metadata === 'object' && !(metadata instanceof Uint8Array) && !Array.isArray(metadata)
        ? (metadata as EventMetadata)
        : {},
    recordedAt: event.created,
  };
}

/** Events the database writes itself ($stats, $metadata, links, projections...). */
const isSystemEvent = (event: Pick<RecordedEvent, 'type' | 'streamId'>) => event.type.startsWith('$') || event.streamId.startsWith('$');

/** Rejects with StoreUnavailableError after `ms`, calling `onTimeout` to release resources. */
function bounded<T>(work: Promise<T>, ms: number, what: string, onTimeout?: () => void): Promise<T> {
  return withTimeout(work, ms, () => {
    onTimeout?.();
    return new StoreUnavailableError(`EventStoreDB did not answer ${what} within ${ms} ms`);
  });
}

/**
 * One client per connection string per process, disposed with its last store.
 * The client (6.2) keeps pending BatchAppends in a module-wide table: disposing
 * one client rejects the appends in flight on every other client, and the answers
 * that then arrive for them crash the process with an uncaught TypeError.
 */
const clients = new Map<string, { client: EventStoreDBClient; stores: number }>();

function acquireClient(connectionString: string) {
  const entry = clients.get(connectionString) ?? {
    client: EventStoreDBClient.connectionString(connectionString),
    stores: 0,
  };
  clients.set(connectionString, entry);
  entry.stores += 1;
  return {
    client: entry.client,
    release: async () => {
      entry.stores -= 1;
      if (entry.stores > 0) return;
      clients.delete(connectionString);
      await entry.client.dispose();
    },
  };
}

/**
 * The production event store: EventStoreDB through `@eventstore/db-client`.
 *
 * Positions are commit positions. `after` is exclusive everywhere in the port;
 * EventStoreDB reads of $all include the event at `fromPosition` (it is skipped
 * here) while subscriptions start after it (events at or before the last
 * position seen are skipped anyway, which also makes resubscription duplicate-free).
 * System events are never returned by readAll or subscriptions.
 */
export function esdbEventStore(options: EsdbEventStoreOptions): EventStore {
  const { client, release } = acquireClient(options.connectionString);
  const timeoutMs = options.operationTimeoutMs ?? 10_000;
  const backoff = options.resubscribeDelayMs ?? { initial: 100, max: 5_000 };
  const subscriptions = new Set<LogSubscription>();
  const inflight = new Set<Promise<unknown>>();
  let closed = false;

  /**
   * Runs an operation, kept in `inflight` while it runs; refused once the store is
   * closed (on a released client it would open a stream nothing ends). close() waits
   * for the operations in flight before the client may be disposed: disposal fails
   * pending appends with an unhelpful "Cancelled on client", and a read it cancels
   * never ends (the client swallows its own cancellations).
   */
  function track<T>(start: () => Promise<T>): Promise<T> {
    if (closed) return Promise.reject(new Error('the event store is closed'));
    const operation = start();
    inflight.add(operation);
    const done = () => inflight.delete(operation);
    operation.then(done, done);
    return operation;
  }

  /** Drains a read, bounded in time: the client puts no deadline on reads. */
  async function collect(read: ReturnType<typeof client.readAll> | ReturnType<typeof client.readStream>, what: string) {
    const events: Resolved[] = [];
    const drain = async () => {
      for await (const resolved of read) events.push(resolved);
      return events;
    };
    return bounded(drain(), timeoutMs, what, () => {
      void read.cancel();
      read.destroy();
    });
  }

  async function readAllPage(after: bigint | undefined, maxCount: number): Promise<RecordedEvent[]> {
    const out: RecordedEvent[] = [];
    let cursor = after;
    // System events do not count towards maxCount, so one page may take several reads.
    while (out.length < maxCount) {
      const want = maxCount - out.length + (cursor === undefined ? 0 : 1);
      const read = client.readAll({
        fromPosition: cursor === undefined ? START : { commit: cursor, prepare: cursor },
        maxCount: want,
      });
      const page = await collect(read, 'readAll');
      for (const resolved of page) {
        const event = toRecorded(resolved);
        if (!event || (cursor !== undefined && event.position <= cursor)) continue;
        cursor = event.position;
        if (!isSystemEvent(event) && out.length < maxCount) out.push(event);
      }
      if (page.length < want) break;
    }
    return out;
  }

  async function append(streamId: string, events: readonly EventToAppend[], expected: ExpectedRevision) {
    const what = `append to ${streamId}`;
    try {
      const result = await bounded(
        client.appendToStream(
          streamId,
          events.map((e) =>
            jsonEvent({
              id: e.id ?? randomUUID(),
              type: e.type,
              data: e.data as JSONType,
              ...(e.metadata ? { metadata: e.metadata } : {}),
            }),
          ),
          { expectedRevision: toVendorExpected(expected) },
        ),
        timeoutMs,
        what,
      );
      if (!result.success) {
        // Only with throwOnAppendFailure=false in the connection string. The client's
        // BatchAppend path then reports a wrong current revision, so say -1 rather
        // than trust it.
        throw new ConcurrencyError(streamId, describeExpected(expected), -1);
      }
      return {
        nextExpectedRevision: Number(result.nextExpectedRevision),
        position: result.position?.commit ?? 0n,
      };
    } catch (error) {
      if (error instanceof WrongExpectedVersionError) {
        const actual = typeof error.actualVersion === 'bigint' ? Number(error.actualVersion) : -1;
        throw new ConcurrencyError(streamId, describeExpected(expected), actual, { cause: error });
      }
      throw translate(error, what);
    }
  }

  async function readStream(streamId: string, { fromRevision, backwards = false, maxCount }: ReadStreamOptions) {
    const what = `read of ${streamId}`;
    try {
      const read = client.readStream(streamId, {
        direction: backwards ? BACKWARDS : FORWARDS,
        fromRevision: fromRevision === undefined ? (backwards ? END : START) : BigInt(fromRevision),
        ...(maxCount === undefined ? {} : { maxCount }),
      });
      const events = await collect(read, what);
      return events.map(toRecorded).filter((e): e is RecordedEvent => e !== undefined);
    } catch (error) {
      if (error instanceof StreamNotFoundError) return [];
      throw translate(error, what);
    }
  }

  /**
   * `$maxCount` in the stream's metadata, merged into what the metadata already says (an
   * operator's ACL stays), unless it names one already. The metadata is read and written
   * here rather than through the client's getStreamMetadata, whose `metastreamRevision` is
   * the metadata event's log position, not its revision, so it cannot be the expected
   * revision of the write; and the write names the revision read, so an operator's change
   * made meanwhile is not overwritten (it conflicts instead). The server keeps a stream's
   * revisions (its last event number) whatever the cap, so appends are checked against the
   * real last revision; a read of the stream starts at its last `maxCount` events.
   */
  async function capStream(streamId: string, maxCount: number) {
    const metastream = `$$${streamId}`;
    const [current] = await readStream(metastream, { backwards: true, maxCount: 1 });
    const data = current?.data;
    const metadata = data !== null && typeof data === 'object' && !Array.isArray(data) && !(data instanceof Uint8Array) ? (data as Record<string, unknown>) : {};
    if ('$maxCount' in metadata) return;
    await append(metastream, [{ type: '$metadata', data: { ...metadata, $maxCount: maxCount } }], current?.revision ?? 'no_stream');
  }

  async function readAll(after: bigint | undefined, maxCount: number) {
    if (maxCount <= 0) return [];
    try {
      return await readAllPage(after, maxCount);
    } catch (error) {
      throw translate(error, 'readAll');
    }
  }

  /**
   * The last event's commit position (a byte offset, so only an estimate of the log's size), system
   * events left out as every read and subscription here leaves them: a log that ends in one (the
   * server's `$epoch-information` after a restart) is not ahead of a reader that has read all the rest.
   * Undefined when the last page holds system events only.
   */
  async function headPosition(): Promise<bigint | undefined> {
    try {
      const page = await collect(client.readAll({ direction: BACKWARDS, fromPosition: END, maxCount: 32 }), 'readAll backwards');
      const last = page.find((resolved) => resolved.event !== undefined && !isSystemEvent(resolved.event));
      return last?.event?.position?.commit ?? last?.commitPosition;
    } catch (error) {
      throw translate(error, 'readAll backwards');
    }
  }

  function subscribeToAll({ after, streamPrefixes, onLiveChange }: SubscribeOptions = {}): LogSubscription {
    let stopped = false;
    let current: ReturnType<typeof client.subscribeToAll> | undefined;
    let wake: () => void = () => {};
    // Server-side filtering: by stream prefix when asked, else at least no system events.
    const filter = streamPrefixes ? streamNameFilter({ prefixes: [...streamPrefixes] }) : excludeSystemEvents();

    async function* events(): AsyncGenerator<RecordedEvent> {
      try {
        yield* resubscribing();
      } finally {
        subscriptions.delete(subscription);
      }
    }

    async function* resubscribing(): AsyncGenerator<RecordedEvent> {
      let last = after;
      let attempt = 0;
      while (!stopped) {
        const vendor = client.subscribeToAll({
          fromPosition: last === undefined ? START : { commit: last, prepare: last },
          filter,
        });
        current = vendor;
        // A confirmed subscription means the node is back: the next drop starts a fresh backoff.
        vendor.once('confirmation', () => (attempt = 0));
        vendor.on('caughtUp', () => onLiveChange?.(true));
        vendor.on('fellBehind', () => onLiveChange?.(false));
        try {
          for await (const resolved of vendor as AsyncIterable<AllStreamResolvedEvent>) {
            const event = toRecorded(resolved);
            // Subscriptions start after `fromPosition`; skipping what was seen anyway
            // keeps a resubscription free of duplicates whatever the server does.
            if (!event || (last !== undefined && event.position <= last)) continue;
            last = event.position;
            if (!isSystemEvent(event)) yield event;
          }
          if (stopped) return;
          options.onSubscriptionDropped?.(new Error('the server ended the subscription'), attempt + 1);
        } catch (error) {
          if (stopped) return;
          if (!isUnavailable(error)) throw translate(error, 'subscription to $all');
          options.onSubscriptionDropped?.(error, attempt + 1);
        } finally {
          current = undefined;
          if (!stopped) onLiveChange?.(false);
          vendor.unsubscribe().catch(() => {});
          vendor.destroy();
        }
        const delay = Math.min(backoff.max, backoff.initial * 2 ** attempt++);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    }

    const iterator = events();
    const subscription: LogSubscription = {
      [Symbol.asyncIterator]: () => iterator,
      async close() {
        stopped = true;
        subscriptions.delete(subscription);
        wake();
        // Ends a pending next(): the loop above throws, sees `stopped`, and returns.
        current?.destroy();
        await iterator.return(undefined);
      },
    };
    subscriptions.add(subscription);
    if (closed) void subscription.close();
    return subscription;
  }

  return {
    appendToStream: (streamId, events, { expectedRevision }) => track(() => append(streamId, events, expectedRevision)),
    readStream: (streamId, options = {}) => track(() => readStream(streamId, options)),
    capStream: (streamId, maxCount) => track(() => capStream(streamId, maxCount)),
    readAll: ({ after, maxCount }) => track(() => readAll(after, maxCount)),
    headPosition: () => track(() => headPosition()),
    subscribeToAll,
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all([...subscriptions].map((s) => s.close()));
      // Every operation is bounded by the timeout, so this wait is too.
      await Promise.allSettled([...inflight]);
      await release();
    },
  };
}
