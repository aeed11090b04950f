import type { Worker } from 'node:worker_threads';
import type { LoggedEvent } from './port.js';
import { startWorkerModule } from '../worker-module.js';

/**
 * Long reads of the embedded store's log (a rebuild's replay of millions of
 * events): the stream-ordered read's SQL, and a reader on a thread of its own.
 */

/** The first id above every id that starts with `prefix`: the upper bound of a range scan of the (stream_id, revision) index. */
export function prefixEnd(prefix: string): string {
  if (!prefix) throw new Error('readAllByStream needs a stream prefix');
  const last = prefix.codePointAt(prefix.length - 1)!;
  const head = prefix.slice(0, last > 0xffff ? -2 : -1);
  // UTF-8 (SQLite's BINARY collation) orders as code points do.
  return head + String.fromCodePoint(last + 1);
}

/** Where a stream-ordered read has got to: the last event read, and the bounds of the whole read. */
export interface StreamCursor {
  streamId: string;
  revision: number;
  /** `prefixEnd` of the prefix. */
  end: string;
  until: bigint;
  pageSize: number;
}

/** The first cursor of a read: just before the prefix's first stream. */
export const firstCursor = (streamPrefix: string, until: bigint, pageSize: number): StreamCursor => ({
  streamId: streamPrefix,
  revision: -1,
  end: prefixEnd(streamPrefix),
  until,
  pageSize,
});

export const cursorParams = (c: StreamCursor) => [c.streamId, c.revision, c.end, c.until, c.pageSize] as const;

/**
 * A page of a stream-ordered read: the events after the cursor, at or before `until`.
 * The cursor is the only lower bound, so SQLite seeks the (stream_id, revision) index
 * straight to it (a separate `stream_id >= prefix` would make it scan from the prefix
 * on every page).
 */
const byStreamSql = (columnList: string, limit = 'LIMIT ?') => `SELECT ${columnList} FROM events
  WHERE (stream_id, revision) > (?, ?) AND stream_id < ? AND position <= ?
  ORDER BY stream_id, revision ${limit}`;
export const byStreamRowsSql = byStreamSql('position, stream_id, revision, type, data');
/** The page's last event (from the index alone), where the next page starts. */
const byStreamLastSql = byStreamSql('stream_id, revision', 'LIMIT 1 OFFSET ? - 1');

export type LoggedTuple = [position: number | bigint, streamId: string, revision: number | bigint, type: string, data: string];

export const toLogged = ([position, streamId, revision, type, data]: LoggedTuple): LoggedEvent => ({
  streamId,
  revision: Number(revision),
  position: BigInt(position),
  type,
  data: JSON.parse(data) as unknown,
});

/**
 * The same page as one JSON text built by SQLite (`[["position","stream",revision,"type",data], ...]`),
 * with the row count and how many rows' data is not valid JSON. For the reader, parsing one text is
 * far cheaper than a structured copy of every column plus a parse of every event's data. The stored
 * data goes in as it is, so the text is well-formed only when every row's data is valid JSON (else the
 * rows are sent instead). SQLite concatenates in the order the subquery yields its rows but does not
 * promise it (asking for an order costs a sort of the texts), so the reader checks it.
 */
const byStreamTextSql = `SELECT '[' || group_concat(
    '["' || position || '",' || json_quote(stream_id) || ',' || revision || ',' || json_quote(type) || ',' || data || ']',
    ',') || ']', count(*), sum(NOT json_valid(data))
  FROM (${byStreamSql('stream_id, revision, position, type, data')})`;

/**
 * A page's events from its JSON text. Throws unless each stream's events come
 * together in order of revision and the page ends where SQLite's order ends it
 * (`last`, for a page the read goes on after): what a caller of the read relies on.
 */
function eventsOfText(text: string, last: readonly [streamId: string, revision: bigint] | undefined): LoggedEvent[] {
  const tuples = JSON.parse(text) as Array<[position: string, streamId: string, revision: number, type: string, data: unknown]>;
  const events = new Array<LoggedEvent>(tuples.length);
  const done = new Set<string>();
  let previous: LoggedEvent | undefined;
  const outOfOrder = (at: string) => new Error(`embedded event store: a page of the stream-ordered read came back out of order at ${at}`);
  for (let i = 0; i < tuples.length; i++) {
    const [position, streamId, revision, type, data] = tuples[i]!;
    if (previous && streamId !== previous.streamId) {
      done.add(previous.streamId);
      if (done.has(streamId)) throw outOfOrder(`${streamId}@${revision}`);
    } else if (previous && revision <= previous.revision) throw outOfOrder(`${streamId}@${revision}`);
    events[i] = previous = { streamId, revision, position: BigInt(position), type, data };
  }
  if (last && (previous?.streamId !== last[0] || previous.revision !== Number(last[1]))) throw outOfOrder('the end of the page');
  return events;
}

/** Address space the reader may map the file into (only what it touches becomes resident, and the kernel can drop it). */
const mmapBytes = 1 << 30;
/** Pages a stream-ordered read may have ready before the caller asks for them. */
const pagesAhead = 2;

/** What the log reader is told: see `sqlite-log-reader.worker.ts`. */
export type LogReaderRequest =
  | { id: number; kind: 'all'; after: bigint; maxCount: number }
  | { id: number; kind: 'open'; cursor: StreamCursor; ahead: number }
  | { id: number; kind: 'more' }
  | { id: number; kind: 'close' };

export type LogReaderReply = {
  id: number;
  rows?: unknown[][];
  page?: { text?: string; rows?: LoggedTuple[] };
  /** Where the next page starts (the page's last event in SQLite's order); none after the last page. */
  next?: [streamId: string, revision: bigint];
  error?: { message: string; code?: string };
};
type Reply = LogReaderReply;

export interface LogReaderData {
  file: string;
  mmapBytes: number;
  sql: { all: string; pageText: string; pageRows: string; pageLast: string };
}

/** The reader's thread: the compiled module from dist/, or the TypeScript source through tsx. */
function spawnReader(data: LogReaderData): Worker {
  return startWorkerModule('sqlite-log-reader', import.meta.url, data);
}

/**
 * A reader of the log on a thread of its own, with its own read-only connection:
 * a long read then costs the caller's thread only taking the pages in, and the
 * next pages are read while the caller works on this one.
 */
export function logReader(file: string, allSql: string, toError: (error: unknown) => Error) {
  let nextId = 0;
  let closed = false;
  const listeners = new Map<number, (reply: Reply | Error) => void>();
  const replyError = (error: NonNullable<Reply['error']>) => toError(Object.assign(new Error(error.message), { code: error.code }));
  const failAll = (error: Error) => {
    for (const listener of [...listeners.values()]) listener(error);
  };
  // Started by the first read, as the writer thread is by the first append: a run that reads nothing starts no thread.
  let started: Worker | undefined;
  const worker = (): Worker => (started ??= start());
  function start(): Worker {
    const thread = spawnReader({
      file,
      mmapBytes,
      sql: { all: allSql, pageText: byStreamTextSql, pageRows: byStreamRowsSql, pageLast: byStreamLastSql },
    });
    thread.on('message', (reply: Reply) => listeners.get(reply.id)?.(reply));
    thread.on('error', (error) => failAll(toError(error)));
    // A reader gone for any other reason must not leave a read waiting for ever.
    thread.on('exit', (code) => {
      if (!closed) failAll(new Error(`embedded event store: the log reader stopped (exit code ${code})`));
      closed = true;
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

    /** A stream-ordered read, page after page, read ahead by the worker. */
    async *byStream(cursor: StreamCursor): AsyncGenerator<LoggedEvent[]> {
      if (closed) throw new Error('embedded event store closed');
      const id = nextId++;
      const replies: Array<Reply | Error> = [];
      let wake: (() => void) | undefined;
      listeners.set(id, (reply) => {
        replies.push(reply);
        wake?.();
      });
      worker().postMessage({ id, kind: 'open', cursor, ahead: pagesAhead } satisfies LogReaderRequest);
      try {
        for (;;) {
          while (replies.length === 0) await new Promise<void>((resolve) => (wake = resolve));
          const reply = replies.shift()!;
          if (reply instanceof Error) throw reply;
          if (reply.error) throw replyError(reply.error);
          if (reply.next) worker().postMessage({ id, kind: 'more' } satisfies LogReaderRequest);
          // Rows come instead of text when some data is not valid JSON: parsed one by one, that fails as any read would.
          const { text, rows } = reply.page ?? {};
          const events = rows ? rows.map(toLogged) : eventsOfText(text ?? '[]', reply.next);
          if (events.length > 0) yield events;
          if (!reply.next) return;
        }
      } finally {
        listeners.delete(id);
        if (!closed) worker().postMessage({ id, kind: 'close' } satisfies LogReaderRequest);
      }
    },

    async close(): Promise<void> {
      closed = true;
      failAll(new Error('embedded event store closed'));
      await started?.terminate();
    },
  };
}
