import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { userProjector } from '../../projector/projector.js';
import { kafkaFeed } from '../../shared/event-feed/kafka-feed.js';
import { createKafka } from '../../shared/kafka/kafka-client.js';
import { openReadDb } from '../../shared/read-db.js';
import { profilePhase, requiredEnv } from './stack.js';

/**
 * One projector run of `npm run bench:kafka`, in a process of its own started with
 * the projector role's Node options, as the role runs: from BENCH_TOPIC on
 * BENCH_BROKERS into the read DB at BENCH_READ_DB_URL (already migrated), until
 * BENCH_EVENTS events are applied. A long-running projector's code is compiled and
 * optimised; a fresh process's is not, so it first projects the same events into
 * BENCH_WARMUP_READ_DB_URL (another consumer group), untimed. Prints `ready` then,
 * starts on a line `go` on stdin, prints `{ seconds, transactions }` as JSON when
 * done (then a CPU profile of the run to BENCH_PROFILE_DIR/BENCH_PROFILE_NAME, when
 * set), then `stopped`, and exits.
 */
const events = Number(requiredEnv('BENCH_EVENTS'));
const logger = pino({ level: 'silent' });
const kafka = createKafka({ brokers: requiredEnv('BENCH_BROKERS').split(','), clientId: 'bench-projector', logger });
const topic = requiredEnv('BENCH_TOPIC');

/** Projects the topic from its start into the read DB at `url` with a new consumer group; seconds and transactions. */
async function project(url: string, groupId: string, profileName?: string) {
  // As the projector role opens it (`batchStatements`): its batches take two round trips.
  const db = await openReadDb({ client: 'mysql', url }, { batchStatements: true });
  await db.raw('SELECT 1');
  const projector = userProjector({ db, feed: kafkaFeed({ kafka, topic, groupId, logger }), logger });
  const profiling = await profilePhase(profileName && process.env.BENCH_PROFILE_DIR, profileName ?? '');
  const started = performance.now();
  let failure: Error | undefined;
  projector.start().catch((error: unknown) => (failure = error instanceof Error ? error : new Error('projector failed', { cause: error })));
  while (projector.status().eventsApplied < events && failure === undefined) await new Promise((resolve) => setTimeout(resolve, 5));
  if (failure !== undefined) throw failure;
  const outcome = { seconds: (performance.now() - started) / 1000, transactions: projector.status().batchesApplied };
  return {
    outcome,
    async finish() {
      await profiling.stop();
      await projector.stop();
      await db.destroy();
    },
  };
}

await (await project(requiredEnv('BENCH_WARMUP_READ_DB_URL'), `${requiredEnv('BENCH_GROUP')}-warm-up`)).finish();
process.stdout.write('ready\n');
for await (const line of createInterface({ input: process.stdin })) if (line.trim() === 'go') break;
const measured = await project(requiredEnv('BENCH_READ_DB_URL'), requiredEnv('BENCH_GROUP'), process.env.BENCH_PROFILE_NAME ?? 'projector.cpuprofile');
process.stdout.write(`${JSON.stringify(measured.outcome)}\n`);
await measured.finish();
process.stdout.write('stopped\n');
process.exit(0);
