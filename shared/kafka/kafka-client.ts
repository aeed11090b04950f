import { Kafka, logLevel as kafkaLogLevel, type LogEntry, type logCreator } from 'kafkajs';
import type { Logger } from 'pino';
import { StoreUnavailableError } from '../errors.js';

/** kafkajs logs through the role's pino logger, at the same levels. */
function pinoLogCreator(logger: Logger): logCreator {
  return () =>
    ({ level, log }: LogEntry) => {
      const { message, ...extra } = log;
      if (level === kafkaLogLevel.ERROR) logger.error(extra, message);
      else if (level === kafkaLogLevel.WARN) logger.warn(extra, message);
      else if (level === kafkaLogLevel.INFO) logger.debug(extra, message);
      else logger.trace(extra, message);
    };
}

export function createKafka(options: { brokers: readonly string[]; clientId: string; logger: Logger }): Kafka {
  return new Kafka({
    clientId: options.clientId,
    brokers: [...options.brokers],
    connectionTimeout: 3000,
    requestTimeout: 10_000,
    // kafkajs retries on its own first; past that the caller's backoff takes over.
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 2000 },
    logLevel: kafkaLogLevel.INFO,
    logCreator: pinoLogCreator(options.logger),
  });
}

const outageNames = new Set([
  'KafkaJSNumberOfRetriesExceeded',
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSBrokerNotFound',
  'KafkaJSNoBrokerAvailableError',
  'KafkaJSMetadataNotLoaded',
  'KafkaJSTopicMetadataNotLoaded',
  'KafkaJSLockTimeout',
  'KafkaJSTimeout',
  'KafkaJSGroupCoordinatorNotFound',
]);

/**
 * kafkajs marks its errors `retriable`, but gives up after its own retries with a
 * non-retriable KafkaJSNumberOfRetriesExceeded even when the cause is an outage.
 * Outages become StoreUnavailableError so workers back off and try again; other
 * errors (too large, not authorised, ...) pass through and stop them loudly.
 */
export function translateKafkaError(error: unknown, what: string): Error {
  const name = (error as { name?: unknown } | null)?.name;
  const retriable = (error as { retriable?: unknown } | null)?.retriable === true;
  if ((typeof name === 'string' && outageNames.has(name)) || retriable) {
    const detail = error instanceof Error ? error.message : String(name);
    return new StoreUnavailableError(`Kafka unavailable during ${what}: ${detail}`, { cause: error });
  }
  return error instanceof Error ? error : new Error(`Kafka ${what} failed`, { cause: error });
}
