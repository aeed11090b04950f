import type { Kafka, Producer } from 'kafkajs';
import type { Logger } from 'pino';
import { translateKafkaError } from '../../shared/kafka/kafka-client.js';
import { onceUntilFailure } from '../../shared/retry.js';
import { keyPartitioner } from './key-partitioner.js';
import type { EventPublisher, OutboundMessage } from './publisher.js';

/**
 * The most bytes one send carries. kafkajs puts a send's messages for one partition in
 * one record batch, and a broker refuses a batch over its `max.message.bytes` (1 MB by
 * default) for good: a relay batch of large events (RELAY_BATCH_SIZE up to 10,000) would
 * stop the relay on it at every start. Sends of at most this many bytes stay under the
 * default whatever the partitioning.
 */
export const maxSendBytes = 512 * 1024;

/** Consecutive runs of `messages` of at most `limit` bytes each (a larger message alone). */
export function inSendSizedRuns(messages: readonly OutboundMessage[], limit = maxSendBytes): OutboundMessage[][] {
  const runs: OutboundMessage[][] = [];
  let run: OutboundMessage[] = [];
  let bytes = 0;
  for (const m of messages) {
    let size = Buffer.byteLength(m.key) + Buffer.byteLength(m.value) + 64;
    for (const [name, value] of Object.entries(m.headers)) size += Buffer.byteLength(name) + Buffer.byteLength(value) + 8;
    if (run.length > 0 && bytes + size > limit) {
      runs.push(run);
      run = [];
      bytes = 0;
    }
    run.push(m);
    bytes += size;
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

/**
 * Publishes with an idempotent producer (acks from all in-sync replicas, one
 * request in flight per broker), so retries inside kafkajs neither duplicate nor
 * reorder a partition's messages.
 */
export function kafkaPublisher(kafka: Kafka, topic: string, options: { logger?: Logger } = {}): EventPublisher {
  let pinned: number | undefined;
  let seen: number | undefined;
  let warnedAt: number | undefined;
  const producer: Producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    // murmur2 on the key, as the Java client and kafkajs's DefaultPartitioner partition: other producers of these keys agree.
    createPartitioner: keyPartitioner({
      pinned: () => pinned,
      seen(count) {
        seen = count;
        if (pinned !== undefined && count !== pinned && warnedAt !== count) {
          warnedAt = count;
          options.logger?.warn(
            { topic, partitions: count, pinned },
            count > pinned
              ? `the topic has ${count} partitions; the relay goes on publishing over the first ${pinned}, which it began with, so that every user's events stay in one partition, in order (to use more partitions, see the README on a topic's partitions)`
              : `the topic has ${count} partitions, fewer than the ${pinned} the relay began with (was it created again?); publishing over ${count}`,
          );
        }
      },
    }),
  });
  const connect = onceUntilFailure(() => producer.connect());
  return {
    async publish(messages) {
      if (messages.length === 0) return;
      try {
        await connect();
        // One run at a time, in order: a run is acknowledged before the next goes (a retry of the
        // whole batch republishes the runs already sent: duplicates, in order, as after any retry).
        for (const run of inSendSizedRuns(messages)) {
          await producer.send({
            topic,
            acks: -1,
            messages: run.map((m) => ({ key: m.key, value: m.value, headers: m.headers })),
          });
        }
      } catch (error) {
        throw translateKafkaError(error, 'publish');
      }
    },
    async close() {
      await producer.disconnect();
    },
    partitions: {
      seen: () => seen,
      pin(count) {
        pinned = count;
      },
    },
  };
}
