import { loadConfig } from '../shared/config.js';
import { exitOnStartupError, onShutdownSignal, reportReady } from '../shared/lifecycle.js';
import { startTracing } from '../shared/tracing.js';
import { createLogger, loggerOptions } from '../shared/logger.js';
import { openReadDb } from '../shared/read-db.js';
import { migrateReadDb } from '../shared/read-model/migrations.js';
import { buildQueryApp } from './app.js';

/** The query side as its own process: the read API on QUERY_PORT. */
async function main() {
  await startTracing('query-side');
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
    trustProxy: config.trustProxy,
    queryTimeoutMs: config.queryTimeoutMs,
    bodyLimitBytes: config.bodyLimitBytes,
    logger: loggerOptions('query-side', config),
  });
  onShutdownSignal(logger, async () => {
    await app.close();
    await db.destroy();
  });
  await app.listen({ host: config.host, port: config.queryPort });
  reportReady('query-side');
}

main().catch(exitOnStartupError('query-side'));
