import type { Kafka } from 'kafkajs';
import type { Logger } from 'pino';
import type { Test } from 'tap';
import { kafkaPublisher } from '../../command-side/relay/kafka-publisher.js';
import { eventRelay } from '../../command-side/relay/relay.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { testVault } from './vault.js';

/**
 * A relay publishing `store`'s events to `topic` with a producer of its own, stopped (relay,
 * then producer) by `stop()` or, at the latest, in `t`'s teardown.
 */
export function relayToKafka(t: Test, store: EventStore, kafka: Kafka, topic: string, logger: Logger): { stop(): Promise<void> } {
  const publisher = kafkaPublisher(kafka, topic);
  const relay = eventRelay({ store, vault: testVault, publisher, topic, logger, leaseMs: 3000, batchSize: 50 });
  void relay.start();
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      await relay.stop();
      await publisher.close();
    })());
  t.teardown(stop);
  return { stop };
}
