import type Database from 'better-sqlite3';
import type { Statement } from 'better-sqlite3';
import type { LoggedEvent } from './port.js';

/**
 * The embedded store's stream-ordered read of its log, page by page: the SQL, the
 * cursor a read goes on from, reading a page off a connection (the log reader's
 * thread, or the caller's while that thread starts) and taking its events in.
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

/** The cursor after a page, from where the page ended (`ReadPage.next`). */
export const cursorAfter = (c: StreamCursor, [streamId, revision]: readonly [string, bigint]): StreamCursor => ({
  ...c,
  streamId,
  revision: Number(revision),
});

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
 * The same page as one JSON text built by SQLite (`[[position,"stream",revision,"type",data], ...]`),
 * with its row count. For the reader, parsing one text is far cheaper than a structured copy of
 * every column plus a parse of every event's data. The stored data goes in as it is, unchecked:
 * `json_valid` on every row cost about a sixth of the reader thread's CPU (0.35 of 2.0 s per
 * 1,000,000 sealed events), and the caller's parse of the whole text checks it anyway
 * (`takeText`: data that is not JSON fails that parse, or changes the count or the shape of
 * the tuples). `concat` builds each tuple in one call instead of nine `||`. SQLite concatenates in
 * the order the subquery yields its rows but does not promise it (asking for an order costs a sort
 * of the texts), so the reader checks it.
 *
 * Positions go as JSON numbers when the read ends at or below 2^53 - 1 (`until`), which a
 * number carries exactly, and as JSON strings above that. Not as strings always: V8's
 * `JSON.parse` interns every string value of up to ten characters, so a million positions
 * as strings cost the parsing thread about 0.3 s more per million events than as numbers
 * (in a loop over pages of 1,000 events: 0.89 against 0.57 s), on the thread a rebuild
 * waits for.
 */
const byStreamTextSql = (position: 'number' | 'string') => `SELECT '[' || group_concat(
    concat(${position === 'number' ? "'[', position, ','" : `'["', position, '",'`}, json_quote(stream_id), ',', revision, ',', json_quote(type), ',', data, ']'),
    ',') || ']', count(*)
  FROM (${byStreamSql('stream_id, revision, position, type, data')})`;

/** The last position a JSON number carries exactly. */
const lastExactNumber = BigInt(Number.MAX_SAFE_INTEGER);

/** Stored data that is not JSON, found in a page's text (the same error class a parse of the one row throws). */
const notJson = (after: string, detail: string) =>
  new SyntaxError(`embedded event store: stored data that is not JSON in the stream-ordered page after ${after} (${detail})`);

/** The parsed text, `count` entries as SQLite was asked to build (each entry's shape is checked as it is taken in). */
function tuplesOf(text: string, count: number, after: string): unknown[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw notJson(after, (error as Error).message);
  }
  // Rows whose data is broken can still paste into well-formed JSON together; they cannot
  // keep both the count and every tuple's shape.
  if (!Array.isArray(parsed) || parsed.length !== count) throw notJson(after, `${Array.isArray(parsed) ? parsed.length : 'no'} tuples for ${count} rows`);
  return parsed as unknown[];
}

/** A tuple of five, each of the columns' types (the position a number or, past 2^53 - 1, a string). */
const isPageTuple = (tuple: unknown): tuple is [position: number | string, streamId: string, revision: number, type: string, data: unknown] =>
  Array.isArray(tuple) &&
  tuple.length === 5 &&
  (Number.isSafeInteger(tuple[0]) || typeof tuple[0] === 'string') &&
  typeof tuple[1] === 'string' &&
  Number.isInteger(tuple[2]) &&
  typeof tuple[3] === 'string';

/** A UTF-16 unit that is half of a code point past U+FFFF. */
const surrogate = (unit: number) => unit >= 0xd800 && unit <= 0xdfff;

/**
 * Whether `a` sorts before `b` as SQLite's BINARY collation sorts them (their UTF-8
 * bytes, which is the order of their code points). JavaScript's `<` compares UTF-16
 * units, which agrees except between a surrogate (a code point past U+FFFF) and a
 * unit of U+E000 or above, so only the first unit that differs is looked at.
 */
function inUtf8Order(a: string, b: string): boolean {
  const length = Math.min(a.length, b.length);
  let i = 0;
  while (i < length && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  if (i === length) return a.length < b.length;
  const x = a.charCodeAt(i);
  const y = b.charCodeAt(i);
  if (surrogate(x) !== surrogate(y) && (x >= 0xe000 || y >= 0xe000)) return surrogate(y);
  return x < y;
}

/**
 * A piece's events from its JSON text (`count` rows, read after `after`). Throws a
 * SyntaxError when some stored data is not JSON, and unless the events come in
 * SQLite's order (streams in the order of their ids' UTF-8 bytes, so each stream's
 * events together, in order of revision) and the piece ends where that order ends it
 * (`last`, for a piece the read goes on after): what a caller of the read relies on.
 * The events go into `into` from index `at`.
 */
function takeText(into: LoggedEvent[], at: number, { text, count, after, last }: PagePiece): void {
  const tuples = tuplesOf(text, count, after);
  let previous: LoggedEvent | undefined;
  const outOfOrder = (where: string) => new Error(`embedded event store: a page of the stream-ordered read came back out of order at ${where}`);
  for (let i = 0; i < tuples.length; i++) {
    const tuple = tuples[i];
    if (!isPageTuple(tuple)) throw notJson(after, 'a tuple of the wrong shape');
    const [position, streamId, revision, type, data] = tuple;
    if (previous && streamId !== previous.streamId) {
      if (!inUtf8Order(previous.streamId, streamId)) throw outOfOrder(`${streamId}@${revision}`);
    } else if (previous && revision <= previous.revision) throw outOfOrder(`${streamId}@${revision}`);
    into[at + i] = previous = { streamId, revision, position: BigInt(position), type, data };
  }
  if (last && (previous?.streamId !== last[0] || previous.revision !== Number(last[1]))) throw outOfOrder('the end of the page');
}

/**
 * A page's events, its pieces taken in one after another. Each piece was read from
 * where the one before it ended (checked: `last`), so the page keeps SQLite's order.
 */
export function eventsOfPage({ pieces }: Pick<ReadPage, 'pieces'>): LoggedEvent[] {
  let count = 0;
  for (const piece of pieces) count += piece.count;
  const events = new Array<LoggedEvent>(count);
  let at = 0;
  for (const piece of pieces) {
    takeText(events, at, piece);
    at += piece.count;
  }
  return events;
}

/**
 * Address space a connection that reads long may map the file into (only what it
 * touches becomes resident, and the kernel can drop it): a stream-ordered read visits
 * pages at random, and reads straight from the mapped file instead of a read() per page.
 */
export const longReadMmapBytes = 1 << 30;

/**
 * Part of a page as one JSON text: its row count, where it was read after, and its
 * last event in SQLite's order when the read goes on after it.
 */
export interface PagePiece {
  text: string;
  count: number;
  after: string;
  last?: [streamId: string, revision: bigint];
}

/** A page of a stream-ordered read as read off a connection: its pieces in order, and where the next page starts. */
export interface ReadPage {
  pieces: PagePiece[];
  /** The page's last event in SQLite's order; none after the last page. */
  next?: [streamId: string, revision: bigint];
}

/**
 * The most UTF-16 units a piece's text should hold. A page is read as several texts
 * ("pieces"), each small enough for V8 to allocate among its ordinary objects: V8
 * puts any object above 128 KiB in its large-object space, on memory mapped for it
 * alone and unmapped once it is collected, so a page of 1,000 sealed events as one
 * text (about 470 KB) was such an object twice, the reader's string from SQLite and
 * the copy the caller's thread takes from the message, and each page faulted fresh
 * memory in on both threads. Measured with Linux `perf` over a rebuild of 1,000,000
 * sealed events: page faults under those two copies took about 0.6 s of each
 * thread's CPU. 48,000 units stay below 128 KiB even when every unit takes two
 * bytes (a string with characters past Latin-1).
 */
export const pieceUnits = 48_000;

/**
 * Rows per piece, learnt from the texts read so far (one per read, on the thread that
 * reads): as many as `pieceUnits` holds at the last piece's size per row. The first
 * piece of a read takes `firstRows`.
 */
export function pieceSizer(firstRows = 100) {
  return {
    rows: firstRows,
    /** Learns from a piece just read. */
    saw(text: string, count: number): void {
      if (count > 0) this.rows = Math.max(1, Math.floor(pieceUnits / Math.max(1, text.length / count)));
    },
  };
}
export type PieceSizer = ReturnType<typeof pieceSizer>;

/** The statements a page is read with, prepared on one connection (raw, safe integers). */
export interface PageStatements {
  /** The page's text, positions as numbers: a read whose `until` is at most 2^53 - 1. */
  pageText: Statement;
  /** The same, positions as strings: a read that may meet larger positions. */
  pageTextWide: Statement;
  pageLast: Statement;
}

/** Prepares the page statements on a connection. */
export function pageStatements(db: Database.Database): PageStatements {
  const prepare = (sql: string) => db.prepare(sql).raw(true).safeIntegers(true);
  return { pageText: prepare(byStreamTextSql('number')), pageTextWide: prepare(byStreamTextSql('string')), pageLast: prepare(byStreamLastSql) };
}

/**
 * Reads the page after `cursor` (the log reader's thread, and the caller's connection
 * while that thread starts), piece after piece, each of `sizer.rows` rows at most.
 */
export function readPage(statements: PageStatements, cursor: StreamCursor, sizer: PieceSizer): ReadPage {
  const pageText = cursor.until <= lastExactNumber ? statements.pageText : statements.pageTextWide;
  const pieces: PagePiece[] = [];
  let from = cursor;
  let left = cursor.pageSize;
  for (;;) {
    const rows = Math.min(left, sizer.rows);
    const params = cursorParams({ ...from, pageSize: rows });
    const [text, counted] = pageText.get(...params) as [string | null, bigint];
    const count = Number(counted);
    const last = count === rows ? (statements.pageLast.get(...params) as [string, bigint]) : undefined;
    const after = `${from.streamId}@${from.revision}`;
    if (count > 0) {
      // No text for rows SQLite counted fails the page's count check, as any broken text does.
      const body = text ?? '[]';
      pieces.push({ text: body, count, after, last });
      sizer.saw(body, count);
    }
    left -= count;
    // A piece short of its rows: the read has reached its end.
    if (!last) return { pieces };
    if (left === 0) return { pieces, next: last };
    from = cursorAfter(from, last);
  }
}
