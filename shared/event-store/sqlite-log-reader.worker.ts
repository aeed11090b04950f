import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { readyReplyId, type LogReaderData, type LogReaderReply, type LogReaderRequest } from './sqlite-long-reads.js';
import { cursorAfter, pageStatements, pieceSizer, readPage, type PieceSizer, type StreamCursor } from './sqlite-log-pages.js';

/**
 * The embedded store's log reader, on a thread of its own with its own read-only
 * connection. `all` answers one request; a stream-ordered read is a cursor that
 * reads on by itself while it has credit (pages the caller has room for), taking
 * messages between pages: more credit, or a close. Says once when it is ready.
 */
const options = workerData as LogReaderData;
const port = parentPort!;
const db = new Database(options.file, { readonly: true, fileMustExist: true });
db.pragma('busy_timeout = 5000');
// Reads straight from the mapped file (see longReadMmapBytes).
db.pragma(`mmap_size = ${options.mmapBytes}`);
const all = db.prepare(options.allSql).raw(true).safeIntegers(true);
const pages = pageStatements(db);

const post = (reply: LogReaderReply) => port.postMessage(reply);
const fail = (id: number, error: unknown) => {
  const { message, code } = (error ?? {}) as { message?: unknown; code?: unknown };
  post({ id, error: { message: String(message), ...(typeof code === 'string' ? { code } : {}) } });
};

interface Cursor {
  at: StreamCursor;
  credit: number;
  scheduled: boolean;
  sizer: PieceSizer;
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
      const read = readPage(pages, cursor.at, cursor.sizer);
      post({ id, ...read });
      if (!read.next) {
        cursors.delete(id);
        return;
      }
      cursor.at = cursorAfter(cursor.at, read.next);
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
    cursors.set(id, { at: message.cursor, credit: message.ahead, scheduled: false, sizer: pieceSizer() });
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
post({ id: readyReplyId });
