import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { StoreUnavailableError } from '../errors.js';
import { dataKeyBytes, newDataKeys, type DataKey, type KeyStore } from './key-store.js';
import { perCount } from '../per-count.js';

/**
 * A key's bytes live in one cell of a DATA_KEY leaf page (32 bytes never spill to
 * an overflow page). secure_delete zeroes that cell when the row is deleted, and
 * a page freed by the delete is zeroed too; the ID index holds ids only, which
 * are not secret.
 */
const schema = `
  CREATE TABLE IF NOT EXISTS DATA_KEY (
    ID         TEXT PRIMARY KEY,
    KEY        BLOB NOT NULL,
    CREATED_AT TEXT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS SERVER_SECRET (
    NAME  TEXT PRIMARY KEY,
    VALUE BLOB NOT NULL
  );
`;

const secretName = 'email-hash';
/** Well under SQLite's limit on bound parameters (32766 since 3.32, 999 before). */
const chunkSize = 500;

/** SQLITE_BUSY and friends mean another process holds the lock (or the disk failed): worth retrying. As the event store does. */
function translate(error: unknown): Error {
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && /^SQLITE_(BUSY|LOCKED|IOERR|CANTOPEN|FULL)/.test(code)) {
    return new StoreUnavailableError(`key store: ${code}`, { cause: error });
  }
  return error instanceof Error ? error : new Error(String(error));
}

/** Runs a synchronous better-sqlite3 call as the port's promise, its errors translated. */
function settle<T>(body: () => T): Promise<T> {
  try {
    return Promise.resolve(body());
  } catch (error) {
    return Promise.reject(translate(error));
  }
}

function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += chunkSize) out.push(items.slice(i, i + chunkSize));
  return out;
}

/**
 * The embedded key store: its own SQLite file (beside the event store, never
 * inside it), opened so that a destroyed key leaves no copy of its bytes in any
 * file the store keeps:
 *
 * - `journal_mode = DELETE`: a rollback journal that is unlinked at each commit.
 *   The journal holds the pages as they were before the transaction (so the keys
 *   a destroy deletes, for a moment), and it is gone when the commit returns. Not
 *   WAL: a write-ahead log keeps old page images (with the keys) until a
 *   checkpoint, and its file is reused rather than removed. The mode is switched
 *   at every open, so a file once put in WAL mode by hand comes back.
 * - `secure_delete = ON`: SQLite overwrites deleted cell content and freed pages
 *   with zeros. A connection setting, so every connection that opens the file
 *   goes through here.
 * - `synchronous = FULL`: a key that `create` returned is on disk.
 * - `busy_timeout`: several processes share the file (the command side writes;
 *   the relay, projector and rebuild read); a lock held longer than that is a
 *   retriable StoreUnavailableError.
 *
 * What this cannot reach: the disk blocks of an unlinked journal belong to the
 * file system until it reuses them, and copies of the file (backups, snapshots)
 * are outside the store. Those are the deployment's to handle (encrypted disks,
 * backup retention shorter than the promised erasure delay).
 *
 * The calls are synchronous (better-sqlite3): these are rare batch operations on
 * a small table.
 */
export function openSqliteKeyStore(
  file: string,
  options: {
    /** The configured server secret; when absent, `secret()` makes one on first use and keeps it in the file. */
    secret?: Buffer;
    /** How long a statement waits for another process's lock before it fails as unavailable (default 5 s). */
    busyTimeoutMs?: number;
  } = {},
): KeyStore {
  if (file === ':memory:') throw new Error('the embedded key store needs a file');
  let db: Database.Database;
  try {
    mkdirSync(dirname(file), { recursive: true });
    db = new Database(file);
  } catch (error) {
    throw translate(error);
  }
  try {
    db.pragma(`busy_timeout = ${Math.max(0, Math.trunc(options.busyTimeoutMs ?? 5000))}`);
    db.pragma('journal_mode = DELETE');
    db.pragma('secure_delete = ON');
    db.pragma('synchronous = FULL');
    db.exec(schema);
  } catch (error) {
    db.close();
    throw translate(error);
  }

  // A statement per list length, each prepared once (`perCount`).
  // Keys go in 64 rows per statement: a third less CPU per key than one row per statement.
  const rowsPerInsert = 64;
  const insertRows = perCount((rows) =>
    db.prepare<[(string | Buffer)[]]>(`INSERT INTO DATA_KEY (ID, KEY, CREATED_AT) VALUES ${Array(rows).fill('(?, ?, ?)').join(', ')}`),
  );
  const deleteKey = db.prepare<[string]>('DELETE FROM DATA_KEY WHERE ID = ?');
  const selectSecret = db.prepare<[string], { VALUE: Buffer }>('SELECT VALUE FROM SERVER_SECRET WHERE NAME = ?');
  const insertSecret = db.prepare<[string, Buffer]>('INSERT OR IGNORE INTO SERVER_SECRET (NAME, VALUE) VALUES (?, ?)');
  const selectIds = perCount((ids) =>
    db.prepare<string[], { ID: string; KEY: Buffer }>(`SELECT ID, KEY FROM DATA_KEY WHERE ID IN (${Array(ids).fill('?').join(', ')})`),
  );
  /**
   * The same rows packed into one row: their ids as a JSON array and their keys
   * concatenated in the same order into one blob (SQLite's `group_concat` keeps a
   * blob's bytes in a UTF-8 database, and the cast gives them back as a blob), with
   * how many keys are not 32 bytes long. Half the CPU per key of a row each (a
   * rebuild reads every user's key): one result row, one buffer for all the keys.
   * So the keys handed out share a buffer: no reader writes to one (the vault forgets
   * a destroyed key, it does not zero it; only a store's own copy is zeroed).
   */
  const selectPacked = perCount((ids) =>
    db
      .prepare<string[], [ids: string, keys: Buffer | null, odd: number | null]>(
        `SELECT json_group_array(ID), CAST(group_concat(KEY, '') AS BLOB), sum(length(KEY) != ${dataKeyBytes}) ` +
          `FROM DATA_KEY WHERE ID IN (${Array(ids).fill('?').join(', ')})`,
      )
      .raw(true),
  );
  /** The keys of these ids that exist, into `found`. */
  function readKeys(ids: string[], found: Map<string, Buffer>): void {
    const [idsText, keys, odd] = selectPacked(ids.length).get(...ids)!;
    const named = JSON.parse(idsText) as string[];
    if (!odd && keys !== null && keys.length === named.length * dataKeyBytes) {
      for (let i = 0; i < named.length; i++) found.set(named[i]!, keys.subarray(i * dataKeyBytes, (i + 1) * dataKeyBytes));
      return;
    }
    // A key of another length (not one this store made): the rows as they are, for the opening to judge.
    for (const row of selectIds(ids.length).all(...ids)) found.set(row.ID, row.KEY);
  }

  // IMMEDIATE: take the write lock at BEGIN, so a busy file waits (busy_timeout) instead of failing at the first write.
  const insertAll = db.transaction((keys: DataKey[], createdAt: string) => {
    for (let i = 0; i < keys.length; i += rowsPerInsert) {
      const rows = keys.slice(i, i + rowsPerInsert);
      insertRows(rows.length).run(rows.flatMap(({ id, key }) => [id, key, createdAt]));
    }
  });
  const deleteAll = db.transaction((ids: readonly string[]) => {
    for (const id of ids) deleteKey.run(id);
  });

  let closed = false;
  const open = () => {
    if (closed) throw new Error('the key store is closed');
  };

  return {
    create(count) {
      return settle(() => {
        open();
        if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`cannot create ${count} keys`);
        const keys: DataKey[] = newDataKeys(count);
        if (keys.length > 0) insertAll.immediate(keys, new Date().toISOString());
        return keys;
      });
    },
    get(ids) {
      return settle(() => {
        open();
        const found = new Map<string, Buffer>();
        for (const chunk of chunks([...new Set(ids)])) readKeys(chunk, found);
        return found;
      });
    },
    destroy(ids) {
      return settle(() => {
        open();
        if (ids.length > 0) deleteAll.immediate(ids);
      });
    },
    secret() {
      return settle(() => {
        open();
        if (options.secret) return Buffer.from(options.secret);
        const stored = selectSecret.get(secretName);
        if (stored) return stored.VALUE;
        // Another process may make it at the same moment: the first insert wins and both read that one back.
        insertSecret.run(secretName, randomBytes(32));
        const made = selectSecret.get(secretName);
        if (!made) throw new Error('the key store lost its server secret as it was made');
        return made.VALUE;
      });
    },
    close() {
      if (!closed) {
        closed = true;
        db.close();
      }
      return Promise.resolve();
    },
  };
}
