import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { StoreMissingError } from '../errors.js';
import { dbNow, openReadDb, readDbError } from '../read-db.js';
import { newDataKeys, type DataKey, type KeyStore } from './key-store.js';

/**
 * Ids are ASCII and compared byte for byte: ids are opaque [A-Za-z0-9_-], so a
 * case-insensitive collation could make two of them one.
 */
const schema = [
  `CREATE TABLE IF NOT EXISTS DATA_KEY (
    ID         VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    KEY_BYTES  VARBINARY(32) NOT NULL,
    CREATED_AT DATETIME(3) NOT NULL
  ) ENGINE = InnoDB`,
  `CREATE TABLE IF NOT EXISTS SERVER_SECRET (
    NAME  VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    VALUE VARBINARY(64) NOT NULL
  ) ENGINE = InnoDB`,
];

const secretName = 'email-hash';
/** Rows per INSERT and ids per IN list. */
const chunkSize = 500;
/** The database when the URL names none. */
const defaultDatabase = 'user_keys';

function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += chunkSize) out.push(items.slice(i, i + chunkSize));
  return out;
}

/**
 * The production key store: a database of its own on the MariaDB server (the one
 * in the URL, `user_keys` when it names none), created with its tables when
 * missing. The connection is built as the read DB's is (`openReadDb`: mysql2,
 * UTC, a pool of 10), and outages and lock conflicts become the retriable
 * StoreUnavailableError (`readDbError`).
 *
 * `destroy` is a plain DELETE, committed before it returns. What that does and
 * does not erase on the server, which the deployment has to cover:
 * - InnoDB only delete-marks the record; the purge thread removes it shortly
 *   after (once no read view needs it), and the freed space in the page is
 *   reused later, not zeroed, so the bytes may linger in the .ibd file until the
 *   page is rewritten (OPTIMIZE TABLE rebuilds the table and drops them).
 * - The undo log keeps the deleted record until purge; the redo log (and the
 *   doublewrite buffer) hold the key from its INSERT until they are overwritten
 *   in their cycle. A binary log, when enabled, holds the inserted rows until it
 *   expires (binlog_expire_logs_seconds).
 * - Backups and replicas hold whatever they copied: their retention must be
 *   shorter than the erasure delay the service promises, as the docs say.
 * MariaDB's data-at-rest encryption (tablespaces, redo/undo logs, binlog) makes
 * such leftovers unreadable without the server's keys.
 */
export async function openMariaDbKeyStore(
  url: string,
  options: {
    /** The configured server secret; when absent, `secret()` makes one on first use and keeps it in the database. */
    secret?: Buffer;
    /** Replaces knex's console output. */
    log?: Knex.Logger;
    /** false (operator commands): refuse a missing database (StoreMissingError) instead of creating it. */
    create?: boolean;
  } = {},
): Promise<KeyStore> {
  const parsed = new URL(url);
  if (parsed.pathname.replace(/^\//, '') === '') parsed.pathname = `/${defaultDatabase}`;
  const where = parsed.toString();
  const db = await openReadDb({ client: 'mysql', url: where }, { ...(options.log ? { log: options.log } : {}), create: options.create ?? true }).catch(
    (error: unknown) => {
      if (!(error instanceof StoreMissingError)) throw error;
      throw new StoreMissingError(`no key store database ${JSON.stringify(parsed.pathname.slice(1))} on ${parsed.host}; nothing was created (the database comes from KEY_STORE_URL, or beside READ_DB_URL)`);
    },
  );
  const translated = async <T>(body: () => Promise<T>): Promise<T> => {
    try {
      return await body();
    } catch (error) {
      throw readDbError(error, where);
    }
  };
  try {
    await translated(async () => {
      for (const statement of schema) await db.raw(statement);
    });
  } catch (error) {
    await db.destroy();
    throw error;
  }

  let closed = false;
  const open = () => {
    if (closed) throw new Error('the key store is closed');
  };

  return {
    async create(count) {
      open();
      if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`cannot create ${count} keys`);
      const keys: DataKey[] = newDataKeys(count);
      if (keys.length === 0) return keys;
      const createdAt = dbNow();
      await translated(() =>
        db.transaction(async (trx) => {
          for (const chunk of chunks(keys)) {
            await trx('DATA_KEY').insert(chunk.map(({ id, key }) => ({ ID: id, KEY_BYTES: key, CREATED_AT: createdAt })));
          }
        }),
      );
      return keys;
    },
    async get(ids) {
      open();
      const found = new Map<string, Buffer>();
      for (const chunk of chunks([...new Set(ids)])) {
        const rows = await translated(() =>
          db('DATA_KEY').select<{ ID: string; KEY_BYTES: Buffer }[]>('ID', 'KEY_BYTES').whereIn('ID', chunk),
        );
        for (const row of rows) found.set(row.ID, row.KEY_BYTES);
      }
      return found;
    },
    async destroy(ids) {
      open();
      if (ids.length === 0) return;
      await translated(() =>
        db.transaction(async (trx) => {
          for (const chunk of chunks([...new Set(ids)])) await trx('DATA_KEY').whereIn('ID', chunk).delete();
        }),
      );
    },
    async secret() {
      open();
      if (options.secret) return Buffer.from(options.secret);
      const read = async () => {
        const row = await translated(() =>
          db('SERVER_SECRET').first<{ VALUE: Buffer } | undefined>('VALUE').where('NAME', secretName),
        );
        return row?.VALUE;
      };
      const stored = await read();
      if (stored) return stored;
      // Another process may make it at the same moment: the first insert wins and both read that one back.
      await translated(() => db.raw('INSERT IGNORE INTO SERVER_SECRET (NAME, VALUE) VALUES (?, ?)', [secretName, randomBytes(32)]));
      const made = await read();
      if (!made) throw new Error('the key store lost its server secret as it was made');
      return made;
    },
    async close() {
      if (closed) return;
      closed = true;
      await db.destroy();
    },
  };
}
