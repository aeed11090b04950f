import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { StoreUnavailableError } from '../errors.js';
import { wakeSignal, watchChanges } from '../change-signal.js';
import { pollingSubscription } from './log-subscription.js';
import { groupCommitter } from './sqlite-group-commit.js';
import { logReader } from './sqlite-long-reads.js';
import { byStreamRowsSql, cursorParams, firstCursor, longReadMmapBytes, pageStatements, toLogged, type LoggedTuple, type PageStatements } from './sqlite-log-pages.js';
import type { EventStore, RecordedEvent } from './port.js';

/** A row as an array (better-sqlite3's raw mode): cheaper than an object per row on long reads. */
type EventTuple = [
  position: number | bigint,
  eventId: string,
  streamId: string,
  revision: number | bigint,
  type: string,
  data: string,
  metadata: string,
  recordedAt: string,
];
const columns = 'position, event_id, stream_id, revision, type, data, metadata, recorded_at';

const schema = `
  CREATE TABLE IF NOT EXISTS events (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT    NOT NULL,
    stream_id   TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    recorded_at TEXT    NOT NULL,
    UNIQUE (stream_id, revision)
  );
`;

const toRecorded = ([position, id, streamId, revision, type, data, metadata, recordedAt]: EventTuple): RecordedEvent => ({
  id,
  streamId,
  revision: Number(revision),
  position: BigInt(position),
  type,
  data: JSON.parse(data) as unknown,
  metadata: JSON.parse(metadata) as RecordedEvent['metadata'],
  recordedAt: new Date(recordedAt),
});

/**
 * A recorded event whose metadata and recording time are parsed on first use: a
 * long read (a rebuild replaying millions of events) needs neither.
 */
class LazyRecordedEvent implements RecordedEvent {
  readonly id: string;
  readonly streamId: string;
  readonly revision: number;
  readonly position: bigint;
  readonly type: string;
  readonly data: unknown;
  #metadataText: string;
  #metadata: RecordedEvent['metadata'] | undefined;
  #recordedAtText: string;
  #recordedAt: Date | undefined;

  constructor([position, id, streamId, revision, type, data, metadata, recordedAt]: EventTuple) {
    this.id = id;
    this.streamId = streamId;
    this.revision = Number(revision);
    this.position = BigInt(position);
    this.type = type;
    this.data = JSON.parse(data) as unknown;
    this.#metadataText = metadata;
    this.#recordedAtText = recordedAt;
  }

  get metadata(): RecordedEvent['metadata'] {
    return (this.#metadata ??= JSON.parse(this.#metadataText) as RecordedEvent['metadata']);
  }

  get recordedAt(): Date {
    return (this.#recordedAt ??= new Date(this.#recordedAtText));
  }
}

/** SQLITE_BUSY and friends mean another process holds the lock: worth retrying. */
function translate(error: unknown): Error {
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && /^SQLITE_(BUSY|LOCKED|IOERR|CANTOPEN|FULL)/.test(code)) {
    return new StoreUnavailableError(`embedded event store: ${code}`, { cause: error });
  }
  return error instanceof Error ? error : new Error(String(error));
}

/**
 * The least time between a caught-up subscriber's reads of the log. The change
 * signal wakes subscribers at every group commit, which under load is every
 * millisecond or two; read (and so applied by the projector) at each, the
 * projector spent about 60% more CPU per registration, taken from the command
 * side on a 2-core machine. An append after a quiet spell is still read at once.
 */
const caughtUpReadIntervalMs = 5;

/**
 * The embedded event store: one SQLite file in WAL mode with synchronous=FULL, so
 * an append that returned is on disk. Several processes may share the file; the
 * write lock (BEGIN IMMEDIATE) serialises appends. Subscribers in other
 * processes are woken by the writer's change signal (`../change-signal.ts`) as
 * soon as a group has committed, and poll every `pollMs` in case a signal is
 * missed.
 */
export function sqliteEventStore(options: {
  file: string;
  pollMs?: number;
  /** `readAll` and `readAllByStream` on a worker thread (see `logReader`): for long reads such as a rebuild's. */
  readAllInWorker?: boolean;
  /** How long an append waits for another process's write lock before it fails as unavailable (default 5 s). */
  busyTimeoutMs?: number;
  /** Tests only: see `WriterOptions.failCommitsFor`. */
  failCommitsFor?: readonly string[];
  /** false: open an existing file only (for commands that read the store); default true: create file and directory. */
  create?: boolean;
}): EventStore {
  if (options.file === ':memory:') throw new Error('the embedded event store needs a file: its writer thread opens it too');
  const create = options.create ?? true;
  if (create) mkdirSync(dirname(options.file), { recursive: true });
  const db = new Database(options.file, { fileMustExist: !create });
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  db.exec(schema);

  // Both walk the (stream_id, revision) index from `revision`, so the last event of a long stream is one step away. LIMIT -1: no limit.
  const selectStream = db
    .prepare<[string, number, number], EventTuple>(`SELECT ${columns} FROM events WHERE stream_id = ? AND revision >= ? ORDER BY revision LIMIT ?`)
    .raw(true);
  const selectStreamBackwards = db
    .prepare<[string, number, number], EventTuple>(`SELECT ${columns} FROM events WHERE stream_id = ? AND revision <= ? ORDER BY revision DESC LIMIT ?`)
    .raw(true);
  const selectAllSql = `SELECT ${columns} FROM events WHERE position > ? ORDER BY position LIMIT ?`;
  const selectAll = db.prepare<[number | bigint, number], EventTuple>(selectAllSql).raw(true);
  const selectByStream = db.prepare<unknown[], LoggedTuple>(byStreamRowsSql).raw(true);
  selectByStream.safeIntegers(true);
  const reader = options.readAllInWorker ? logReader(options.file, selectAllSql, translate) : undefined;
  // This connection reads the first pages of a long read (while the reader's thread starts) as that thread does.
  if (reader) db.pragma(`mmap_size = ${longReadMmapBytes}`);
  // This connection's page statements, for the pages read while the reader's thread starts.
  let pages: PageStatements | undefined;
  const pagesHere = () => (pages ??= pageStatements(db));
  selectAll.safeIntegers(true);
  const selectHead = db.prepare<[], { position: bigint | null }>('SELECT MAX(position) AS position FROM events');
  selectHead.safeIntegers(true);

  const writer = groupCommitter({
    file: options.file,
    busyTimeoutMs: options.busyTimeoutMs ?? 5000,
    translate,
    ...(options.failCommitsFor ? { failCommitsFor: options.failCommitsFor } : {}),
  });
  // Subscribers wake when this process appends, and (watching the writers' change signal) when another does.
  const appended = wakeSignal();
  let othersAppends: { close(): void } | undefined;
  const pollMs = options.pollMs ?? 20;

  const store: EventStore = {
    async appendToStream(streamId, events, { expectedRevision }) {
      const [result] = await writer.append([{ streamId, events, expectedRevision }]);
      appended.notify();
      return result!;
    },
    async appendToStreams(appends) {
      const results = await writer.append(appends);
      appended.notify();
      return results;
    },
    writerStats: () => writer.stats(),
    observeCommits: (listener) => writer.observeCommits(listener),
    readStream(streamId, { fromRevision, backwards = false, maxCount = -1 } = {}) {
      try {
        const rows = backwards
          ? selectStreamBackwards.all(streamId, fromRevision ?? Number.MAX_SAFE_INTEGER, maxCount)
          : selectStream.all(streamId, fromRevision ?? 0, maxCount);
        return Promise.resolve(rows.map(toRecorded));
      } catch (error) {
        return Promise.reject(translate(error));
      }
    },
    readAll({ after = 0n, maxCount }) {
      if (reader) return reader.all(after, maxCount).then((rows) => (rows as EventTuple[]).map((row) => new LazyRecordedEvent(row)));
      try {
        return Promise.resolve(selectAll.all(after, maxCount).map(toRecorded));
      } catch (error) {
        return Promise.reject(translate(error));
      }
    },
    async *readAllByStream({ streamPrefix, until, pageSize }) {
      const cursor = firstCursor(streamPrefix, until, pageSize);
      if (reader) {
        yield* reader.byStream(cursor, pagesHere);
        return;
      }
      for (;;) {
        let rows: LoggedTuple[];
        try {
          rows = selectByStream.all(...cursorParams(cursor));
        } catch (error) {
          throw translate(error);
        }
        const page = rows.map(toLogged);
        if (page.length > 0) yield page;
        if (page.length < pageSize) return;
        cursor.streamId = page[page.length - 1]!.streamId;
        cursor.revision = page[page.length - 1]!.revision;
      }
    },
    headPosition() {
      try {
        const position = selectHead.get()?.position;
        return Promise.resolve(position === null || position === undefined ? undefined : BigInt(position));
      } catch (error) {
        return Promise.reject(translate(error));
      }
    },
    subscribeToAll(subscribeOptions = {}) {
      othersAppends ??= watchChanges(options.file, () => appended.notify());
      return pollingSubscription(
        { readAll: (o) => store.readAll(o), waitForAppend: (ms) => appended.wait(ms) },
        { pollMs, minIntervalMs: caughtUpReadIntervalMs, ...subscribeOptions },
      );
    },
    async close() {
      othersAppends?.close();
      await writer.close();
      await reader?.close();
      db.close();
    },
  };
  return store;
}
