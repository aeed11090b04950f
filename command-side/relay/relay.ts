import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { SpanKind, type Span } from '@opentelemetry/api';
import type { Logger } from 'pino';
import { CorruptEventError } from '../../shared/errors.js';
import { inBatches } from '../../shared/event-feed/batches.js';
import type { EventStore, RecordedEvent } from '../../shared/event-store/port.js';
import { envelopeContentType, envelopeOf } from '../../shared/public-events.js';
import { backoffDelay, isRetriable, retrying } from '../../shared/retry.js';
import { endingSpan, startSpan, traceContextOf, tracingOn } from '../../shared/tracing.js';
import type { Vault } from '../../shared/personal-data/vault.js';
import { parseUserEvent, userStreamPrefix } from '../../shared/user-events.js';
import type { EventPublisher, OutboundMessage } from './publisher.js';
import { LeaseLostError, relayLease, relayStreamId, type Lease } from './relay-lease.js';

/**
 * Gateway: one stored event becomes zero or one message, keyed by its stream.
 * The W3C trace context the event was written under, if any, rides along as the
 * `traceparent` (and `tracestate`) header.
 */
export function messageOf(event: RecordedEvent): OutboundMessage | undefined {
  const envelope = envelopeOf(event);
  if (!envelope) return undefined;
  return {
    key: event.streamId,
    value: JSON.stringify(envelope),
    headers: {
      'content-type': envelopeContentType,
      'event-type': envelope.type,
      'event-id': envelope.eventId,
      ...traceContextOf(event.metadata.traceparent, event.metadata.tracestate),
    },
  };
}

/** The same EVENT_INVALID every side raises for this event, or undefined when it is sound. */
function corruptionOf(event: RecordedEvent): CorruptEventError | undefined {
  try {
    parseUserEvent(event);
    return undefined;
  } catch (error) {
    if (error instanceof CorruptEventError) return error;
    throw error;
  }
}

/** A producer span for one batch, linked to the context each of its messages carries (OpenTelemetry messaging conventions). */
function sendSpan(topic: string, messages: readonly OutboundMessage[]): Span {
  return startSpan(`send ${topic}`, {
    kind: SpanKind.PRODUCER,
    links: messages.map((m) => traceContextOf(m.headers.traceparent, m.headers.tracestate)),
    attributes: {
      'messaging.system': 'kafka',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'send',
      'messaging.destination.name': topic,
      'messaging.batch.message_count': messages.length,
    },
  });
}

export interface RelayStatus {
  role: 'starting' | 'standby' | 'publishing' | 'stopped';
  /** Whether the relay has caught up with the head of the log. */
  live: boolean;
  published: number;
  /** The resume point: the log position up to which the broker acknowledged everything, as stored. */
  position?: string;
  /** When the last event the broker acknowledged was recorded in the log, ms since the epoch: for the lag in seconds. */
  lastPublishedAt?: number;
  /** When the oldest event read and not yet acknowledged was recorded (a batch being published, retried through an outage): for the lag in seconds. */
  pendingSince?: number;
}

/**
 * Publishes every user event of the global log to the broker, at least once and
 * in log order (so in per-stream order). The resume point moves only after the
 * broker acknowledged the batch, so a crash anywhere republishes, never skips;
 * consumers drop the duplicates by stream revision. Only the lease holder
 * publishes; the others wait in standby.
 */
export function eventRelay(deps: {
  store: EventStore;
  /**
   * Opens the events' sealed personal fields: consumers get them in clear, or, once a user's key is gone,
   * user.forgotten.v1. It also finishes forgets: the keys a UserForgotten names are destroyed before it is published.
   */
  vault: Pick<Vault, 'open'>;
  publisher: EventPublisher;
  topic: string;
  logger: Logger;
  leaseMs: number;
  batchSize: number;
  owner?: string;
  /** Told of every batch the broker acknowledged: its messages and how long publishing took (retries included). */
  onPublished?: (messages: number, seconds: number) => void;
}) {
  const { store, publisher, logger } = deps;
  const owner = deps.owner ?? randomUUID();
  const lease = relayLease({ store, streamId: relayStreamId(deps.topic), owner, leaseMs: deps.leaseMs, partitions: publisher.partitions });
  // Renew when a third of the lease is gone; stop publishing with a third still left.
  const renewEvery = deps.leaseMs / 3;
  const margin = deps.leaseMs / 3;
  const abort = new AbortController();
  const status: RelayStatus = { role: 'starting', live: false, published: 0 };

  /** A batch of the log opened (its personal fields in clear, or forgotten) and made into messages, and when. */
  async function openBatch(stored: RecordedEvent[]) {
    const events = await deps.vault.open(stored, { finishForgets: true });
    const messages = events.flatMap((event) => {
      const message = messageOf(event);
      // The v1 contract has no name for it; the embedded projector would park it, here it is only reported.
      if (!message) {
        logger.error({ stream: event.streamId, revision: event.revision, type: event.type }, 'user event of a type the public contract does not name; not published');
        return [];
      }
      // A corrupt payload is published as stored: consumers park it and hold its stream back, in order.
      const corrupt = corruptionOf(event);
      if (corrupt) logger.error({ err: corrupt }, 'corrupt user event published as stored; consumers park it');
      return message;
    });
    return { events, messages };
  }

  /**
   * The lease's appends (renewals and resume points) one at a time, in the
   * background: the next batch is published while the previous one's resume
   * point is written. Resume points coalesce: while one is being written, only
   * the latest acknowledged position waits to be written next. A failure (the
   * lease lost, the store down) ends this holding of the lease: it is thrown at the
   * publisher's next step, and `signal` stops the publisher's retries (a send or
   * the key store through an outage), which would otherwise meet the same failure
   * at every attempt. `run` then stands by, or, the store down, starts again from
   * the last resume point written, with a writer of its own.
   */
  function leaseWriter(held: Lease) {
    let pending: bigint | undefined;
    let writing: Promise<void> | undefined;
    let failure: Error | undefined;
    let fail: (error: Error) => void = () => {};
    const failed = new Promise<never>((_, reject) => (fail = reject));
    failed.catch(() => {}); // observed through `failed` by whoever races it
    const failing = new AbortController();
    const drain = async () => {
      try {
        while (pending !== undefined) {
          const to = pending;
          pending = undefined;
          await held.renew(to);
          status.position = to.toString();
        }
      } catch (error) {
        failure = error instanceof Error ? error : new Error(String(error));
        fail(failure);
        failing.abort(failure);
      } finally {
        writing = undefined;
      }
    };
    const settled = async () => {
      while (writing) await writing;
      if (failure) throw failure;
    };
    return {
      /** The broker acknowledged everything up to `position`: it may become the resume point. */
      acknowledged(position: bigint) {
        if (failure) throw failure;
        pending = position;
        writing ??= drain();
      },
      /** Renews the lease (no resume point to move) once the writes in flight are done. */
      async renew() {
        await settled();
        await held.renew();
      },
      /** Waits for every resume point handed over to be written. */
      settled,
      /** Rejects when a write fails (the lease lost, the store down), so a relay waiting for events stops at once. */
      failed,
      /** Aborted when a write fails or the relay stops: for the publisher's retries. */
      signal: AbortSignal.any([abort.signal, failing.signal]),
      /** The write that failed, if one did. */
      failure: () => failure,
    };
  }

  async function publishWhileHolding(held: Lease): Promise<void> {
    const after = held.position();
    // Behind until the new subscription says it has read up to the head (it reports changes only).
    status.live = false;
    const subscription = store.subscribeToAll({
      ...(after === undefined ? {} : { after }),
      streamPrefixes: [userStreamPrefix],
      onLiveChange: (live) => {
        status.live = live;
        logger.info({ position: status.position }, live ? 'relay caught up with the log' : 'relay fell behind the log');
      },
    });
    const closeOnAbort = () => void subscription.close();
    abort.signal.addEventListener('abort', closeOnAbort);
    const batches = inBatches(subscription, deps.batchSize, { lingerMs: 10 })[Symbol.asyncIterator]();
    const leaseWrites = leaseWriter(held);
    /**
     * `work` retried through an outage until it succeeds, the relay stops, or a lease
     * write fails: then that failure is thrown, not the work's, and `run` handles it
     * (a retry here would only meet it again). An attempt under way is finished first,
     * so a send is never left running behind the next holding's.
     */
    const retryingWhileHeld = async <T>(work: () => Promise<T>, onRetry: (error: unknown, attempt: number) => void): Promise<T> => {
      try {
        return await retrying(work, { signal: leaseWrites.signal, capMs: renewEvery, onRetry });
      } catch (error) {
        throw leaseWrites.failure() ?? error;
      }
    };
    try {
      let next = batches.next();
      for (;;) {
        // A timer per wait, cancelled when a batch wins, so none pile up under load.
        const timer = new AbortController();
        const renewal = sleep(renewEvery, 'renew' as const, { signal: AbortSignal.any([abort.signal, timer.signal]) }).catch(
          () => 'renew' as const,
        );
        const winner = await Promise.race([next, renewal, leaseWrites.failed]);
        timer.abort();
        if (abort.signal.aborted) return;
        if (winner === 'renew') {
          await leaseWrites.renew();
          continue;
        }
        if (winner.done) return;
        // Read and not yet acknowledged from here on, through a key store's or a broker's outage.
        status.pendingSince = winner.value[0]!.recordedAt.getTime();
        const stored = winner.value;
        // The key store down is an outage like the broker's: wait and try again, nothing skipped.
        let opened = await retryingWhileHeld(
          () => openBatch(stored),
          (error, attempt) => {
            if (attempt === 0) logger.warn({ err: error }, 'key store unavailable; relay retrying');
          },
        );
        const started = performance.now();
        const span = tracingOn() ? sendSpan(deps.topic, opened.messages) : undefined;
        let attempts = 0;
        await endingSpan(span, retryingWhileHeld(
          async () => {
            if (!held.isHeld(margin)) await leaseWrites.renew();
            // A send tried again (a broker's outage) opens the batch again first, through the vault's cache (keys at most
            // KEY_CACHE_MS old): a person forgotten meanwhile goes out forgotten, never in clear more than that after it.
            if (attempts++ > 0) opened = await openBatch(stored);
            await publisher.publish(opened.messages);
          },
          (error, attempt) => {
            if (attempt === 0) logger.warn({ err: error }, 'broker unavailable; relay retrying');
            span?.addEvent('retry', { 'error.type': error instanceof Error ? error.name : 'unknown' });
          },
        ));
        const { events, messages } = opened;
        status.published += messages.length;
        status.lastPublishedAt = events[events.length - 1]!.recordedAt.getTime();
        delete status.pendingSince;
        deps.onPublished?.(messages.length, (performance.now() - started) / 1000);
        // Only now, with the broker's acknowledgement, may the resume point move past the batch.
        leaseWrites.acknowledged(events[events.length - 1]!.position);
        next = batches.next();
      }
    } finally {
      delete status.pendingSince;
      abort.signal.removeEventListener('abort', closeOnAbort);
      await subscription.close();
      // What the broker acknowledged is not published again after a graceful stop.
      await leaseWrites.settled().catch((error: unknown) => logger.warn({ err: error }, 'could not write the last resume point'));
    }
  }

  async function run(): Promise<void> {
    let storeOutages = 0;
    let capped = false;
    while (!abort.signal.aborted) {
      let acquired: Awaited<ReturnType<typeof lease.tryAcquire>>;
      try {
        acquired = await retrying(() => lease.tryAcquire(), { signal: abort.signal });
      } catch (error) {
        if (abort.signal.aborted) break;
        if (!(error instanceof LeaseLostError)) throw error;
        continue;
      }
      if ('waitMs' in acquired) {
        if (status.role !== 'standby') logger.info({ owner }, 'another relay holds the lease; standing by');
        status.role = 'standby';
        await sleep(Math.min(acquired.waitMs, renewEvery), undefined, { signal: abort.signal }).catch(() => {});
        continue;
      }
      // Once per process, by the holder: the lease stream kept to its last events where the store can.
      // Not a reason to stop publishing: the lease reads the last event only, whatever the stream's length.
      if (!capped) {
        capped = await lease.cap().then(
          () => true,
          (error: unknown) => {
            logger.warn({ err: error }, 'could not cap the relay stream; it keeps every lease event');
            // An outage is tried again at the next holding; a refusal (its metadata not ours to write) is not.
            return !isRetriable(error);
          },
        );
      }
      status.role = 'publishing';
      logger.info({ owner, from: acquired.position()?.toString() ?? 'start' }, 'relay publishing');
      const attempt = { at: Date.now(), published: status.published };
      try {
        await publishWhileHolding(acquired);
      } catch (error) {
        if (!abort.signal.aborted) {
          if (error instanceof LeaseLostError) {
            logger.warn({ owner }, 'relay lost its lease; standing by');
            status.role = 'standby';
            continue;
          }
          // The event store down (its subscription, a renewal, a resume point): an outage like the
          // broker's. Start again from the last resume point written once it answers; what the broker
          // acknowledged after that point is published again (consumers drop repeats), nothing is skipped.
          if (!isRetriable(error)) throw error;
          // A new outage (the last attempt published or ran a lease's length) is logged and backs off afresh.
          if (status.published > attempt.published || Date.now() - attempt.at > deps.leaseMs) storeOutages = 0;
          if (storeOutages === 0) logger.warn({ err: error }, 'event store unavailable; relay retrying from its last resume point');
          status.role = 'standby';
          await sleep(backoffDelay(storeOutages++, 100, renewEvery), undefined, { signal: abort.signal }).catch(() => {});
          continue;
        }
      }
      // Stopping: let another relay take over now rather than when the lease expires (a lost lease only conflicts).
      if (abort.signal.aborted) {
        await acquired.release().catch((error: unknown) => logger.warn({ err: error }, 'could not release the relay lease'));
      }
    }
    status.role = 'stopped';
  }

  let running: Promise<void> | undefined;
  return {
    status: (): Readonly<RelayStatus> => status,
    start(): Promise<void> {
      running ??= run();
      return running;
    },
    /** Finishes the batch in flight (published and checkpointed), then stops. */
    async stop(): Promise<void> {
      abort.abort();
      await running?.catch(() => {});
    },
  };
}
