import { createRequire } from 'node:module';
import t, { type Test } from 'tap';
import { StoreUnavailableError } from '../../shared/errors.js';
import { translateKafkaError } from '../../shared/kafka/kafka-client.js';
import { isRetriable } from '../../shared/retry.js';

/**
 * What the relay makes of kafkajs's errors: an outage (StoreUnavailableError, retried
 * with backoff, nothing skipped) or a failure that stops it loudly. kafkajs wraps what
 * its retries gave up on, sometimes twice, so the outage may be a cause down the chain.
 */
const require = createRequire(import.meta.url);
// kafkajs's internals are CommonJS and untyped: required by path, typed here as far as used.
type KafkaError = Error & { retriable: boolean; cause?: unknown };
type KafkaErrorClass = new (e: unknown, options?: object) => KafkaError;
const errors = require('kafkajs/src/errors.js') as Record<
  'KafkaJSConnectionError' | 'KafkaJSNonRetriableError' | 'KafkaJSNumberOfRetriesExceeded' | 'KafkaJSRequestTimeoutError' | 'KafkaJSSASLAuthenticationError',
  KafkaErrorClass
>;
const { createErrorFromCode } = require('kafkajs/src/protocol/error.js') as { createErrorFromCode(code: number): KafkaError };
const createRetry = require('kafkajs/src/retry/index.js') as (options: object) => <T>(fn: () => Promise<T>) => Promise<T>;

const { KafkaJSConnectionError, KafkaJSNonRetriableError, KafkaJSNumberOfRetriesExceeded, KafkaJSRequestTimeoutError, KafkaJSSASLAuthenticationError } = errors;
const code = { UNKNOWN_TOPIC_OR_PARTITION: 3, LEADER_NOT_AVAILABLE: 5, BROKER_NOT_AVAILABLE: 8, MESSAGE_TOO_LARGE: 10, TOPIC_AUTHORIZATION_FAILED: 29 };
const refused = () => new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:9092', { broker: '127.0.0.1:9092', code: 'ECONNREFUSED' });

/**
 * What a send throws when `root` keeps failing the reconnection inside it: kafkajs's
 * own retriers, one (the cluster's connect) inside the other (the send's), as
 * `producer/sendMessages.js` nests them.
 */
async function sendGivingUpOn(root: () => Error): Promise<unknown> {
  const retrier = createRetry({ retries: 1, initialRetryTime: 1, maxRetryTime: 2 });
  const connect = () => retrier(() => Promise.reject(root()));
  return retrier(() => connect()).then(
    () => undefined,
    (error: unknown) => error,
  );
}

function assertOutage(t: Test, error: unknown) {
  const translated = translateKafkaError(error, 'publish');
  t.type(translated, StoreUnavailableError);
  t.ok(isRetriable(translated), 'retried with backoff');
  t.equal(translated.cause, error, 'what kafkajs said is kept as the cause');
}

function assertFatal(t: Test, error: unknown) {
  const translated = translateKafkaError(error, 'publish');
  t.equal(translated, error, 'passed through as it is');
  t.notOk(isRetriable(translated), 'not retried: it stops the relay');
}

void t.test('a broker down longer than the reconnection inside a send retries for: an outage', async (t) => {
  const error = (await sendGivingUpOn(refused)) as KafkaError;
  t.match(error, { name: 'KafkaJSNonRetriableError', retriable: false, cause: { name: 'KafkaJSConnectionError' } }, 'as kafkajs 2.2.4 wraps it');
  assertOutage(t, error);
  assertOutage(t, await sendGivingUpOn(() => new KafkaJSRequestTimeoutError('Request Produce(key: 0, version: 3) timed out', { broker: '127.0.0.1:9092' })));
  assertOutage(t, await sendGivingUpOn(() => createErrorFromCode(code.LEADER_NOT_AVAILABLE)));
  assertOutage(t, new KafkaJSNonRetriableError(createErrorFromCode(code.BROKER_NOT_AVAILABLE), { cause: createErrorFromCode(code.BROKER_NOT_AVAILABLE) }));
  // The wrapper's own cause chain, walked to its end.
  const root = refused();
  const exceeded = new KafkaJSNumberOfRetriesExceeded(root, { retryCount: 5, retryTime: 2000 });
  assertOutage(t, new KafkaJSNonRetriableError(exceeded, { cause: exceeded }));
});

void t.test('the outages kafkajs reports unwrapped stay outages', async (t) => {
  assertOutage(t, refused());
  assertOutage(t, new KafkaJSNumberOfRetriesExceeded(refused(), { retryCount: 5, retryTime: 2000 }));
  assertOutage(t, createErrorFromCode(code.LEADER_NOT_AVAILABLE));
});

void t.test('what no wait mends stops the relay, wrapped by kafkajs or not', async (t) => {
  assertFatal(t, createErrorFromCode(code.MESSAGE_TOO_LARGE));
  assertFatal(t, createErrorFromCode(code.TOPIC_AUTHORIZATION_FAILED));
  const unauthorised = createErrorFromCode(code.TOPIC_AUTHORIZATION_FAILED);
  assertFatal(t, new KafkaJSNonRetriableError(unauthorised, { cause: unauthorised }));
  const missing = createErrorFromCode(code.UNKNOWN_TOPIC_OR_PARTITION);
  assertFatal(t, new KafkaJSNonRetriableError(missing, { cause: missing }));
  assertFatal(t, await sendGivingUpOn(() => new KafkaJSSASLAuthenticationError('SASL PLAIN authentication failed')));
  // A chain that loops ends the walk.
  const looping = new KafkaJSNonRetriableError('looping');
  looping.cause = looping;
  assertFatal(t, looping);
});

void t.test('something thrown that is not an Error becomes one, still not retried', async (t) => {
  for (const thrown of ['broken', null, undefined, { name: 'KafkaJSNonRetriableError', cause: null }]) {
    const translated = translateKafkaError(thrown, 'publish');
    t.type(translated, Error);
    t.notOk(isRetriable(translated));
  }
});
