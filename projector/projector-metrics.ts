import client, { type Registry } from 'prom-client';
import type { Knex } from 'knex';
import type { FeedBatch } from '../shared/event-feed/port.js';
import { globalLogSource } from '../shared/event-feed/event-store-feed.js';
import type { Readiness } from '../shared/metrics.js';
import { withTimeout } from '../shared/retry.js';
import { notStartedStatus, type ProjectorStatus } from './projector.js';

/** Batch durations in seconds: from a 1-event batch (a few ms) to a retried one. */
const batchBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

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
 * which say whether the projector is behind but not by how many events: no series). `users_projector_lag_seconds`:
 * 0 when nothing is left behind, else how long ago the last applied event entered
 * the source, i.e. how far behind in time the read model is.
 *
 * A source that cannot be read (the broker or EventStoreDB down or not answering
 * within `sourceReadTimeoutMs`, or a Kafka consumer not yet joined to its group) tells
 * nothing of what is behind, so the read model is fresh only as of the last moment it
 * was known to be: the last read of the source that found nothing behind, or the entry
 * of the last event applied, whichever is later (the metrics' creation only when
 * neither is known). Through such an outage `users_projector_lag_seconds` grows from
 * that moment, `users_projector_source_up` is 0, and readiness fails once the lag
 * passes its bound: the figures of the last batches alone would read "caught up"
 * while writes accepted upstream wait to reach the read model.
 */
export function projectorMetrics(
  registry: Registry,
  options: {
    headPosition?: () => Promise<bigint | undefined>;
    /** Whether the log's positions count events (the embedded store); EventStoreDB's are byte offsets, which tell behind or not, not how many. */
    positionsCountEvents?: boolean;
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
  let lastEventAt: number | undefined;
  /** The source's last answer: whether it was read, and when the read model was last known to hold all of it. */
  let sourceUp = true;
  let caughtUpAt: number | undefined;
  const createdAt = now();

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

  const anyBehind = (lag: ReadonlyMap<string, number>) => [...lag.values()].some((events) => events > 0);

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
    if (!anyBehind(lag)) caughtUpAt = Math.max(caughtUpAt ?? startedAt, startedAt);
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
        if (source !== globalLogSource || options.positionsCountEvents !== false) this.set({ source }, events);
      }
    },
  });
  new client.Gauge({
    name: 'users_projector_lag_seconds',
    help: 'How far behind in time the read model is: 0 when no event is left behind, else the age of the last applied event',
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

  /** The last moment the read model is known to have held all of its source: the later of the two that are known, else the start. */
  function knownWholeAt(): number {
    if (caughtUpAt === undefined && lastEventAt === undefined) return createdAt;
    return Math.max(caughtUpAt ?? -Infinity, lastEventAt ?? -Infinity);
  }

  async function lagSeconds(): Promise<number> {
    const lag = await lagEvents();
    const at = now();
    if (!sourceUp) return Math.max(0, (at - knownWholeAt()) / 1000);
    // Behind before any batch of this process: since the read model was last known whole, or since the start.
    return anyBehind(lag) ? Math.max(0, (at - (lastEventAt ?? knownWholeAt())) / 1000) : 0;
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
      if (batch.lastEventAt !== undefined) lastEventAt = batch.lastEventAt;
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
