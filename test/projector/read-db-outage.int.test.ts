import { testVault } from '../support/vault.js';
import { pino } from 'pino';
import t from 'tap';
import { userProjector } from '../../projector/projector.js';
import { eventStoreFeed, globalLogSource } from '../../shared/event-feed/event-store-feed.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { buildQueryApp } from '../../query-side/app.js';
import { commandsOver, expectedRows, seedUsers, tableRows, waitFor } from '../support/seed.js';
import { mariadbBehindProxy } from '../support/mariadb-behind-proxy.js';

/**
 * MariaDB goes away under a running projector (a proxy in front of it is cut):
 * the projector pauses, logs the outage once, and resumes from its checkpoint
 * when MariaDB is back, losing nothing; the read API answers 503 meanwhile.
 */
void t.test('a MariaDB outage pauses the projector, which resumes without loss', async (t) => {
  // Fails with advice (or skips, if MARIADB_OPTIONAL=1) when MariaDB is not there.
  const proxied = await mariadbBehindProxy(t);
  if (!proxied) return;
  const { proxy, db } = proxied;

  const warnings: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void warnings.push(JSON.parse(line).msg as string) });
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  const projector = userProjector({ db, feed: eventStoreFeed(store, { vault: testVault, batchSize: 20 }), logger });
  void projector.start();
  t.teardown(() => projector.stop());
  const query = buildQueryApp({ db, consistencyWaitMs: 500 });
  t.teardown(() => query.close());

  await seedUsers(commands, 10, 'before');
  const head = async () => (await store.readAll({ maxCount: 100_000 })).at(-1)!.position.toString();
  await waitFor(async () => projector.status().checkpoints[globalLogSource] === (await head()), 10_000, 'first batch');

  proxy.cut();
  await seedUsers(commands, 10, 'during');
  await waitFor(() => !projector.status().readDbReachable, 10_000, 'projector to notice the outage');
  const health = await query.inject({ url: '/health' });
  t.equal(health.statusCode, 503, 'the read API reports the outage');
  const read = await query.inject({ url: '/users?limit=1' });
  t.equal(read.statusCode, 503, 'reads answer 503, not 500');
  t.equal(read.headers['retry-after'], '1');

  await new Promise((resolve) => setTimeout(resolve, 1500));
  proxy.restore();
  await waitFor(async () => projector.status().checkpoints[globalLogSource] === (await head()), 20_000, 'resume');
  t.ok(projector.status().readDbReachable, 'back to normal');
  t.same(await tableRows(db), await expectedRows(store), 'nothing lost, nothing doubled');
  t.equal(warnings.filter((m) => m.includes('unavailable')).length, 1, 'the outage was logged once, not per retry');
  t.equal(warnings.filter((m) => m.includes('resumed')).length, 1, 'and its end once');
});

void t.test('an idle projector reports a MariaDB outage, and its end, without a batch to apply', async (t) => {
  const proxied = await mariadbBehindProxy(t);
  if (!proxied) return;
  const { proxy, db } = proxied;
  const messages: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void messages.push(JSON.parse(line).msg as string) });
  const store = inMemoryEventStore();
  await seedUsers(commandsOver(store), 3, 'idle');
  const projector = userProjector({ db, feed: eventStoreFeed(store, { vault: testVault, batchSize: 20 }), logger, housekeepingMs: 100 });
  void projector.start();
  t.teardown(() => projector.stop());
  const head = async () => (await store.readAll({ maxCount: 100_000 })).at(-1)!.position.toString();
  await waitFor(async () => projector.status().checkpoints[globalLogSource] === (await head()), 10_000, 'the projector to catch up');

  // No writes from here on: nothing but the housekeeping touches the read DB.
  proxy.cut();
  await waitFor(() => !projector.status().readDbReachable, 10_000, 'the idle projector to notice the outage');
  proxy.restore();
  await waitFor(() => projector.status().readDbReachable, 10_000, 'and its end');
  t.equal(messages.filter((m) => m.includes('unavailable')).length, 1, 'the outage logged once');
  t.equal(messages.filter((m) => m.includes('back')).length, 1, 'and its end once');
});
