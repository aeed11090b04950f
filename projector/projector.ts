import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { EventFeed } from '../shared/event-feed/port.js';
import { retrying } from '../shared/retry.js';
import { applyBatch, readCheckpoints } from './apply-batch.js';

export interface ProjectorStatus {
  running: boolean;
  eventsApplied: number;
  batchesApplied: number;
  checkpoints: Record<string, string>;
  readDbReachable: boolean;
}

/**
 * Feeds batches into the read model, one transaction each, from the checkpoints
 * stored beside the rows. A read DB outage pauses it (retried with backoff, logged
 * once when it starts and once when it ends); any other error stops it loudly.
 */
export function userProjector(deps: { db: Knex; feed: EventFeed; logger: Logger }) {
  const { db, feed, logger } = deps;
  const abort = new AbortController();
  const status: ProjectorStatus = {
    running: false,
    eventsApplied: 0,
    batchesApplied: 0,
    checkpoints: {},
    readDbReachable: true,
  };

  async function run(): Promise<void> {
    status.running = true;
    try {
      const from = await retrying(() => readCheckpoints(db), { signal: abort.signal });
      status.checkpoints = Object.fromEntries(from);
      logger.info({ checkpoints: status.checkpoints }, 'projector starting');
      for await (const batch of feed.batches(from)) {
        await retrying(() => applyBatch(db, batch.events, batch.checkpoints), {
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
