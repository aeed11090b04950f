import type { MessagePort, Worker } from 'node:worker_threads';
import { StoreUnavailableError } from './errors.js';

/**
 * Calls to a worker thread as promises: each request carries an id, the thread
 * answers it with a result or an error, and the caller's promise settles. For
 * threads that keep slow work off a role's event loop behind a plain call (the
 * embedded key store's writes); the event store's writer thread has a protocol
 * of its own (batches of appends, `sqlite-group-commit.ts`).
 *
 * The thread never keeps the process alive by itself; a pending call does. If the
 * thread fails or exits, every pending call fails with `failure`'s error (what it
 * did with them is unknown), and the next call starts a new thread, as the event
 * store's writer does: one uncaught error must not leave the store refusing until
 * the process restarts.
 */

/** An error as it crosses between threads: an outage stays an outage (StoreUnavailableError) on the other side. */
interface ThreadError {
  message: string;
  name: string;
  code?: string;
}

interface ThreadReply<R> {
  id: number;
  result?: R;
  error?: ThreadError;
}

const toThreadError = (error: unknown): ThreadError => {
  const { message, name, code } = (error ?? {}) as { message?: unknown; name?: unknown; code?: unknown };
  return { message: String(message), name: String(name), ...(typeof code === 'string' ? { code } : {}) };
};

const fromThreadError = ({ message, name, code }: ThreadError): Error =>
  name === 'StoreUnavailableError' ? new StoreUnavailableError(message) : Object.assign(new Error(message), code ? { code } : {});

export interface ThreadCalls<Req, Res> {
  call(request: Req): Promise<Res>;
  /** Stops the thread; pending calls fail, and so does every later one. */
  terminate(): Promise<void>;
}

/**
 * The calling side over the threads `start` makes (one at a time: the first at once, another after
 * one breaks); `failure` names what a broken thread means to callers (e.g. an outage of the store it serves).
 */
export function threadCalls<Req extends object, Res>(start: () => Worker, failure: (reason: string, cause?: Error) => Error): ThreadCalls<Req, Res> {
  let nextId = 0;
  let stopped = false;

  function open() {
    const worker = start();
    const pending = new Map<number, { resolve: (value: Res) => void; reject: (error: Error) => void }>();
    const thread = { worker, pending };
    const broke = (error: Error) => {
      if (current === thread) current = undefined;
      for (const waiter of pending.values()) waiter.reject(error);
      pending.clear();
    };
    worker.unref();
    worker.on('message', (reply: ThreadReply<Res>) => {
      const waiter = pending.get(reply.id);
      if (!waiter) return;
      pending.delete(reply.id);
      if (pending.size === 0) worker.unref();
      if (reply.error) waiter.reject(fromThreadError(reply.error));
      else waiter.resolve(reply.result as Res);
    });
    worker.on('error', (error) => broke(failure(`its thread failed: ${error.message}`, error)));
    worker.on('exit', () => broke(failure('its thread exited')));
    return thread;
  }

  let current: ReturnType<typeof open> | undefined = open();
  return {
    call(request) {
      if (stopped) return Promise.reject(failure('its thread was stopped'));
      let thread: NonNullable<typeof current>;
      try {
        thread = current ??= open();
      } catch (error) {
        return Promise.reject(failure(`its thread could not start: ${error instanceof Error ? error.message : String(error)}`, error instanceof Error ? error : undefined));
      }
      const { worker, pending } = thread;
      const id = nextId++;
      worker.ref();
      return new Promise<Res>((resolve, reject) => {
        pending.set(id, { resolve, reject });
        worker.postMessage({ ...request, id });
      });
    },
    async terminate() {
      stopped = true;
      const thread = current;
      current = undefined;
      await thread?.worker.terminate();
    },
  };
}

/** The thread's side: answers every request on `port` with what `handle` returns or throws. */
export function answerCalls<Req, Res>(port: MessagePort, handle: (request: Req) => Promise<Res>): void {
  port.on('message', (request: Req & { id: number }) => {
    handle(request).then(
      (result) => port.postMessage({ id: request.id, result } satisfies ThreadReply<Res>),
      (error: unknown) => port.postMessage({ id: request.id, error: toThreadError(error) } satisfies ThreadReply<Res>),
    );
  });
}
