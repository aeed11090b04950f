import { loadConfig } from '../shared/config.js';
import { eventStoreFeed } from '../shared/event-feed/event-store-feed.js';
import { kafkaFeed } from '../shared/event-feed/kafka-feed.js';
import { createKafka } from '../shared/kafka/kafka-client.js';
import { openEventStore } from '../shared/event-store/open-event-store.js';
import { exitOnStartupError, onShutdownSignal, reportReady } from '../shared/lifecycle.js';
import { startTracing } from '../shared/tracing.js';
import { createLogger } from '../shared/logger.js';
import { liveProjectorCheckpointPages, openReadDb } from '../shared/read-db.js';
import { openConfiguredVault } from '../shared/personal-data/open-vault.js';
import { createMetricsRegistry, startOpsServer } from '../shared/metrics.js';
import { userProjector } from './projector.js';
import { projectorMetrics } from './projector-metrics.js';
import { migrateReadDb } from '../shared/read-model/migrations.js';

/** The projector as its own process: event store (or Kafka) into the read DB. */
async function main() {
  await startTracing('projector');
  const config = loadConfig();
  const logger = createLogger('projector', config);
  // Its batches send several statements per round trip on MariaDB (`projector/mariadb-batch.ts`); on the
  // embedded read DB it checkpoints in smaller steps, beside the event store's commits.
  const db = await openReadDb(config.readDb, { batchStatements: true, checkpointPages: liveProjectorCheckpointPages });
  await migrateReadDb(db);
  // With Kafka configured the projector consumes the topic; else it reads the event store's log.
  const store = config.kafka ? undefined : openEventStore(config);
  // From Kafka the events arrive opened (the relay opens them); from the log, the projector opens them.
  const keys = config.kafka ? undefined : await openConfiguredVault(config);
  const fromKafka = config.kafka
    ? kafkaFeed({
        kafka: createKafka({ brokers: config.kafka.brokers, clientId: `${config.kafka.clientId}-projector`, logger }),
        topic: config.kafka.topic,
        groupId: config.kafka.groupId,
        sessionTimeoutMs: config.kafka.sessionTimeoutMs,
        logger,
      })
    : undefined;
  const feed =
    fromKafka ??
    eventStoreFeed(store!, {
      batchSize: config.projectorBatchSize,
      vault: keys!.vault,
      onLiveChange: (live) => logger.info(live ? 'projector caught up with the log' : 'projector fell behind the log'),
      onKeyStoreRetry: (error, attempt) => {
        if (attempt === 0) logger.warn({ err: error }, 'key store unavailable; projector waiting');
      },
    });
  const registry = createMetricsRegistry('projector');
  // The lag in events: from the broker's high-water marks on Kafka; from the log's head where positions count
  // events (the embedded store; EventStoreDB's are byte offsets: behind or not, and the lag in seconds).
  const metrics = projectorMetrics(
    registry,
    fromKafka
      ? { sourceLag: () => fromKafka.lag() }
      : store?.headPosition
        ? { headPosition: () => store.headPosition!(), positionsCountEvents: !config.eventStore.url }
        : {},
  );
  const projector = userProjector({ db, feed, logger, maxAttempts: config.projectorMaxAttempts, onBatch: (batch, seconds) => metrics.onBatch(batch, seconds) });
  metrics.watch(projector);
  const ops = await startOpsServer({
    host: config.host,
    port: config.projectorMetricsPort,
    registry,
    ready: () => metrics.readiness(db, config.projectorReadyMaxLagMs),
    logger,
  });
  onShutdownSignal(logger, async () => {
    await projector.stop();
    await ops.close();
    await store?.close();
    await keys?.keyStore.close();
    await db.destroy();
  });
  projector.start().catch((error: unknown) => {
    logger.fatal({ err: error }, 'projector stopped on an error it cannot retry');
    process.exit(1);
  });
  reportReady('projector');
}

main().catch(exitOnStartupError('projector'));
