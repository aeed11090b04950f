import { loadConfig } from '../shared/config.js';
import { ConfigError } from '../shared/errors.js';
import { openEventStore } from '../shared/event-store/open-event-store.js';
import { createKafka } from '../shared/kafka/kafka-client.js';
import { exitOnStartupError, onShutdownSignal, reportReady } from '../shared/lifecycle.js';
import { openConfiguredVault } from '../shared/personal-data/open-vault.js';
import { startTracing } from '../shared/tracing.js';
import { createLogger } from '../shared/logger.js';
import { kafkaPublisher } from './relay/kafka-publisher.js';
import { eventRelay } from './relay/relay.js';
import { relayMetrics } from './relay/relay-metrics.js';
import { createMetricsRegistry, startOpsServer } from '../shared/metrics.js';

/** The relay as its own process: the event store's user events to Kafka. Needs KAFKA_BROKERS. */
async function main() {
  await startTracing('relay');
  const config = loadConfig();
  if (!config.kafka) throw new ConfigError([{ field: 'KAFKA_BROKERS', message: 'the relay needs Kafka brokers' }]);
  const logger = createLogger('relay', config);
  const store = openEventStore(config);
  const { vault, keyStore } = await openConfiguredVault(config);
  const kafka = createKafka({ brokers: config.kafka.brokers, clientId: `${config.kafka.clientId}-relay`, logger });
  const publisher = kafkaPublisher(kafka, config.kafka.topic, { logger });
  const registry = createMetricsRegistry('relay');
  const metrics = relayMetrics(registry, { store, positionsCountEvents: !config.eventStore.url });
  const relay = eventRelay({
    store,
    vault,
    publisher,
    topic: config.kafka.topic,
    logger,
    leaseMs: config.relayLeaseMs,
    owner: config.relayId,
    batchSize: config.relayBatchSize,
    onPublished: (messages, seconds) => metrics.onPublished(messages, seconds),
  });
  metrics.watch(relay);
  const ops = await startOpsServer({ host: config.host, port: config.relayMetricsPort, registry, ready: () => metrics.readiness(), logger });
  onShutdownSignal(logger, async () => {
    await relay.stop();
    await ops.close();
    await publisher.close();
    await store.close();
    await keyStore.close();
  });
  relay.start().catch((error: unknown) => {
    logger.fatal({ err: error }, 'relay stopped on an error it cannot retry');
    process.exit(1);
  });
  reportReady('relay');
}

main().catch(exitOnStartupError('relay'));
