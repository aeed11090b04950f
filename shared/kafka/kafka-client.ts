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

/** What kafkajs names a broker it cannot reach or a cluster that does not answer in time. */
const unreachableNames = new Set([
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

/** A broker's answers (a KafkaJSProtocolError's `type`) that say a broker or a partition's leader is not there for now. */
const unavailableTypes = new Set([
  'BROKER_NOT_AVAILABLE',
  'LEADER_NOT_AVAILABLE',
  'NOT_LEADER_FOR_PARTITION',
  'NOT_ENOUGH_REPLICAS',
  'NOT_ENOUGH_REPLICAS_AFTER_APPEND',
  'REQUEST_TIMED_OUT',
  'NETWORK_EXCEPTION',
]);

/** What a retrier of kafkajs throws when it gives up; what it gave up on is the `cause`. */
const givenUpNames = new Set(['KafkaJSNonRetriableError', 'KafkaJSNumberOfRetriesExceeded']);

/** `error`'s causes, the nearest first; a few at most, each once (a chain could loop). */
function causesOf(error: unknown): unknown[] {
  const causes: unknown[] = [];
  let cause = (error as { cause?: unknown } | null)?.cause;
  while (typeof cause === 'object' && cause !== null && !causes.includes(cause) && causes.length < 8) {
    causes.push(cause);
    cause = (cause as { cause?: unknown }).cause;
  }
  return causes;
}

function isUnreachable(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { name, type } = error as { name?: unknown; type?: unknown };
  if (typeof name === 'string' && unreachableNames.has(name)) return true;
  return name === 'KafkaJSProtocolError' && typeof type === 'string' && unavailableTypes.has(type);
}

/**
 * kafkajs marks its errors `retriable`, but gives up after its own retries with a
 * non-retriable KafkaJSNumberOfRetriesExceeded even when the cause is an outage.
 * A send that finds the cluster disconnected reconnects first, and when that
 * reconnection gives up (a broker down for more than a few seconds) the send fails
 * with a KafkaJSNonRetriableError whose cause is the connection error. Outages
 * become StoreUnavailableError so workers back off and try again; other errors (too
 * large, not authorised, ...) pass through and stop them loudly, wrapped or not.
 */
export function translateKafkaError(error: unknown, what: string): Error {
  const name = (error as { name?: unknown } | null)?.name;
  const retriable = (error as { retriable?: unknown } | null)?.retriable === true;
  const outage =
    retriable ||
    name === 'KafkaJSNumberOfRetriesExceeded' ||
    isUnreachable(error) ||
    (typeof name === 'string' && givenUpNames.has(name) && causesOf(error).some(isUnreachable));
  if (outage) {
    const detail = error instanceof Error ? error.message : String(name);
    return new StoreUnavailableError(`Kafka unavailable during ${what}: ${detail}`, { cause: error });
  }
  return error instanceof Error ? error : new Error(`Kafka ${what} failed`, { cause: error });
}
