import { setTimeout as sleep } from 'node:timers/promises';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { EventFeed } from '../shared/event-feed/port.js';
import { retrying } from '../shared/retry.js';
import { applyBatch, readCheckpoints, type Checkpoints, type ProjectedEvent } from './apply-batch.js';
import { ProjectionPausedError } from './projection-control.js';

export interface ProjectorStatus {
  running: boolean;
  eventsApplied: number;
  batchesApplied: number;
  checkpoints: Record<string, string>;
  readDbReachable: boolean;
  /** A rebuild is swapping the table in; the batch in hand waits and is applied afterwards. */
  pausedByRebuild: boolean;
}

/**
 * Feeds batches into the read model, one transaction each, from the checkpoints
 * stored beside the rows. A read DB outage pauses it (retried with backoff, logged
 * once when it starts and once when it ends); so does a rebuild's pause, polled
 * more often because it lasts seconds; any other error stops it loudly.
 */
export function userProjector(deps: { db: Knex; feed: EventFeed; logger: Logger; pausePollMs?: number }) {
  const { db, feed, logger } = deps;
  const pausePollMs = deps.pausePollMs ?? 200;
  const abort = new AbortController();
  const status: ProjectorStatus = {
    running: false,
    eventsApplied: 0,
    batchesApplied: 0,
    checkpoints: {},
    readDbReachable: true,
    pausedByRebuild: false,
  };

  /** Applies the batch, waiting out a rebuild's pause; outages are left to the retry loop around it. */
  async function applyWhenNotPaused(events: ProjectedEvent[], checkpoints: Checkpoints): Promise<void> {
    for (;;) {
      try {
        await applyBatch(db, events, checkpoints);
        if (status.pausedByRebuild) logger.info('rebuild handed over; projector resumed');
        status.pausedByRebuild = false;
        return;
      } catch (error) {
        if (!(error instanceof ProjectionPausedError)) throw error;
        if (!status.pausedByRebuild) logger.info({ rebuild: error.pausedBy }, 'projector paused while a rebuild swaps the table in');
        status.pausedByRebuild = true;
        await sleep(pausePollMs, undefined, { signal: abort.signal });
      }
    }
  }

  async function run(): Promise<void> {
    status.running = true;
    try {
      const from = await retrying(() => readCheckpoints(db), { signal: abort.signal });
      status.checkpoints = Object.fromEntries(from);
      logger.info({ checkpoints: status.checkpoints }, 'projector starting');
      for await (const batch of feed.batches(from)) {
        await retrying(() => applyWhenNotPaused(batch.events, batch.checkpoints), {
          signal: abort.signal,
          onRetry(error, attempt) {
            if (attempt === 0) logger.warn({ err: error }, 'read database unavailable; projector paused');
            status.readDbReachable = false;
          },
        });
        if (!status.readDbReachable) logger.info('read database back; projector resumed');
        status.readDbReachable = true;
        status.eventsApplied += batch.events.length;
        status.batchesApplied += 1;
        Object.assign(status.checkpoints, Object.fromEntries(batch.checkpoints));
        if (abort.signal.aborted) break;
      }
    } finally {
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
