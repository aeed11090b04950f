import { loadConfig } from '../shared/config.js';
import { exitOnStartupError, onShutdownSignal } from '../shared/lifecycle.js';
import { createLogger } from '../shared/logger.js';
import { openReadDb } from '../shared/read-db.js';
import { migrateReadDb } from '../projector/read-db-migrations.js';
import { buildQueryApp } from './app.js';

/** The query side as its own process: the read API on QUERY_PORT. */
async function main() {
  const config = loadConfig();
  const logger = createLogger('query-side', config);
  const db = await openReadDb(config.readDb);
  // The projector owns the schema; migrating here too (idempotent, locked) lets either start first.
  await migrateReadDb(db);
  const app = buildQueryApp({
    db,
    consistencyWaitMs: config.consistencyWaitMs,
    readApiTokens: config.readApiTokens,
    rateLimitPerMinute: config.rateLimitPerMinute,
    queryTimeoutMs: config.queryTimeoutMs,
    logger: { name: 'query-side', level: config.logLevel },
  });
  onShutdownSignal(logger, async () => {
    await app.close();
    await db.destroy();
  });
  await app.listen({ host: config.host, port: config.queryPort });
}

main().catch(exitOnStartupError('query-side'));
