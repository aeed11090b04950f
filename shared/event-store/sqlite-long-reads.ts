import type { Worker } from 'node:worker_threads';
import type { LoggedEvent } from './port.js';
import { startWorkerModule } from '../worker-module.js';
import { StoreUnavailableError } from '../errors.js';
import { cursorAfter, eventsOfPage, longReadMmapBytes as mmapBytes, pieceSizer, readPage, type PageStatements, type ReadPage, type StreamCursor } from './sqlite-log-pages.js';

/**
 * Long reads of the embedded store's log (a rebuild's replay of millions of
 * events) on a thread of its own; the pages themselves are `sqlite-log-pages.ts`'s.
 */

/** Pages a stream-ordered read may have ready before the caller asks for them. */
const pagesAhead = 2;

/** What the log reader is told: see `sqlite-log-reader.worker.ts`. */
export type LogReaderRequest =
  | { id: number; kind: 'all'; after: bigint; maxCount: number }
  | { id: number; kind: 'open'; cursor: StreamCursor; ahead: number }
  | { id: number; kind: 'more' }
  | { id: number; kind: 'close' };

export type LogReaderReply = Partial<ReadPage> & {
  id: number;
  rows?: unknown[][];
  error?: { message: string; code?: string };
};
type Reply = LogReaderReply;

/** The id of the reply the reader sends once, when its connection and statements are ready. */
export const readyReplyId = -1;

export interface LogReaderData {
  file: string;
  mmapBytes: number;
  /** The store's own read in order of position. */
  allSql: string;
}

/** The reader's thread: the compiled module from dist/, or the TypeScript source through tsx. */
function spawnReader(data: LogReaderData): Worker {
  return startWorkerModule('sqlite-log-reader', import.meta.url, data);
}

/** A page's events; stored data that is not JSON fails with a SyntaxError, as any read of it does. */
const eventsOf = ({ pieces }: Partial<ReadPage>): LoggedEvent[] => (pieces ? eventsOfPage({ pieces }) : []);

/**
 * A reader of the log on a thread of its own, with its own read-only connection:
 * a long read then costs the caller's thread only taking the pages in, and the
 * next pages are read while the caller works on this one.
 */
export function logReader(file: string, allSql: string, toError: (error: unknown) => Error) {
  let nextId = 0;
  let closed = false;
  /** The thread has its connection and statements: it answers at once from now on. */
  let ready = false;
  let markReady = () => {};
  const readyOnce = new Promise<void>((resolve) => (markReady = resolve));
  const listeners = new Map<number, (reply: Reply | Error) => void>();
  const replyError = (error: NonNullable<Reply['error']>) => toError(Object.assign(new Error(error.message), { code: error.code }));
  const failAll = (error: Error) => {
    for (const listener of [...listeners.values()]) listener(error);
  };
  // Started by the first read, as the writer thread is by the first append: a run that reads nothing starts no thread.
  let started: Worker | undefined;
  const worker = (): Worker => (started ??= start());
  function start(): Worker {
    const thread = spawnReader({ file, mmapBytes, allSql });
    thread.on('message', (reply: Reply) => {
      if (reply.id === readyReplyId) {
        ready = true;
        markReady();
      }
      else listeners.get(reply.id)?.(reply);
    });
    // A reader gone (an uncaught error, out of memory) fails the reads under way as an outage, never leaves
    // one waiting for ever, and is started afresh by the next read, as the writer is by the next append.
    thread.on('error', (error) => failAll(new StoreUnavailableError(`embedded event store: the log reader failed: ${error.message}`, { cause: error })));
    thread.on('exit', (code) => {
      if (started === thread) {
        started = undefined;
        ready = false;
      }
      if (!closed) failAll(new StoreUnavailableError(`embedded event store: the log reader stopped (exit code ${code})`));
    });
    return thread;
  }

  return {
    /** One page in order of position, by the store's own statement. */
    all(after: bigint, maxCount: number): Promise<unknown[][]> {
      if (closed) return Promise.reject(new Error('embedded event store closed'));
      const id = nextId++;
      return new Promise((resolve, reject) => {
        listeners.set(id, (reply) => {
          listeners.delete(id);
          if (reply instanceof Error) reject(reply);
          else if (reply.error) reject(replyError(reply.error));
          else resolve(reply.rows ?? []);
        });
        worker().postMessage({ id, kind: 'all', after, maxCount } satisfies LogReaderRequest);
      });
    },

    /**
     * A stream-ordered read, page after page, read ahead by the thread. Starting the
     * thread takes longer than reading a page (its module and connection: 150 to 300
     * ms here), so until it is ready the pages are read with `readHere` (the caller's
     * connection) and the thread takes over from where they got to.
     */
    async *byStream(cursor: StreamCursor, readHere?: () => PageStatements): AsyncGenerator<LoggedEvent[]> {
      if (closed) throw new Error('embedded event store closed');
      const id = nextId++;
      const replies: Array<Reply | Error> = [];
      let wake: (() => void) | undefined;
      let opened = false;
      let openedOn: Worker | undefined;
      const open = (from: StreamCursor) => {
        listeners.set(id, (reply) => {
          replies.push(reply);
          wake?.();
        });
        openedOn = worker();
        openedOn.postMessage({ id, kind: 'open', cursor: from, ahead: pagesAhead } satisfies LogReaderRequest);
        opened = true;
      };
      let from = cursor;
      // Started now if it is not yet; it says when it is ready.
      worker();
      try {
        if (readHere && !ready) {
          const statements = readHere();
          const sizer = pieceSizer();
          while (!opened) {
            let read: ReadPage;
            try {
              read = readPage(statements, from, sizer);
            } catch (error) {
              throw toError(error);
            }
            const events = eventsOf(read);
            if (!read.next) {
              if (events.length > 0) yield events;
              return;
            }
            from = cursorAfter(from, read.next);
            // The ready reply came in while the caller took the last page: the thread reads the next while it takes this one.
            if (ready) open(from);
            if (events.length > 0) yield events;
          }
        }
        if (!opened) open(from);
        for (;;) {
          while (replies.length === 0) await new Promise<void>((resolve) => (wake = resolve));
          const reply = replies.shift()!;
          if (reply instanceof Error) throw reply;
          if (reply.error) throw replyError(reply.error);
          if (reply.next) openedOn!.postMessage({ id, kind: 'more' } satisfies LogReaderRequest);
          const events = eventsOf(reply);
          if (events.length > 0) yield events;
          if (!reply.next) return;
        }
      } finally {
        listeners.delete(id);
        // Told to the thread that holds the read (not one started since, which never knew it).
        if (opened && !closed && openedOn === started) openedOn?.postMessage({ id, kind: 'close' } satisfies LogReaderRequest);
      }
    },

    /** Resolves once the thread is ready (it starts with the first read); pages read after that come from it. */
    whenReady(): Promise<void> {
      return readyOnce;
    },

    async close(): Promise<void> {
      closed = true;
      failAll(new Error('embedded event store closed'));
      await started?.terminate();
    },
  };
}
