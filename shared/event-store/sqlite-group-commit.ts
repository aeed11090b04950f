import { randomUUID } from 'node:crypto';
import type { Worker } from 'node:worker_threads';
import { ConcurrencyError, StoreUnavailableError } from '../errors.js';
import type { AppendResult, ExpectedRevision, StreamAppend, WriterStats } from './port.js';
import { startWorkerModule } from '../worker-module.js';

/** One stream's share of an append as the writer takes it: events already serialised, ids given. */
export interface QueuedPart {
  streamId: string;
  expected: ExpectedRevision;
  events: [eventId: string, type: string, data: string, metadata: string][];
}

/** An append as the writer takes it: one stream, or several that commit all or nothing. */
export interface QueuedAppend {
  seq: number;
  parts: QueuedPart[];
}

/** Main thread -> writer: the appends made since the last message. */
export interface AppendBatch {
  appends: QueuedAppend[];
}

export type AppendOutcome =
  | { kind: 'appended'; results: [revision: number, position: bigint][] }
  | { kind: 'conflict'; streamId: string; expected: string; actual: number }
  | { kind: 'failed'; message: string; code?: string };

/** What became of a group: each append's outcome, or the failure of the whole transaction. */
export type GroupOutcome = { outcomes: [seq: number, outcome: AppendOutcome][] } | { seqs: number[]; failed: { message: string; code?: string } };

/**
 * Writer -> main thread: one message per committed (or failed) group, with the wall
 * time its transaction took in the writer (seconds, BEGIN to COMMIT's return).
 */
export type GroupResult = GroupOutcome & { seconds: number };

export interface WriterOptions {
  file: string;
  busyTimeoutMs: number;
  /** Tests only: a group holding an append to one of these streams fails as a whole at its commit. */
  failCommitsFor?: readonly string[];
}

/** The writer's checkpoint threshold, in WAL pages (`sqlite-appends.worker.ts` says why it is 250). */
export const writerCheckpointPages = 250;

interface Waiter {
  resolve(results: AppendResult[]): void;
  reject(error: unknown): void;
}

/**
 * Group commit for the embedded store. Appends go to a writer thread
 * (`sqlite-appends.worker.ts`), which commits whatever has arrived in one
 * transaction: while it commits one group, the appends that arrive wait in its
 * queue and go together into the next, so a burst of requests shares one
 * transaction and one fsync, and the writer never waits for this thread to hand
 * it the next group. Each append keeps its own expected-revision check and its
 * own outcome; an append to several streams checks each and commits all or
 * none of them. A promise resolves only after its group's COMMIT returned, i.e.
 * once the events are on disk. Appends made in one turn of the event loop travel
 * in one message; an idle writer commits them at once, without waiting to fill a
 * group.
 */
export function groupCommitter(options: WriterOptions & { translate(error: Error): Error }) {
  let worker: Worker | undefined;
  let unsent: QueuedAppend[] = [];
  let sending: NodeJS.Immediate | undefined;
  const waiting = new Map<number, Waiter>();
  let nextSeq = 1;
  let closing: Promise<void> | undefined;
  let idle: (() => void) | undefined;
  const counted: WriterStats = { groups: 0, appends: 0, seconds: 0 };
  const commitListeners: ((seconds: number) => void)[] = [];

  function start(): Worker {
    const started = spawnWriter({ file: options.file, busyTimeoutMs: options.busyTimeoutMs, ...(options.failCommitsFor ? { failCommitsFor: options.failCommitsFor } : {}) });
    started.on('message', settle);
    // The thread gone (an uncaught error, out of memory) is an outage, not a fault of the appends: the next
    // append starts a new writer, so the waiting ones fail as retriable (503 with Retry-After; the relay retries).
    // Whether their group committed before the thread went is unknown, as with an EventStoreDB append that timed out.
    started.on('error', (error) => failAll(new StoreUnavailableError(`the event store's writer thread failed: ${error.message}`, { cause: error })));
    started.on('exit', (code) => {
      worker = undefined;
      if (!closing || waiting.size > 0) failAll(new StoreUnavailableError(`the event store's writer thread exited (code ${code})`));
    });
    return started;
  }

  function failAll(error: StoreUnavailableError) {
    const waiters = [...waiting.values()];
    waiting.clear();
    unsent = [];
    for (const waiter of waiters) waiter.reject(error);
    idle?.();
  }

  function send() {
    sending = undefined;
    if (unsent.length === 0) return;
    worker ??= start();
    worker.postMessage({ appends: unsent } satisfies AppendBatch);
    unsent = [];
  }

  function settle(result: GroupResult) {
    counted.groups += 1;
    counted.seconds += result.seconds;
    if ('failed' in result) {
      const error = options.translate(sqliteError(result.failed));
      counted.appends += result.seqs.length;
      for (const seq of result.seqs) take(seq)?.reject(error);
    } else {
      counted.appends += result.outcomes.length;
      for (const [seq, outcome] of result.outcomes) {
        const waiter = take(seq);
        if (!waiter) continue;
        if (outcome.kind === 'appended') {
          waiter.resolve(outcome.results.map(([revision, position]) => ({ nextExpectedRevision: revision, position })));
        } else if (outcome.kind === 'conflict') {
          waiter.reject(new ConcurrencyError(outcome.streamId, outcome.expected, outcome.actual));
        }
        else waiter.reject(options.translate(sqliteError(outcome)));
      }
    }
    if (waiting.size === 0) idle?.();
    for (const listener of commitListeners) {
      try {
        listener(result.seconds);
      } catch {
        // Observing a commit (a metric) must never cost an append its outcome: every waiter was settled above.
      }
    }
  }

  function take(seq: number): Waiter | undefined {
    const waiter = waiting.get(seq);
    waiting.delete(seq);
    return waiter;
  }

  return {
    /** Appends to one stream or, all or nothing, to several; one result per stream. */
    append(appends: readonly StreamAppend[]): Promise<AppendResult[]> {
      if (closing) return Promise.reject(new Error('the event store is closed'));
      let append: QueuedAppend;
      try {
        append = {
          seq: nextSeq++,
          parts: appends.map(({ streamId, events, expectedRevision }) => ({
            streamId,
            expected: expectedRevision,
            events: events.map((e) => [e.id ?? randomUUID(), e.type, JSON.stringify(e.data), JSON.stringify(e.metadata ?? {})]),
          })),
        };
      } catch (error) {
        return Promise.reject(error instanceof Error ? error : new Error(String(error)));
      }
      return new Promise<AppendResult[]>((resolve, reject) => {
        waiting.set(append.seq, { resolve, reject });
        unsent.push(append);
        sending ??= setImmediate(send);
      });
    },

    /**
     * Groups the writer committed (or failed), the appends they held (their ratio is the grouping) and the
     * time its transactions took, since the start: that time's share of the wall clock is how busy the writer is.
     */
    stats: (): WriterStats => ({ ...counted }),

    /** `listener` hears each group's transaction time in seconds, as `stats` counts it, until the returned function is called. */
    observeCommits(listener: (seconds: number) => void): () => void {
      const own = (seconds: number) => listener(seconds);
      commitListeners.push(own);
      return () => {
        const at = commitListeners.indexOf(own);
        if (at >= 0) commitListeners.splice(at, 1);
      };
    },

    /** Lets every append already made commit, then stops the writer. */
    close(): Promise<void> {
      closing ??= (async () => {
        if (waiting.size > 0) await new Promise<void>((resolve) => (idle = resolve));
        await worker?.terminate();
      })();
      return closing;
    },
  };
}

function sqliteError(failure: { message: string; code?: string }): Error {
  return Object.assign(new Error(failure.message), failure.code ? { code: failure.code } : {});
}

/** The writer's thread: `sqlite-appends.worker.ts`, a module of its own. */
function spawnWriter(data: WriterOptions): Worker {
  return startWorkerModule('sqlite-appends', import.meta.url, data);
}
