import { testVault } from '../support/vault.js';
import { pino } from 'pino';
import t from 'tap';
import { buildCommandApp } from '../../command-side/app.js';
import { eventRelay } from '../../command-side/relay/relay.js';
import { relayMetrics } from '../../command-side/relay/relay-metrics.js';
import { projectorMetrics } from '../../projector/projector-metrics.js';
import { notStartedStatus, userProjector } from '../../projector/projector.js';
import { kafkaFeed, partitionSource } from '../../shared/event-feed/kafka-feed.js';
import type { FeedBatch } from '../../shared/event-feed/port.js';
import { createKafka } from '../../shared/kafka/kafka-client.js';
import { startKafkaTestBroker } from '../support/kafka-test-broker.js';
import { relayToKafka } from '../support/kafka-relay.js';
import { buildQueryApp } from '../../query-side/app.js';
import { StoreUnavailableError } from '../../shared/errors.js';
import { eventStoreFeed, globalLogSource } from '../../shared/event-feed/event-store-feed.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { commitDurationBuckets } from '../../shared/event-store/writer-metrics.js';
import { sample } from '../../scripts/bench/prometheus-text.js';
import { createMetricsRegistry, startOpsServer } from '../../shared/metrics.js';
import { openEmbeddedStore } from '../support/event-stores.js';
import { readDbsUnderTest } from '../support/read-dbs.js';
import { commandsOver, seedUsers, waitFor } from '../support/seed.js';

const logger = pino({ level: 'silent' });

/** A batch as the projector's metrics see it: per source, when its last event in the batch entered it. */
const appliedBatch = (lastEventAt: Record<string, number>): FeedBatch => ({ events: [], checkpoints: new Map(), lastEventAt: new Map(Object.entries(lastEventAt)) });

void t.test('the write API: /metrics with request latencies by route pattern, process metrics, and probes', async (t) => {
  const store = inMemoryEventStore();
  const app = buildCommandApp({ commands: commandsOver(store), store });
  t.teardown(() => app.close());
  const created = await app.inject({ method: 'POST', url: '/users', payload: { name: 'Ada', email: 'ada@example.org' } });
  const { id } = created.json<{ id: string }>();
  await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'Ada L.' } });
  await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 42 } });
  await app.inject({ method: 'GET', url: '/nowhere' });

  const metrics = await app.inject({ url: '/metrics' });
  t.equal(metrics.statusCode, 200);
  t.match(metrics.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  const text = metrics.body;
  t.equal(sample(text, 'http_request_duration_seconds_count', { method: 'POST', route: '/users', status_code: '201' }), 1);
  t.equal(sample(text, 'http_request_duration_seconds_count', { method: 'PUT', route: '/users/:id/name', status_code: '200' }), 1);
  t.equal(sample(text, 'http_request_duration_seconds_count', { method: 'PUT', route: '/users/:id/name', status_code: '400' }), 1);
  t.equal(sample(text, 'http_request_duration_seconds_count', { route: 'unmatched', status_code: '404' }), 1, 'unknown paths share one series');
  t.notOk(text.includes(id), 'no user id in any label');
  t.ok(sample(text, 'http_request_duration_seconds_bucket', { route: '/users', le: '+Inf' }) === 1, 'a histogram, with buckets');
  for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
    t.not(sample(text, name, { role: 'command-side' }), undefined, `${name}, labelled with the role`);
  }

  const busyBefore = sample(text, 'users_event_loop_busy_seconds_total', { role: 'command-side' })!;
  t.ok(busyBefore > 0, `the event loop's busy time since the process started: ${busyBefore} s`);
  const spinUntil = performance.now() + 60;
  while (performance.now() < spinUntil); // 60 ms in one callback: busy time, not waiting
  const busyAfter = sample((await app.inject({ url: '/metrics' })).body, 'users_event_loop_busy_seconds_total', { role: 'command-side' })!;
  t.ok(busyAfter - busyBefore >= 0.05, `the loop's busy time grew by ${(busyAfter - busyBefore).toFixed(3)} s over a 60 ms busy callback`);

  t.same((await app.inject({ url: '/health/live' })).json(), { status: 'ok' });
  t.equal((await app.inject({ url: '/health/ready' })).statusCode, 200);
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, '/health keeps working');

  const down: EventStore = { ...store, readAll: () => Promise.reject(new StoreUnavailableError('down')) };
  const unready = buildCommandApp({ commands: commandsOver(down), store: down });
  t.teardown(() => unready.close());
  const ready = await unready.inject({ url: '/health/ready' });
  t.equal(ready.statusCode, 503, 'not ready while the event store does not answer');
  t.match(ready.json(), { status: 'unavailable', eventStore: 'down' });
  t.equal((await unready.inject({ url: '/health/live' })).statusCode, 200, 'but alive: a restart would not help');
});

void t.test("the write API on the embedded store: its writer's commits, grouping, busy time and commit times", async (t) => {
  const store = await openEmbeddedStore(t);
  const registry = createMetricsRegistry('command-side');
  const app = buildCommandApp({ commands: commandsOver(store), store, metrics: registry });
  t.teardown(() => app.close());
  const series = async () => {
    const text = (await app.inject({ url: '/metrics' })).body;
    return ['commits', 'commit_appends', 'commit_seconds'].map((name) => sample(text, `users_event_store_${name}_total`, { role: 'command-side' }));
  };
  t.same(await series(), [0, 0, 0], 'exported before the first append');
  const registered = await Promise.all(
    ['ada', 'grace', 'edsger'].map((name) => app.inject({ method: 'POST', url: '/users', payload: { name, email: `${name}@example.org` } })),
  );
  t.same(registered.map((r) => r.statusCode), [201, 201, 201]);
  const [commits, appends, seconds] = (await series()) as [number, number, number];
  const stats = store.writerStats!();
  t.same([commits, appends, seconds], [stats.groups, stats.appends, stats.seconds], "the writer's own counts, read when scraped");
  t.ok(commits >= 1 && commits <= appends, `${appends} appends in ${commits} transactions`);
  t.ok(seconds > 0, `${seconds} s in them`);
  const again = (await series()) as [number, number, number];
  t.same(again, [commits, appends, seconds], 'a second scrape with nothing appended adds nothing');
  await app.inject({ method: 'POST', url: '/users', payload: { name: 'Alan', email: 'alan@example.org' } });
  const [commitsAfter, appendsAfter] = (await series()) as [number, number];
  t.equal(commitsAfter, commits + 1, 'one more registration, one more transaction');
  t.ok(appendsAfter > appends);

  // The same transactions' times as a histogram: one observation per commit, summing to the busy time.
  const text = (await app.inject({ url: '/metrics' })).body;
  const stats2 = store.writerStats!();
  const histogram = (suffix: string, labels: Record<string, string> = {}) =>
    sample(text, `users_event_store_commit_duration_seconds${suffix}`, { role: 'command-side', ...labels });
  t.equal(histogram('_count'), stats2.groups, 'one observation per transaction');
  t.ok(Math.abs(histogram('_sum')! - stats2.seconds) < 1e-9, `its sum is the writer's busy time (${histogram('_sum')} s)`);
  const buckets = commitDurationBuckets.map((le) => histogram('_bucket', { le: String(le) })!);
  t.ok(buckets.every((count, i) => count >= (buckets[i - 1] ?? 0)), `cumulative buckets: ${buckets.join(' ')}`);
  t.equal(histogram('_bucket', { le: '+Inf' }), stats2.groups);

  // Closing the app stops its observing: a store outlives the apps built over it.
  await app.close();
  const other = buildCommandApp({ commands: commandsOver(store), store });
  t.teardown(() => other.close());
  await other.inject({ method: 'POST', url: '/users', payload: { name: 'Barbara', email: 'barbara@example.org' } });
  const otherText = (await other.inject({ url: '/metrics' })).body;
  t.equal(
    sample(otherText, 'users_event_store_commit_duration_seconds_count', { role: 'command-side' }),
    1,
    "a new app's histogram counts from its start: the transaction it saw",
  );
  const closedCount = sample(await registry.metrics(), 'users_event_store_commit_duration_seconds_count', { role: 'command-side' });
  t.equal(closedCount, stats2.groups, "the closed app's histogram heard nothing after it closed");
});

void t.test('the write API over a store without a writer of its own (in memory, as on EventStoreDB) exports no writer metrics', async (t) => {
  const store = inMemoryEventStore();
  const app = buildCommandApp({ commands: commandsOver(store), store });
  t.teardown(() => app.close());
  const text = (await app.inject({ url: '/metrics' })).body;
  t.notOk(text.includes('users_event_store_'), 'no users_event_store_ series');
});

void t.test('the read API: /metrics and probes', async (t) => {
  const { db } = await readDbsUnderTest[0]!.open(t);
  const app = buildQueryApp({ db, consistencyWaitMs: 100 });
  t.teardown(() => app.close());
  await app.inject({ url: '/users/0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11' });
  const text = (await app.inject({ url: '/metrics' })).body;
  t.equal(sample(text, 'http_request_duration_seconds_count', { method: 'GET', route: '/users/:id', status_code: '404', role: 'query-side' }), 1);
  t.equal((await app.inject({ url: '/health/live' })).statusCode, 200);
  t.match((await app.inject({ url: '/health/ready' })).json(), { status: 'ok', readDb: 'up' });
});

void t.test('the projector: events applied, batches, lag in events and seconds, quarantine, on its own port', async (t) => {
  const { db } = await readDbsUnderTest[0]!.open(t);
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  await seedUsers(commands, 5);
  const registry = createMetricsRegistry('projector');
  const metrics = projectorMetrics(registry, { headPosition: () => store.headPosition!() });
  const feed = eventStoreFeed(store, { vault: testVault, batchSize: 100 });
  const projector = userProjector({ db, feed, logger, onBatch: metrics.onBatch });
  metrics.watch(projector);
  const ops = await startOpsServer({ host: '127.0.0.1', port: 0, registry, ready: () => metrics.readiness(db, 60_000), logger });
  t.teardown(() => ops.close());
  const scrape = async () => (await fetch(`http://127.0.0.1:${ops.port}/metrics`)).text();

  const head = async () => (await store.headPosition!())!.toString();
  const done = projector.start();
  await waitFor(async () => projector.status().checkpoints[globalLogSource] === (await head()), 10_000, 'caught up');
  let text = await scrape();
  const logLength = Number(await head());
  t.equal(sample(text, 'users_projector_events_applied_total'), logLength, 'every event of the log counted once');
  t.ok(sample(text, 'users_projector_batches_applied_total')! >= 1);
  t.ok(sample(text, 'users_projector_batch_duration_seconds_count')! >= 1);
  t.equal(sample(text, 'users_projector_lag_events', { source: globalLogSource }), 0, 'caught up: nothing behind');
  t.equal(sample(text, 'users_projector_lag_seconds'), 0);
  t.equal(sample(text, 'users_projector_parked_events', { state: 'failed' }), 0);
  t.equal(sample(text, 'users_projector_read_db_up'), 1);
  t.equal((await fetch(`http://127.0.0.1:${ops.port}/health/ready`)).status, 200);
  t.equal((await fetch(`http://127.0.0.1:${ops.port}/health/live`)).status, 200);
  t.equal((await fetch(`http://127.0.0.1:${ops.port}/elsewhere`)).status, 404);

  // Stopped, it falls behind: the lag shows it, in events and in seconds, and it is not ready past the bound.
  await projector.stop();
  await done;
  await new Promise((resolve) => setTimeout(resolve, 20));
  await seedUsers(commands, 2, 'later');
  text = await scrape();
  t.equal(sample(text, 'users_projector_lag_events', { source: globalLogSource }), Number(await head()) - logLength);
  t.ok(sample(text, 'users_projector_lag_seconds')! > 0, 'behind in time too');
  const notReady = await fetch(`http://127.0.0.1:${ops.port}/health/ready`);
  t.equal(notReady.status, 503, 'a stopped projector is not ready');
  t.match(await notReady.json(), { status: 'unavailable', running: false });
});

void t.test('the relay: events published, lease held, lag in events and in seconds, through a broker outage', async (t) => {
  const store = inMemoryEventStore();
  await seedUsers(commandsOver(store), 3);
  const registry = createMetricsRegistry('relay');
  const metrics = relayMetrics(registry, { store, positionsCountEvents: true });
  const acknowledged: unknown[] = [];
  let brokerDown = false;
  let keysDown = false;
  const relay = eventRelay({
    store,
    vault: {
      ...testVault,
      open: ((events, options) => (keysDown ? Promise.reject(new StoreUnavailableError('key store unavailable')) : testVault.open(events, options))),
    },
    publisher: {
      publish: (messages) => (brokerDown ? Promise.reject(new StoreUnavailableError('broker unavailable')) : Promise.resolve(void acknowledged.push(...messages))),
      close: () => Promise.resolve(),
    },
    topic: 'users.events.v1',
    logger,
    leaseMs: 60_000,
    batchSize: 100,
    onPublished: metrics.onPublished,
  });
  metrics.watch(relay);
  void relay.start();
  t.teardown(() => relay.stop());
  const userEvents = (await store.readAll({ maxCount: 1000 })).filter((e) => e.streamId.startsWith('user-'));
  await waitFor(() => relay.status().position === userEvents.at(-1)!.position.toString(), 5000, 'relay caught up');
  const text = await registry.metrics();
  t.equal(sample(text, 'users_relay_events_published_total'), userEvents.length);
  t.equal(sample(text, 'users_relay_publishing'), 1);
  t.ok(sample(text, 'users_relay_batch_duration_seconds_count')! >= 1);
  t.ok(Number(await store.headPosition!()) > Number(relay.status().position), 'the log goes on past the resume point: the lease records');
  t.equal(sample(text, 'users_relay_lag_events'), 0, 'which are not lag: caught up');
  t.equal(sample(text, 'users_relay_lag_seconds'), 0);
  t.match(await metrics.readiness(), { ready: true, detail: { role: 'publishing' } });

  brokerDown = true;
  await seedUsers(commandsOver(store), 1, 'outage');
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const during = await registry.metrics();
  t.ok(sample(during, 'users_relay_lag_seconds')! >= 1, `behind in time while the broker is down (${sample(during, 'users_relay_lag_seconds')} s)`);
  t.ok(sample(during, 'users_relay_lag_events')! >= 1, `and in events (${sample(during, 'users_relay_lag_events')})`);
  brokerDown = false;
  await waitFor(async () => sample(await registry.metrics(), 'users_relay_lag_seconds') === 0, 10_000, 'the lag to end with the outage');
  t.equal(sample(await registry.metrics(), 'users_relay_lag_events'), 0);

  keysDown = true;
  await seedUsers(commandsOver(store), 1, 'keys');
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const keysAway = await registry.metrics();
  t.ok(sample(keysAway, 'users_relay_lag_seconds')! >= 1, `behind in time while the key store is down (${sample(keysAway, 'users_relay_lag_seconds')} s)`);
  t.ok(sample(keysAway, 'users_relay_lag_events')! >= 1, 'and in events');
  keysDown = false;
  await waitFor(async () => sample(await registry.metrics(), 'users_relay_lag_seconds') === 0, 10_000, 'the lag to end with the key store back');
});

void t.test("the projector through its source's outage: the lag counts from the last moment the read model was known whole, readiness follows", async (t) => {
  const { db } = await readDbsUnderTest[0]!.open(t);
  let clock = 1_000_000;
  let source: 'up' | 'refuses' | 'hangs' = 'up';
  let head = 10n;
  const registry = createMetricsRegistry('projector');
  const metrics = projectorMetrics(registry, {
    now: () => clock,
    sourceReadTimeoutMs: 50,
    headPosition: () =>
      source === 'up' ? Promise.resolve(head) : source === 'refuses' ? Promise.reject(new StoreUnavailableError('event store unavailable')) : new Promise<bigint>(() => {}),
  });
  metrics.watch({ status: () => ({ ...notStartedStatus(), running: true, checkpoints: { [globalLogSource]: '10' } }) });
  const scrape = () => registry.metrics();

  clock += 5_000;
  let text = await scrape();
  t.equal(sample(text, 'users_projector_source_up'), 1, 'the source answers');
  t.equal(sample(text, 'users_projector_lag_seconds'), 0, 'and nothing is behind: caught up at this moment');
  t.match(await metrics.readiness(db, 60_000), { ready: true, detail: { source: 'up', lagSeconds: 0 } });

  source = 'refuses';
  clock += 30_000;
  text = await scrape();
  t.equal(sample(text, 'users_projector_source_up'), 0, 'a source that refuses its read is down');
  t.equal(sample(text, 'users_projector_lag_seconds'), 30, 'known whole 30 s ago: 30 s behind, not 0');
  t.match(await metrics.readiness(db, 60_000), { ready: true, detail: { source: 'down', lagSeconds: 30 } }, 'still within the bound');
  clock += 31_000;
  t.match(await metrics.readiness(db, 60_000), { ready: false, detail: { source: 'down', lagSeconds: 61 } }, 'past the bound: not ready');

  source = 'hangs';
  clock += 1_000;
  const startedAt = process.hrtime.bigint();
  text = await scrape();
  t.ok(process.hrtime.bigint() - startedAt < 2_000_000_000n, 'a source that does not answer holds the scrape no longer than its timeout');
  t.equal(sample(text, 'users_projector_source_up'), 0, 'and is down');
  t.equal(sample(text, 'users_projector_lag_seconds'), 62);

  // Back, behind: the lag is the age of the last applied event again; then caught up.
  source = 'up';
  head = 12n;
  metrics.onBatch(appliedBatch({ [globalLogSource]: clock - 2_000 }), 0.001);
  text = await scrape();
  t.equal(sample(text, 'users_projector_source_up'), 1);
  t.equal(sample(text, 'users_projector_lag_events', { source: globalLogSource }), 2);
  t.equal(sample(text, 'users_projector_lag_seconds'), 2, 'behind: the age of the last applied event');
  head = 10n;
  t.match(await metrics.readiness(db, 60_000), { ready: true, detail: { source: 'up', lagSeconds: 0 } });

  // An event applied after the last whole look moves the moment forward.
  clock += 10_000;
  metrics.onBatch(appliedBatch({ [globalLogSource]: clock - 1_000 }), 0.001);
  source = 'refuses';
  clock += 4_000;
  t.equal(sample(await scrape(), 'users_projector_lag_seconds'), 5, 'the later of the last whole look and the last applied event');

  // A projector started behind: before its first batch the lag counts from its start, not 0.
  const fresh = projectorMetrics(createMetricsRegistry('projector'), { now: () => clock, sourceReadTimeoutMs: 50, headPosition: () => Promise.resolve(20n) });
  fresh.watch({ status: () => ({ ...notStartedStatus(), running: true, checkpoints: { [globalLogSource]: '10' } }) });
  clock += 3_000;
  t.match(await fresh.readiness(db, 60_000), { detail: { source: 'up', lagSeconds: 3 } }, 'behind before any batch: since its start');
  // Then a look that does not answer: the age of the last event it applied, though older than its start.
  fresh.onBatch(appliedBatch({ [globalLogSource]: clock - 7_200_000 }), 0.001);
  const silent = projectorMetrics(createMetricsRegistry('projector'), { now: () => clock, sourceReadTimeoutMs: 50, headPosition: () => Promise.reject(new Error('down')) });
  silent.watch({ status: () => ({ ...notStartedStatus(), running: true, checkpoints: {} }) });
  silent.onBatch(appliedBatch({ [globalLogSource]: clock - 7_200_000 }), 0.001);
  clock += 1_000;
  t.match(await silent.readiness(db, 60_000), { ready: false, detail: { source: 'down', lagSeconds: 7201 } }, 'two hours behind, not the second since its start');
});

void t.test('the projector on a quiet system: a write not yet applied is as old as the last look that found nothing behind, not as the last write', async (t) => {
  const { db } = await readDbsUnderTest[0]!.open(t);
  let clock = 1_000_000;
  let head = 10n;
  const registry = createMetricsRegistry('projector');
  const metrics = projectorMetrics(registry, { now: () => clock, sourceReadTimeoutMs: 50, headPosition: () => Promise.resolve(head) });
  metrics.watch({ status: () => ({ ...notStartedStatus(), running: true, checkpoints: { [globalLogSource]: '10' } }) });

  // The last write two hours ago, applied; a scrape finds nothing behind.
  metrics.onBatch(appliedBatch({ [globalLogSource]: clock - 7_200_000 }), 0.001);
  t.equal(sample(await registry.metrics(), 'users_projector_lag_seconds'), 0, 'caught up');

  // A second later a write enters the log, and a scrape and a probe land before its batch.
  clock += 1_000;
  head = 11n;
  const text = await registry.metrics();
  t.equal(sample(text, 'users_projector_lag_events', { source: globalLogSource }), 1, 'one event behind');
  t.equal(sample(text, 'users_projector_lag_seconds'), 1, 'whole a second ago: 1 s behind, not the two hours since the last write');
  t.match(await metrics.readiness(db, 60_000), { ready: true, detail: { source: 'up', lagSeconds: 1 } }, 'and ready');
});

void t.test('a Kafka projector: the lag in seconds is its furthest partition behind, each from its own last moment known whole', async (t) => {
  const { db } = await readDbsUnderTest[0]!.open(t);
  let clock = 1_000_000;
  const [p0, p1, p2] = [0, 1, 2].map((partition) => partitionSource('users.events.v1', partition)) as [string, string, string];
  let lag: Map<string, number> | undefined = new Map([
    [p0, 500],
    [p1, 0],
  ]);
  const registry = createMetricsRegistry('projector');
  const metrics = projectorMetrics(registry, {
    now: () => clock,
    sourceReadTimeoutMs: 50,
    sourceLag: () => (lag ? Promise.resolve(lag) : Promise.reject(new StoreUnavailableError('broker unavailable'))),
  });
  metrics.watch({ status: () => ({ ...notStartedStatus(), running: true }) });
  const lagSeconds = async () => sample(await registry.metrics(), 'users_projector_lag_seconds');
  clock += 3_600_000;

  // One batch from both partitions: partition 0's last event ten minutes old, partition 1's just written.
  metrics.onBatch(appliedBatch({ [p0]: clock - 600_000, [p1]: clock }), 0.001);
  t.equal(await lagSeconds(), 600, 'partition 0 ten minutes behind, however fresh partition 1 is');
  t.match(await metrics.readiness(db, 60_000), { ready: false, detail: { source: 'up', lagSeconds: 600 } }, 'not ready');
  // Then batches from partition 1 alone: partition 0 is as far behind as before.
  clock += 1_000;
  metrics.onBatch(appliedBatch({ [p1]: clock }), 0.001);
  t.equal(await lagSeconds(), 601, 'a later batch of another partition does not hide it');

  // Partition 0 caught up; a second later partition 1 falls behind: it counts from that look, not from its last event.
  lag = new Map([
    [p0, 0],
    [p1, 0],
  ]);
  t.equal(await lagSeconds(), 0, 'both caught up');
  clock += 1_000;
  lag = new Map([
    [p0, 0],
    [p1, 3],
  ]);
  t.equal(await lagSeconds(), 1);

  // A rebalance gives this member partition 2, whose offset in the read DB is still being read (NaN: not known).
  clock += 2_000;
  lag = new Map([
    [p0, 0],
    [p1, 0],
    [p2, NaN],
  ]);
  let text = await registry.metrics();
  t.equal(sample(text, 'users_projector_lag_events', { source: p2 }), undefined, 'no figure in events for it');
  t.equal(sample(text, 'users_projector_lag_seconds'), 2, 'not caught up: behind since the last look before it was taken on');
  clock += 60_000;
  t.match(await metrics.readiness(db, 60_000), { ready: false, detail: { lagSeconds: 62 } }, 'not ready while its offset is not known past the bound');
  lag = new Map([
    [p0, 0],
    [p1, 0],
    [p2, 4],
  ]);
  metrics.onBatch(appliedBatch({ [p2]: clock - 5_000 }), 0.001);
  t.equal(await lagSeconds(), 5, 'then the age of its last applied event');

  // Partition 0 handed to another member: its moments no longer count, even through an outage.
  clock += 1_000;
  lag = new Map([
    [p1, 0],
    [p2, 0],
  ]);
  text = await registry.metrics();
  t.equal(sample(text, 'users_projector_lag_events', { source: p0 }), undefined, "partition 0's series gone");
  t.equal(sample(text, 'users_projector_lag_seconds'), 0);
  metrics.onBatch(appliedBatch({ [p2]: clock }), 0.001);
  lag = undefined;
  clock += 10_000;
  t.match(await metrics.readiness(db, 60_000), { detail: { source: 'down', lagSeconds: 10 } }, 'through an outage, the time since the partitions it holds were last known whole');
});

void t.test('a Kafka projector with its broker stopped: source down, the lag grows, not ready; back with the broker', async (t) => {
  const { db } = await readDbsUnderTest[0]!.open(t);
  const topic = 'users.events.v1';
  const broker = await startKafkaTestBroker({ topics: [{ name: topic, partitions: 3 }] });
  t.teardown(() => broker.stop());
  const kafka = createKafka({ brokers: broker.brokers, clientId: 'test', logger });
  const store = inMemoryEventStore();
  const relayed = relayToKafka(t, store, kafka, topic, logger);
  const feed = kafkaFeed({ kafka, topic, groupId: 'projector-metrics-outage', logger, consumerConfig: { sessionTimeout: 3000, rebalanceTimeout: 3000, heartbeatInterval: 100, maxWaitTimeInMs: 200 } });
  const registry = createMetricsRegistry('projector');
  await t.rejects(feed.lag(), /has not joined its group yet/, 'before its consumer joins, the feed knows of no partitions: no figure, not "caught up"');
  const metrics = projectorMetrics(registry, { sourceLag: () => feed.lag(), sourceReadTimeoutMs: 500 });
  const projector = userProjector({ db, feed, logger, onBatch: metrics.onBatch });
  metrics.watch(projector);
  void projector.start();
  t.teardown(() => projector.stop());
  await seedUsers(commandsOver(store), 3);
  await waitFor(
    async () => (await metrics.readiness(db, 1000)).detail.lagSeconds === 0 && (await registry.metrics()).includes('users_projector_lag_events{source='),
    20_000,
    'caught up',
  );
  t.equal(sample(await registry.metrics(), 'users_projector_source_up'), 1);
  t.equal((await metrics.readiness(db, 1000)).ready, true);

  await broker.stop();
  await waitFor(async () => sample(await registry.metrics(), 'users_projector_source_up') === 0, 20_000, 'the broker seen down');
  await new Promise((resolve) => setTimeout(resolve, 1200));
  const during = await metrics.readiness(db, 1000);
  t.match(during, { ready: false, detail: { source: 'down' } }, 'not ready past the bound while the broker is down');
  t.ok((during.detail.lagSeconds as number) > 1, `behind in time (${String(during.detail.lagSeconds)} s), where the last batches said caught up`);

  await broker.restart();
  // kafkajs may restart the consumer more than once as the broker comes back (its group coordinator loading):
  // between such a restart and the consumer's join the source counts as down again, so both are awaited together.
  await waitFor(
    async () => (await metrics.readiness(db, 1000)).ready && sample(await registry.metrics(), 'users_projector_source_up') === 1,
    30_000,
    'ready again, the source up, with the broker back',
  );
  // Stopped here, while the broker is up: a consumer that crashed through the outage stops cleanly.
  await projector.stop();
  await relayed.stop();
});

void t.test("the Kafka feed's figures for the lag: each partition's own last message, and no figure for one whose offset is still being read", async (t) => {
  const topic = 'users.events.v1';
  const broker = await startKafkaTestBroker({ topics: [{ name: topic, partitions: 2 }] });
  t.teardown(() => broker.stop());
  const kafka = createKafka({ brokers: broker.brokers, clientId: 'test', logger });
  const [p0, p1] = [partitionSource(topic, 0), partitionSource(topic, 1)];
  const producer = kafka.producer();
  await producer.connect();
  const sentAt = [Date.now() - 600_000, Date.now() - 1_000];
  await producer.send({
    topic,
    messages: [
      { partition: 0, key: 'user-a', value: 'ten minutes old', timestamp: String(sentAt[0]) },
      { partition: 1, key: 'user-b', value: 'a second old', timestamp: String(sentAt[1]) },
    ],
  });
  await producer.disconnect();

  const feed = kafkaFeed({ kafka, topic, groupId: 'projector-metrics-partitions', logger, consumerConfig: { sessionTimeout: 3000, rebalanceTimeout: 3000, heartbeatInterval: 100, maxWaitTimeInMs: 200 } });
  t.teardown(() => feed.close());
  let readDbAnswers!: (checkpoints: Map<string, string>) => void;
  const readDb = new Promise<Map<string, string>>((resolve) => (readDbAnswers = resolve));
  // The read DB has no row for either partition: the feed reads it on the join, and it answers when told.
  const batches = feed.batches(new Map(), () => readDb)[Symbol.asyncIterator]();
  const first = batches.next();
  const lag = () => feed.lag().catch(() => undefined);
  await waitFor(async () => (await lag())?.size === 2, 20_000, 'the consumer to join, holding both partitions');
  const looking = (await lag())!;
  t.ok([p0, p1].every((source) => Number.isNaN(looking.get(source))), 'held, where the read DB holds them not yet known: no figure, not "caught up"');

  readDbAnswers(new Map());
  const lastEventAt = new Map<string, number>();
  for (let next = first; lastEventAt.size < 2; next = batches.next()) {
    const { value: batch } = await next;
    if (!batch) break;
    for (const [source, at] of batch.lastEventAt ?? []) lastEventAt.set(source, at);
    batch.applied?.();
  }
  t.same(Object.fromEntries(lastEventAt), { [p0]: sentAt[0], [p1]: sentAt[1] }, 'each partition with the time of its own last message');
  await waitFor(async () => [...((await lag()) ?? [])].every(([, events]) => events === 0), 10_000, 'nothing behind once both are applied');
  await feed.close();
  await batches.return?.(undefined);
});
