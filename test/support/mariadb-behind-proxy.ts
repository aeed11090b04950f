import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { Test } from 'tap';
import { openReadDb } from '../../shared/read-db.js';
import { migrateReadDb } from '../../shared/read-model/migrations.js';
import { mariadbUrl, openUnlessAbsent } from './read-dbs.js';
import { startTcpProxy } from './tcp-proxy.js';

export interface MariadbBehindProxy {
  /** Cut it to make MariaDB go away for whoever connects through it; restore to bring it back. */
  proxy: Awaited<ReturnType<typeof startTcpProxy>>;
  /** The READ_DB_URL of the fresh database, through the proxy. */
  url: string;
  /** Connected through the proxy, the read model migrated. */
  db: Knex;
}

/**
 * A fresh MariaDB database reached through a TCP proxy that the test can cut: an
 * outage of MariaDB without stopping the shared server. The database is dropped and
 * the proxy stopped on teardown. Undefined when MariaDB cannot be reached: the test
 * has then failed with advice (or been skipped, with MARIADB_OPTIONAL=1) and returns.
 */
export async function mariadbBehindProxy(t: Test): Promise<MariadbBehindProxy | undefined> {
  if (!(await openUnlessAbsent(t, 'mariadb'))) return undefined;
  const target = new URL(mariadbUrl);
  const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 3306) });
  const database = `queries_proxied_${randomBytes(5).toString('hex')}`;
  const viaProxy = new URL(mariadbUrl);
  viaProxy.host = `127.0.0.1:${proxy.port}`;
  viaProxy.pathname = `/${database}`;
  const url = viaProxy.toString();
  // As the projector role opens it: its batches take two round trips (`projector/mariadb-batch.ts`).
  const db = await openReadDb({ client: 'mysql', url }, { batchStatements: true }).catch(async (error: unknown) => {
    await proxy.stop();
    throw error;
  });
  t.teardown(async () => {
    // A test that failed while MariaDB was "away" must not leave its database behind.
    proxy.restore();
    await db.raw('DROP DATABASE IF EXISTS ??', [database]).catch(() => {});
    await db.destroy();
    await proxy.stop();
  });
  await migrateReadDb(db);
  return { proxy, url, db };
}
