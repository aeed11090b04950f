import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { LogReaderData, LogReaderReply, LogReaderRequest, StreamCursor } from './sqlite-long-reads.js';

/**
 * The embedded store's log reader, on a thread of its own with its own read-only
 * connection. `all` answers one request; a stream-ordered read is a cursor that
 * reads on by itself while it has credit (pages the caller has room for), taking
 * messages between pages: more credit, or a close.
 */
const options = workerData as LogReaderData;
const port = parentPort!;
const db = new Database(options.file, { readonly: true, fileMustExist: true });
db.pragma('busy_timeout = 5000');
// Reads straight from the mapped file instead of a read() per page: a stream-ordered read visits pages at random.
db.pragma(`mmap_size = ${options.mmapBytes}`);
const prepare = (sql: string) => db.prepare(sql).raw(true).safeIntegers(true);
const all = prepare(options.sql.all);
const pageText = prepare(options.sql.pageText);
const pageRows = prepare(options.sql.pageRows);
const pageLast = prepare(options.sql.pageLast);

const post = (reply: LogReaderReply) => port.postMessage(reply);
const fail = (id: number, error: unknown) => {
  const { message, code } = (error ?? {}) as { message?: unknown; code?: unknown };
  post({ id, error: { message: String(message), ...(typeof code === 'string' ? { code } : {}) } });
};

interface Cursor {
  streamId: string;
  revision: number | bigint;
  end: string;
  until: bigint;
  pageSize: number;
  credit: number;
  scheduled: boolean;
}
const cursors = new Map<number, Cursor>();

function readOn(id: number): void {
  const cursor = cursors.get(id);
  if (!cursor || cursor.scheduled || cursor.credit === 0) return;
  cursor.scheduled = true;
  setImmediate(() => {
    cursor.scheduled = false;
    if (cursors.get(id) !== cursor) return;
    try {
      const params = [cursor.streamId, cursor.revision, cursor.end, cursor.until, cursor.pageSize];
      const [text, count, invalid] = pageText.get(...params) as [string | null, bigint, bigint | null];
      const next = count === BigInt(cursor.pageSize) ? (pageLast.get(...params) as [string, bigint]) : undefined;
      const page = invalid ? { rows: pageRows.all(...params) as NonNullable<LogReaderReply['page']>['rows'] } : { text: count > 0n ? text ?? '[]' : '[]' };
      post({ id, page, ...(next ? { next } : {}) });
      if (!next) {
        cursors.delete(id);
        return;
      }
      cursor.streamId = next[0];
      cursor.revision = next[1];
      cursor.credit -= 1;
    } catch (error) {
      cursors.delete(id);
      fail(id, error);
      return;
    }
    readOn(id);
  });
}

port.on('message', (message: LogReaderRequest) => {
  const { id } = message;
  if (message.kind === 'all') {
    try {
      post({ id, rows: all.all(message.after, message.maxCount) as unknown[][] });
    } catch (error) {
      fail(id, error);
    }
  } else if (message.kind === 'open') {
    const cursor: StreamCursor = message.cursor;
    cursors.set(id, { ...cursor, credit: message.ahead, scheduled: false });
    readOn(id);
  } else if (message.kind === 'more') {
    const cursor = cursors.get(id);
    if (cursor) {
      cursor.credit += 1;
      readOn(id);
    }
  } else {
    cursors.delete(id);
  }
});
