import client, { type Registry } from 'prom-client';
import type { Knex } from 'knex';
import type { FeedBatch } from '../shared/event-feed/port.js';
import { globalLogSource } from '../shared/event-feed/event-store-feed.js';
import type { Readiness } from '../shared/metrics.js';
import { withTimeout } from '../shared/retry.js';
import { notStartedStatus, type ProjectorStatus } from './projector.js';

/** Batch durations in seconds: from a 1-event batch (a few ms) to a retried one. */
const batchBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** What is known of one source (a Kafka partition, the log) for the lag in seconds. */
interface SourceMoments {
  /** The start of the last look at the source that found nothing of it behind: the read model then held all of it. */
  caughtUpAt?: number;
  /** When the last event applied from it entered it: the read model then held all of it up to that moment. */
  lastEventAt?: number;
  /** Since when this process holds it: its start, or the look before the first that listed it (a partition a rebalance handed over). */
  heldSince: number;
}

/**
 * The last moment the read model is known to have held all of the source: the later of the two
 * moments that say so; when neither is known, since it was held (nothing older can be told of it
 * here: a projector started behind, a partition just handed over, count from there).
 */
function wholeAt(moments: SourceMoments): number {
  if (moments.caughtUpAt === undefined && moments.lastEventAt === undefined) return moments.heldSince;
  return Math.max(moments.caughtUpAt ?? -Infinity, moments.lastEventAt ?? -Infinity);
}

/** Behind: events left in it, or a count not known (NaN: a Kafka partition whose offset in the read DB is still being read). */
const isBehind = (events: number) => events !== 0;

/**
 * The projector's metrics. Counted per batch (the `onBatch` hook: no cost per
 * event); the lag and the quarantine are read from the projector's status when
 * Prometheus scrapes.
 *
 * Lag, the projector's hop: `users_projector_lag_events` per source, the events
 * not yet applied: on Kafka, for each partition this member holds, its high-water
 * mark minus the offset the read DB holds, read from the broker when Prometheus
 * scrapes (`sourceLag`; a partition handed to another member leaves this one's
 * series, and a projector that applies nothing, its read DB down or its fetches
 * stopped, still shows the messages piling up); should the broker not answer, the
 * figures the last batches were fetched with. On the embedded path, the log head
 * minus the checkpoint (positions there count events; on EventStoreDB they are byte offsets,
 * which say whether the projector is behind but not by how many events: no series; nor for a Kafka
 * partition whose offset in the read DB is still being read, which counts as behind).
 *
 * `users_projector_lag_seconds`, how far behind in time the read model is: 0 when nothing is
 * left behind, else the longest, over the sources behind, since the read model last held all of
 * one. That moment is per source (each Kafka partition, or the log), the later of two that prove
 * it: the last look at the source that found nothing of it behind, and the entry of the last event
 * applied from it. The age of the last applied event alone would err both ways: on a quiet system
 * a write two hours after the one before would read as two hours behind until its batch, though a
 * look a second before had found the read model whole; and in a batch merged from several
 * partitions a live one would hide another ten minutes behind.
 *
 * A source that cannot be read (the broker or EventStoreDB down or not answering
 * within `sourceReadTimeoutMs`, or a Kafka consumer not yet joined to its group) tells
 * nothing of what is behind, so the read model is fresh only as of the last moment it
 * was known whole: the same moment, the earliest over the sources held at the last look
 * (that look's start when it found none held, the metrics' creation before any). Through
 * such an outage `users_projector_lag_seconds` grows from that moment,
 * `users_projector_source_up` is 0, and readiness fails once the lag passes its bound:
 * the figures of the last batches alone would read "caught up" while writes accepted
 * upstream wait to reach the read model.
 */
export function projectorMetrics(
  registry: Registry,
  options: {
    headPosition?: () => Promise<bigint | undefined>;
    /** Whether the log's positions count events (the embedded store); EventStoreDB's are byte offsets, which tell behind or not, not how many. */
    positionsCountEvents?: boolean;
    /** Per source held, the events not yet applied; NaN for one held whose count is not known yet. */
    sourceLag?: () => Promise<ReadonlyMap<string, number>>;
    /** How long a scrape or a probe waits for the source's position before taking it as down (2000). */
    sourceReadTimeoutMs?: number;
    /** The clock (tests). */
    now?: () => number;
  } = {},
) {
  const now = options.now ?? Date.now;
  const sourceReadTimeoutMs = options.sourceReadTimeoutMs ?? 2000;
  const readsSource = options.sourceLag !== undefined || options.headPosition !== undefined;
  let status: () => Readonly<ProjectorStatus> = notStartedStatus;
  const behind = new Map<string, number>();
  /** Whether the source answered its last look. */
  let sourceUp = true;
  const createdAt = now();
  /** The start of the last look that read the source: a source a later look lists first was taken on after it. */
  let lastLookAt = createdAt;
  /** Per source held, when the read model last held all of it; a source the last look did not list is not held. */
  const sources = new Map<string, SourceMoments>();
  const held = (source: string): SourceMoments => {
    let moments = sources.get(source);
    if (!moments) sources.set(source, (moments = { heldSince: lastLookAt }));
    return moments;
  };

  const applied = new client.Counter({
    name: 'users_projector_events_applied_total',
    help: 'Events the projector has applied to the read model (user events and the others it skips), since it started',
    registers: [registry],
  });
  const batches = new client.Counter({
    name: 'users_projector_batches_applied_total',
    help: 'Batches the projector has committed (rows and checkpoint in one transaction), since it started',
    registers: [registry],
  });
  const duration = new client.Histogram({
    name: 'users_projector_batch_duration_seconds',
    help: 'Time to apply one batch, retries included, in seconds',
    buckets: batchBuckets,
    registers: [registry],
  });

  /** The source's read, or undefined if it failed or did not answer in time. */
  const withinTimeout = <T>(read: () => Promise<T>): Promise<T | undefined> =>
    withTimeout(read(), sourceReadTimeoutMs, () => new Error('the source did not answer')).catch(() => undefined);

  /** One look at the source for all the gauges of a scrape (prom-client collects them at once) and a probe beside it. */
  let looking: Promise<Map<string, number>> | undefined;
  function lagEvents(): Promise<Map<string, number>> {
    looking ??= lookAtSource().finally(() => {
      looking = undefined;
    });
    return looking;
  }

  async function lookAtSource(): Promise<Map<string, number>> {
    const startedAt = now();
    let lag: Map<string, number> | undefined;
    if (options.sourceLag) {
      const read = await withinTimeout(options.sourceLag);
      if (read) lag = new Map(read);
    } else if (options.headPosition) {
      const head = await withinTimeout(options.headPosition);
      if (head !== undefined) {
        const checkpoint = status().checkpoints[globalLogSource];
        lag = new Map(behind);
        lag.set(globalLogSource, Math.max(0, Number(head - BigInt(checkpoint ?? 0))));
      }
    }
    if (!readsSource) return new Map(behind);
    sourceUp = lag !== undefined;
    if (!lag) return new Map(behind);
    // A source this look does not list went to another member: what was known of it is no longer this one's to report.
    for (const source of sources.keys()) if (!lag.has(source)) sources.delete(source);
    for (const [source, events] of lag) {
      const moments = held(source);
      if (events === 0) moments.caughtUpAt = Math.max(moments.caughtUpAt ?? startedAt, startedAt);
    }
    lastLookAt = Math.max(lastLookAt, startedAt);
    return lag;
  }

  new client.Gauge({
    name: 'users_projector_lag_events',
    help: 'Events in the source not yet applied: per Kafka partition this member holds, its high-water mark minus the offset the read DB holds; on the embedded path, the log head minus the checkpoint',
    labelNames: ['source'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const [source, events] of await lagEvents()) {
        if (Number.isNaN(events)) continue;
        if (source !== globalLogSource || options.positionsCountEvents !== false) this.set({ source }, events);
      }
    },
  });
  new client.Gauge({
    name: 'users_projector_lag_seconds',
    help: 'How far behind in time the read model is: 0 when no event is left behind, else the longest, over the sources behind, since the read model last held all of one',
    registers: [registry],
    async collect() {
      this.set(await lagSeconds());
    },
  });
  new client.Gauge({
    name: 'users_projector_parked_events',
    help: 'Events in quarantine (PROJECTION_DEAD_LETTER): failed, and held back behind a failed one of their stream',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      const { failed, held } = status().parked;
      this.set({ state: 'failed' }, failed);
      this.set({ state: 'held' }, held);
    },
  });
  new client.Gauge({
    name: 'users_projector_read_db_up',
    help: '1 while the read database answers the projector, 0 during an outage',
    registers: [registry],
    collect() {
      this.set(status().readDbReachable ? 1 : 0);
    },
  });
  new client.Gauge({
    name: 'users_projector_paused_by_rebuild',
    help: '1 while a rebuild holds the projector paused to swap the table in',
    registers: [registry],
    collect() {
      this.set(status().pausedByRebuild ? 1 : 0);
    },
  });

  new client.Gauge({
    name: 'users_projector_source_up',
    help: "1 while the projector's source (the Kafka broker, or the event store) answered its last read of the position, 0 while it does not",
    registers: [registry],
    async collect() {
      if (!readsSource) return;
      await lagEvents();
      this.set(sourceUp ? 1 : 0);
    },
  });

  async function lagSeconds(): Promise<number> {
    const lag = await lagEvents();
    const at = now();
    /** The earliest moment known whole over the sources that count. */
    let whole = at;
    if (sourceUp) {
      for (const [source, events] of lag) if (isBehind(events)) whole = Math.min(whole, wholeAt(held(source)));
    } else if (sources.size > 0) {
      // Which of them is behind is not known: every source held counts.
      for (const moments of sources.values()) whole = Math.min(whole, wholeAt(moments));
    } else {
      whole = lastLookAt;
    }
    return Math.max(0, (at - whole) / 1000);
  }

  return {
    /** The projector whose status the gauges read. */
    watch(projector: { status(): Readonly<ProjectorStatus> }) {
      status = () => projector.status();
    },
    onBatch(batch: FeedBatch, seconds: number) {
      applied.inc(batch.events.length);
      batches.inc();
      duration.observe(seconds);
      for (const [source, events] of batch.behind ?? []) behind.set(source, events);
      for (const [source, enteredAt] of batch.lastEventAt ?? []) held(source).lastEventAt = enteredAt;
    },
    /**
     * Ready: running, the read DB answers, and not further behind than
     * `maxLagMs` (a projector hopelessly behind serves stale reads: take it out
     * of rotation rather than restart it).
     */
    async readiness(db: Knex, maxLagMs: number): Promise<Readiness> {
      const current = status();
      let readDb = 'up';
      try {
        await db.raw('SELECT 1');
      } catch {
        readDb = 'down';
      }
      const lag = await lagSeconds();
      const ready = current.running && readDb === 'up' && lag * 1000 <= maxLagMs;
      const source = readsSource ? { source: sourceUp ? 'up' : 'down' } : {};
      return { ready, detail: { running: current.running, readDb, ...source, lagSeconds: lag, parked: current.parked, pausedByRebuild: current.pausedByRebuild } };
    },
  };
}
