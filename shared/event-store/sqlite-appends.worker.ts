import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { announceChange } from '../change-signal.js';
import { describeExpected, satisfiesExpected } from './port.js';
import { writerCheckpointPages, type AppendBatch, type AppendOutcome, type GroupOutcome, type GroupResult, type QueuedAppend, type WriterOptions } from './sqlite-group-commit.js';

/**
 * The embedded store's writer: owns the write connection and commits each group
 * of appends it is sent in one transaction (one fsync: synchronous=FULL). Each
 * append runs under its own savepoint with its own expected-revision check, so a
 * conflict or a failed insert undoes that append alone; a failure of the
 * transaction itself (the write lock not had, the commit failing) fails the
 * whole group and writes nothing.
 */
const options = workerData as WriterOptions;
const db = new Database(options.file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.pragma(`busy_timeout = ${options.busyTimeoutMs}`);
/**
 * A checkpoint every `writerCheckpointPages` (250) WAL pages rather than SQLite's 1,000. The commit that crosses
 * the threshold writes the changed pages back and syncs the database file before it
 * returns, so every append in its group waits for that; as the store grows, fewer of
 * those pages are the same one (each new stream's key is a random leaf of the stream
 * index), each checkpoint writes more, and POST /users' p99 climbed run after run (22
 * to 33 ms over six runs of 10 s) while it stayed flat with no checkpoints at all.
 * Smaller, more frequent checkpoints keep each wait short: p99 about 4 ms lower in the
 * later runs of four series against three, registrations/s the same within the noise
 * (docs/hot-paths-log.md, "The request path's own ceiling, and why the tail grows").
 */
db.pragma(`wal_autocheckpoint = ${writerCheckpointPages}`);

const currentRevision = db.prepare<[string], { revision: number | null }>(
  'SELECT MAX(revision) AS revision FROM events WHERE stream_id = ?',
);
const insert = db.prepare<[string, string, number, string, string, string, string]>(
  `INSERT INTO events (event_id, stream_id, revision, type, data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
);
insert.safeIntegers(true);

const codeOf = (error: unknown): string | undefined => {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
};
const failureOf = (error: unknown) => ({
  message: error instanceof Error ? error.message : String(error),
  ...(codeOf(error) ? { code: codeOf(error) } : {}),
});

/** One append (one stream, or several all or nothing) under a savepoint of its own. */
function appendOne(append: QueuedAppend, recordedAt: string): AppendOutcome {
  db.exec('SAVEPOINT append');
  try {
    const results: [number, bigint][] = [];
    for (const part of append.parts) {
      const current = currentRevision.get(part.streamId)?.revision ?? -1;
      if (!satisfiesExpected(part.expected, current)) {
        db.exec('ROLLBACK TO append');
        db.exec('RELEASE append');
        return { kind: 'conflict', streamId: part.streamId, expected: describeExpected(part.expected), actual: current };
      }
      let revision = current;
      let position = 0n;
      for (const [eventId, type, data, metadata] of part.events) {
        revision += 1;
        position = BigInt(insert.run(eventId, part.streamId, revision, type, data, metadata, recordedAt).lastInsertRowid);
      }
      results.push([revision, position]);
    }
    db.exec('RELEASE append');
    return { kind: 'appended', results };
  } catch (error) {
    // A full disk, an I/O error or a lost lock may have ended the transaction: the whole group fails.
    if (!db.inTransaction || /^SQLITE_(IOERR|FULL|BUSY|NOMEM|CORRUPT|CANTOPEN)/.test(codeOf(error) ?? '')) throw error;
    db.exec('ROLLBACK TO append');
    db.exec('RELEASE append');
    return { kind: 'failed', ...failureOf(error) };
  }
}

/** A group's transaction, timed: the result carries the seconds it took (`GroupResult`). */
function commit(group: QueuedAppend[]): GroupResult {
  const started = performance.now();
  return { ...commitGroup(group), seconds: (performance.now() - started) / 1000 };
}

function commitGroup(group: QueuedAppend[]): GroupOutcome {
  const seqs = group.map((append) => append.seq);
  try {
    db.exec('BEGIN IMMEDIATE');
  } catch (error) {
    return { seqs, failed: failureOf(error) };
  }
  try {
    const recordedAt = new Date().toISOString();
    const outcomes = group.map((append): [number, AppendOutcome] => [append.seq, appendOne(append, recordedAt)]);
    if (options.failCommitsFor?.some((streamId) => group.some((a) => a.parts.some((part) => part.streamId === streamId)))) {
      throw Object.assign(new Error('commit failed (injected by a test)'), { code: 'SQLITE_IOERR_FSYNC' });
    }
    db.exec('COMMIT');
    // Subscribers in other processes look now rather than at their next poll.
    announceChange(options.file);
    return { outcomes };
  } catch (error) {
    if (db.inTransaction) db.exec('ROLLBACK');
    return { seqs, failed: failureOf(error) };
  }
}

/** The most appends one transaction takes; more go into the next. */
const maxGroup = 1000;

/**
 * Commits everything that has arrived, then whatever arrived meanwhile, until
 * nothing waits: the messages queued during a commit are taken off the port
 * directly, so they form the next group without a turn of this thread's loop.
 */
const port = parentPort!;
port.on('message', (first: AppendBatch) => {
  const queued = [...first.appends];
  for (;;) {
    for (let next = receiveMessageOnPort(port); next; next = receiveMessageOnPort(port)) {
      queued.push(...(next.message as AppendBatch).appends);
    }
    if (queued.length === 0) return;
    port.postMessage(commit(queued.splice(0, maxGroup)));
  }
});
