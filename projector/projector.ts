import { setTimeout as sleep } from 'node:timers/promises';
import { SpanKind, type Span } from '@opentelemetry/api';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { EventFeed, FeedBatch } from '../shared/event-feed/port.js';
import { backoffDelay, isRetriable, retrying } from '../shared/retry.js';
import { applyBatch, prepareBatch, type Applied, type ApplyOptions } from './apply-batch.js';
import { beginPreparedOnMariaDb, type OpenMariaDbBatch } from './mariadb-batch.js';
import { readDbDialect } from '../shared/read-model/dialect.js';
import { projectionName, type UserRow } from '../shared/read-model/user-row.js';
import { readCheckpoints } from '../shared/read-model/checkpoints.js';
import { eraseFreedPages, readDbError, walTruncationPending } from '../shared/read-db.js';
import { parkedCounts } from '../shared/read-model/dead-letters.js';
import { ProjectionPausedError } from './projection-control.js';
import { endingSpan, startSpan, tracingOn } from '../shared/tracing.js';

export interface ProjectorStatus {
  running: boolean;
  eventsApplied: number;
  batchesApplied: number;
  checkpoints: Record<string, string>;
  readDbReachable: boolean;
  /** A rebuild is swapping the table in; the batch in hand waits and is applied afterwards. */
  pausedByRebuild: boolean;
  /** Events in quarantine (PROJECTION_DEAD_LETTER) as last counted: failed, and held back behind them. */
  parked: { failed: number; held: number };
}

/**
 * A consumer span for one batch, linked to the context each of its events was
 * written under (OpenTelemetry's messaging conventions for batch consumers).
 */
function processSpan(batch: FeedBatch): Span {
  // `topic:partition` (Kafka) or `$all` (the event store's log).
  const source = [...batch.checkpoints.keys()][0]?.replace(/:\d+$/, '') ?? 'events';
  return startSpan(`process ${source}`, {
    kind: SpanKind.CONSUMER,
    links: batch.events.map((e) => e.trace),
    attributes: {
      'messaging.operation.type': 'process',
      'messaging.operation.name': 'process',
      'messaging.destination.name': source,
      'messaging.batch.message_count': batch.events.length,
      'users.projection': projectionName,
    },
  });
}

/** A projector's status before it starts. */
export const notStartedStatus = (): ProjectorStatus => ({
  running: false,
  eventsApplied: 0,
  batchesApplied: 0,
  checkpoints: {},
  readDbReachable: true,
  pausedByRebuild: false,
  parked: { failed: 0, held: 0 },
});

/**
 * Feeds batches into the read model, one transaction each, from the checkpoints
 * stored beside the rows. A read DB outage pauses it (retried with backoff, logged
 * once when it starts and once when it ends); so does a rebuild's pause, polled
 * more often because it lasts seconds. Poison events are parked by the batch
 * itself; a batch that keeps failing otherwise is tried `maxAttempts` times,
 * then applied event by event so that only what fails is parked. What still
 * fails after that (e.g. the checkpoint write) stops it loudly. On MariaDB, with
 * a feed that is told when a batch is applied (Kafka), the next batch is read and
 * folded while one commits (`beginAhead`); commits and the feed's confirmations
 * keep the feed's order.
 */
export function userProjector(deps: {
  db: Knex;
  feed: EventFeed;
  logger: Logger;
  pausePollMs?: number;
  /** Tries of a failing batch before it is applied event by event (default 3). */
  maxAttempts?: number;
  /** Replaces the event -> row function (tests inject handler failures). */
  fold?: ApplyOptions['fold'];
  /** Told of every batch applied, with how long it took (retries included): for metrics. */
  onBatch?: (batch: FeedBatch, seconds: number) => void;
  /**
   * How often the projector looks after what changes between its batches (default 5 s): it
   * counts the quarantine again (`dead-letters retry` or `skip`, a forget and a rebuild's swap
   * change it), and truncates the embedded read DB's WAL when a reader kept it from doing so
   * after a forget (an idle projector has no next batch to try it after).
   */
  housekeepingMs?: number;
}) {
  const { db, feed, logger } = deps;
  const pausePollMs = deps.pausePollMs ?? 200;
  const maxAttempts = deps.maxAttempts ?? 3;
  const abort = new AbortController();
  const status = notStartedStatus();

  /** Applies the batch, waiting out a rebuild's pause; outages are left to the retry loop around it. */
  async function applyWhenNotPaused(batch: FeedBatch, options: ApplyOptions): Promise<Applied> {
    for (;;) {
      try {
        const applied = await applyBatch(db, batch.events, batch.checkpoints, { ...options, ...(deps.fold ? { fold: deps.fold } : {}) });
        if (status.pausedByRebuild) logger.info('rebuild handed over; projector resumed');
        status.pausedByRebuild = false;
        return applied;
      } catch (error) {
        if (!(error instanceof ProjectionPausedError)) throw error;
        if (!status.pausedByRebuild) logger.info({ rebuild: error.pausedBy }, 'projector paused while a rebuild swaps the table in');
        status.pausedByRebuild = true;
        await sleep(pausePollMs, undefined, { signal: abort.signal });
      }
    }
  }

  /**
   * A batch that fails for a reason other than an outage is tried again, with
   * backoff, up to `maxAttempts` times (the cause may pass); then it is applied
   * event by event, each event again tried up to `maxAttempts` times, and only
   * the events that keep failing are parked.
   */
  async function applyOrQuarantine(batch: FeedBatch): Promise<Applied> {
    let failures = 0;
    for (;;) {
      const isolate = failures >= maxAttempts;
      try {
        return await applyWhenNotPaused(batch, isolate ? { isolate, attempts: maxAttempts } : {});
      } catch (error) {
        if (isRetriable(error) || isolate) throw error;
        failures += 1;
        logger.warn(
          { err: error, attempt: failures, maxAttempts },
          failures < maxAttempts ? 'batch failed; trying it again' : 'batch keeps failing; applying it event by event to park what fails',
        );
        if (failures < maxAttempts) await sleep(backoffDelay(failures), undefined, { signal: abort.signal });
      }
    }
  }

  /** Refreshes the quarantine counts and logs when they change (not per batch). */
  async function countParked(): Promise<void> {
    const before = status.parked;
    try {
      status.parked = await parkedCounts(db, projectionName);
    } catch (error) {
      throw readDbError(error);
    }
    const { failed, held } = status.parked;
    if (failed === before.failed && held === before.held) return;
    if (failed > 0) logger.error({ parked: status.parked }, 'events in quarantine; see npm run dead-letters -- list');
    else logger.info({ parked: status.parked }, 'quarantine is empty');
  }

  /** A batch applied: counted, its feed told (its offsets may be committed there now), metrics. */
  async function counted(batch: FeedBatch, applied: Applied, started: number): Promise<void> {
    // Counted before the checkpoints are published: a status that shows the batch applied shows what it parked.
    if (applied.parked > 0) await countParked().catch((error: unknown) => logger.warn({ err: error }, 'could not count parked events'));
    status.eventsApplied += batch.events.length;
    status.batchesApplied += 1;
    Object.assign(status.checkpoints, Object.fromEntries(batch.checkpoints));
    batch.applied?.();
    deps.onBatch?.(batch, (performance.now() - started) / 1000);
  }

  /**
   * Whether the read DB answers, as the last batch, start-up read or housekeeping count found it; each
   * change logged once. An idle projector learns of an outage (and of its end) from the housekeeping.
   */
  function readDbIs(reachable: boolean, error?: unknown): void {
    if (reachable === status.readDbReachable) return;
    status.readDbReachable = reachable;
    if (reachable) logger.info('read database back; projector resumed');
    else logger.warn({ err: error }, 'read database unavailable; projector paused');
  }

  /** The usual way: one batch at a time, through every retry, pause and quarantine rule above. */
  async function applyAndCount(batch: FeedBatch, started: number, span: Span | undefined): Promise<void> {
    const applied = await endingSpan(span, retrying(() => applyOrQuarantine(batch), {
      signal: abort.signal,
      onRetry(error) {
        readDbIs(false, error);
        span?.addEvent('retry', { 'error.type': error instanceof Error ? error.name : 'unknown' });
      },
    }));
    readDbIs(true);
    await counted(batch, applied, started);
  }

  /**
   * The next batch begun (read and folded in its own transaction) while the one
   * before it commits, its rows where they overlap taken from that one; see
   * "The Kafka-fed projector's batches overlapped" in docs/design-decisions.md.
   * For MariaDB's two-round-trip batch and a feed that is told when a batch is
   * applied; anything else (no such connection, a batch that needs the full
   * path, a failed read, a rebuild's pause) leaves the batch to the usual way,
   * undefined, with nothing begun.
   */
  async function beginAhead(batch: FeedBatch, carried: ReadonlyMap<string, UserRow> | undefined): Promise<OpenMariaDbBatch | undefined> {
    if (batch.applied === undefined || readDbDialect(db).kind !== 'mariadb') return undefined;
    try {
      return await beginPreparedOnMariaDb(db, prepareBatch(batch.events, batch.checkpoints, deps.fold), carried);
    } catch {
      return undefined;
    }
  }

  /** A begun batch whose writes and COMMIT are with the read DB while the next one is begun. */
  interface Committing {
    open: OpenMariaDbBatch;
    /** Set the moment its COMMIT fails: nothing begins ahead of it after that. */
    failed: boolean;
    /** The batch begun ahead of it meanwhile, if any. */
    ahead?: Promise<OpenMariaDbBatch | undefined>;
    /** True once committed and counted; false when the COMMIT failed and the batch was applied again the usual way. */
    done: Promise<boolean>;
  }

  /** Sends a begun batch's writes and COMMIT; when they fail, applies it again the usual way. */
  function commitBegun(batch: FeedBatch, open: OpenMariaDbBatch, started: number, span: Span | undefined): Committing {
    const committing: Committing = { open, failed: false, done: Promise.resolve(true) };
    committing.done = open.commit().then(
      async () => {
        span?.end();
        await counted(batch, { rows: open.rows, parked: 0 }, started);
        return true;
      },
      async (error: unknown) => {
        committing.failed = true;
        logger.warn({ err: error }, 'batch failed to commit; applying it again');
        // A batch begun ahead holds locks (its rows, a share of the pause row) that this one's retry may
        // wait for, behind a rebuild waiting for the pause: it goes first, and is begun again later.
        await (await committing.ahead)?.rollback();
        await applyAndCount(batch, started, span);
        return false;
      },
    );
    return committing;
  }

  /**
   * One batch from the feed: begun while the one before it commits (MariaDB), committed after it. Returns
   * the batch now committing, if any.
   */
  async function project(batch: FeedBatch, committing: Committing | undefined): Promise<Committing | undefined> {
    const started = performance.now();
    const span = tracingOn() ? processSpan(batch) : undefined;
    let open: OpenMariaDbBatch | undefined;
    if (!committing?.failed) {
      const begun = beginAhead(batch, committing?.open.current);
      if (committing) committing.ahead = begun;
      open = await begun;
    }
    if (committing) {
      // In order: this batch commits only after the one before it has.
      const asBegun = await committing.done;
      // That one was applied again: this one's rows taken from it may not be what the table holds.
      if (!asBegun) {
        await open?.rollback();
        open = undefined;
      }
    }
    if (open) {
      const next = commitBegun(batch, open, started, span);
      // A failure it cannot get past is thrown where the loop awaits it: when the next batch comes, or,
      // the feed being ended here so that the loop does not wait for one, just after the loop.
      next.done.catch(() => void feed.close());
      return next;
    }
    await applyAndCount(batch, started, span);
    return undefined;
  }

  const whereTheDbIs = () => retrying(() => readCheckpoints(db), { signal: abort.signal });

  async function run(): Promise<void> {
    status.running = true;
    let committing: Committing | undefined;
    let housekeeping: NodeJS.Timeout | undefined;
    try {
      const onRetry = (error: unknown) => readDbIs(false, error);
      let from = await retrying(() => readCheckpoints(db), { signal: abort.signal, onRetry });
      await retrying(countParked, { signal: abort.signal, onRetry });
      readDbIs(true);
      // Whether the last projector left an erasure's page images in the WAL (its truncation blocked by a reader, then
      // a deploy or a crash) only it knew: this one truncates once, from its housekeeping, as soon as readers let it
      // (not from the batches: a start is no reason for them to wait on readers).
      let truncateAtStart = true;
      housekeeping = setInterval(() => {
        // The count doubles as the read DB's probe while no batch comes.
        void countParked().then(
          () => readDbIs(true),
          (error: unknown) => {
            if (isRetriable(error)) readDbIs(false, error);
          },
        );
        // Short patience: it waits on the event loop, and comes again in a few seconds.
        if (walTruncationPending(db)) void eraseFreedPages(db, { patienceMs: 100 });
        else if (truncateAtStart) {
          void eraseFreedPages(db, { patienceMs: 100, remember: false }).then((done) => {
            if (done) truncateAtStart = false;
          });
        }
      }, deps.housekeepingMs ?? 5000);
      housekeeping.unref();
      // Published after the parked counts: a status that shows where the projector stands shows its quarantine too.
      status.checkpoints = Object.fromEntries(from);
      logger.info({ checkpoints: status.checkpoints }, 'projector starting');
      for (let feedFailures = 0; ; ) {
        try {
          for await (const batch of feed.batches(from, whereTheDbIs)) {
            feedFailures = 0;
            committing = await project(batch, committing);
            if (abort.signal.aborted) break;
          }
          break;
        } catch (error) {
          // The feed failed on something that passes (the event store's log unreadable for a moment, the
          // broker gone): the batch committing finishes (or its failure is thrown), then the feed starts
          // again from the read DB's checkpoints, as a restart would. Anything else stops the projector.
          if (abort.signal.aborted || !isRetriable(error)) throw error;
          const unfinished = committing;
          committing = undefined;
          await unfinished?.done;
          logger.warn({ err: error, attempt: feedFailures }, "event feed failed; starting it again from the read DB's checkpoints");
          await sleep(backoffDelay(feedFailures++, 100, 5000), undefined, { signal: abort.signal });
          from = await whereTheDbIs();
        }
      }
      if (committing) await committing.done;
    } catch (error) {
      // Stopped while waiting (a rebuild's pause, an outage's backoff): the batch is not applied, and the
      // next start applies it from the checkpoint. A stop, not a failure.
      if (!abort.signal.aborted) throw error;
    } finally {
      clearInterval(housekeeping);
      // The feed failed with a batch committing: it finishes (or fails) before the loop reports.
      await committing?.done.catch(() => {});
      status.running = false;
    }
  }

  let running: Promise<void> | undefined;
  return {
    status: (): Readonly<ProjectorStatus> => status,
    /** Starts the loop; the promise settles when it stops (rejects on a fatal error). */
    start(): Promise<void> {
      running ??= run();
      return running;
    },
    /** Lets the batch in flight commit, then stops. */
    async stop(): Promise<void> {
      abort.abort();
      await feed.close();
      await running?.catch(() => {});
    },
  };
}
