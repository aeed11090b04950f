import type { Kafka, Producer } from 'kafkajs';
import { translateKafkaError } from '../../shared/kafka/kafka-client.js';
import { keyPartitioner } from './key-partitioner.js';
import type { EventPublisher } from './publisher.js';

/**
 * Publishes with an idempotent producer (acks from all in-sync replicas, one
 * request in flight per broker), so retries inside kafkajs neither duplicate nor
 * reorder a partition's messages.
 */
export function kafkaPublisher(kafka: Kafka, topic: string): EventPublisher {
  const producer: Producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    // murmur2 on the key, as the Java client and kafkajs's DefaultPartitioner partition: other producers of these keys agree.
    createPartitioner: keyPartitioner,
  });
  let connected: Promise<void> | undefined;
  const connect = () => (connected ??= producer.connect().catch((error: unknown) => {
    connected = undefined;
    throw error;
  }));
  return {
    async publish(messages) {
      if (messages.length === 0) return;
      try {
        await connect();
        await producer.send({
          topic,
          acks: -1,
          messages: messages.map((m) => ({ key: m.key, value: m.value, headers: m.headers })),
        });
      } catch (error) {
        throw translateKafkaError(error, 'publish');
      }
    },
    async close() {
      await producer.disconnect();
    },
  };
}
