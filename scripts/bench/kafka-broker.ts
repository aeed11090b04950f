import { startKafkaTestBroker } from '../../test/support/kafka-test-broker.js';

/**
 * The Kafka test broker as a process of its own, for `npm run bench:kafka`, with
 * the topics BENCH_TOPICS names (`name:partitions,...`): prints its bootstrap
 * address once listening; SIGTERM stops it.
 */
const topics = (process.env.BENCH_TOPICS ?? 'users.events.v1:6').split(',').map((spec) => {
  const [name, partitions] = spec.split(':');
  return { name: name!, partitions: Number(partitions ?? 1) };
});
const broker = await startKafkaTestBroker({ topics });
process.stdout.write(`${broker.brokers.join(',')}\n`);
process.on('SIGTERM', () => void broker.stop().then(() => process.exit(0)));
