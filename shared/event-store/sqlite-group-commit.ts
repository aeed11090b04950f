import { randomUUID } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { ConcurrencyError } from '../errors.js';
import type { AppendResult, EventToAppend, ExpectedRevision } from './port.js';

/** An append as the writer takes it: events already serialised, ids given. */
export interface QueuedAppend {
  streamId: string;
  expected: ExpectedRevision;
  events: [eventId: string, type: string, data: string, metadata: string][];
}

export interface AppendGroup {
  id: number;
  appends: QueuedAppend[];
}

export type AppendOutcome =
  | { kind: 'appended'; revision: number; position: bigint }
  | { kind: 'conflict'; expected: string; actual: number }
  | { kind: 'failed'; message: string; code?: string };

export type GroupResult =
  | { id: number; outcomes: AppendOutcome[] }
  | { id: number; failed: { message: string; code?: string } };

export interface WriterOptions {
  file: string;
  busyTimeoutMs: number;
  /** Tests only: a group holding an append to one of these streams fails as a whole at its commit. */
  failCommitsFor?: readonly string[];
}

interface Waiter {
  append: QueuedAppend;
  resolve(result: AppendResult): void;
  reject(error: unknown): void;
}

/** The most appends one transaction takes; more wait for the next. */
const maxGroup = 1000;

/**
 * Group commit for the embedded store. Appends go to a writer thread
 * (`sqlite-appends.worker.ts`); while it commits one group, the appends that
 * arrive queue up and go together as the next, so a burst of requests shares one
 * transaction and one fsync. Each append keeps its own expected-revision check
 * and its own outcome. A promise resolves only after its group's COMMIT returned,
 * i.e. once the events are on disk. An idle writer takes an append at once: no
 * waiting to fill a group.
 */
export function groupCommitter(options: WriterOptions & { translate(error: Error): Error }) {
  let worker: Worker | undefined;
  let queue: Waiter[] = [];
  let inFlight: { id: number; waiters: Waiter[] } | undefined;
  let nextId = 1;
  let closing: Promise<void> | undefined;
  const counted = { groups: 0, appends: 0 };

  function start(): Worker {
    const started = spawnWriter({ file: options.file, busyTimeoutMs: options.busyTimeoutMs, ...(options.failCommitsFor ? { failCommitsFor: options.failCommitsFor } : {}) });
    started.on('message', settle);
    started.on('error', (error) => failAll(error));
    started.on('exit', (code) => {
      worker = undefined;
      if (!closing) failAll(new Error(`the event store's writer thread exited (code ${code})`));
    });
    return started;
  }

  function failAll(error: unknown) {
    const waiters = [...(inFlight?.waiters ?? []), ...queue];
    inFlight = undefined;
    queue = [];
    for (const waiter of waiters) waiter.reject(error instanceof Error ? options.translate(error) : error);
  }

  function flush() {
    if (inFlight || queue.length === 0) return;
    const waiters = queue.slice(0, maxGroup);
    queue = queue.slice(waiters.length);
    inFlight = { id: nextId++, waiters };
    counted.groups += 1;
    counted.appends += waiters.length;
    worker ??= start();
    worker.postMessage({ id: inFlight.id, appends: waiters.map((w) => w.append) } satisfies AppendGroup);
  }

  function settle(result: GroupResult) {
    const group = inFlight;
    if (!group || group.id !== result.id) return;
    inFlight = undefined;
    // The next group goes to the writer before this one's callers run on.
    flush();
    if ('failed' in result) {
      const error = options.translate(sqliteError(result.failed));
      for (const waiter of group.waiters) waiter.reject(error);
      return;
    }
    result.outcomes.forEach((outcome, i) => {
      const waiter = group.waiters[i]!;
      if (outcome.kind === 'appended') waiter.resolve({ nextExpectedRevision: outcome.revision, position: outcome.position });
      else if (outcome.kind === 'conflict') waiter.reject(new ConcurrencyError(waiter.append.streamId, outcome.expected, outcome.actual));
      else waiter.reject(options.translate(sqliteError(outcome)));
    });
  }

  return {
    append(streamId: string, events: readonly EventToAppend[], expected: ExpectedRevision): Promise<AppendResult> {
      if (closing) return Promise.reject(new Error('the event store is closed'));
      let append: QueuedAppend;
      try {
        append = {
          streamId,
          expected,
          events: events.map((e) => [e.id ?? randomUUID(), e.type, JSON.stringify(e.data), JSON.stringify(e.metadata ?? {})]),
        };
      } catch (error) {
        return Promise.reject(error instanceof Error ? error : new Error(String(error)));
      }
      return new Promise<AppendResult>((resolve, reject) => {
        queue.push({ append, resolve, reject });
        flush();
      });
    },

    /** Groups sent to the writer and the appends they held, since the start: their ratio is the grouping. */
    stats: () => ({ ...counted }),

    /** Lets the group in flight and those queued commit, then stops the writer. */
    close(): Promise<void> {
      closing ??= (async () => {
        while (inFlight || queue.length > 0) await new Promise((resolve) => setTimeout(resolve, 1));
        await worker?.terminate();
      })();
      return closing;
    },
  };
}

function sqliteError(failure: { message: string; code?: string }): Error {
  return Object.assign(new Error(failure.message), failure.code ? { code: failure.code } : {});
}

/**
 * The writer runs as a module of its own. Under a TypeScript loader (tsx: tests
 * and `npm start`) a worker does not inherit the loader's hooks on Node 20, so a
 * two-line bootstrap registers it before importing the module.
 */
function spawnWriter(data: WriterOptions): Worker {
  const moduleUrl = new URL(`./sqlite-appends.worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);
  if (!moduleUrl.pathname.endsWith('.ts')) return new Worker(moduleUrl, { workerData: data });
  const tsx = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(moduleUrl.href)}); })`;
  return new Worker(bootstrap, { eval: true, workerData: data });
}
