import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { esdbEventStore } from '../../shared/event-store/esdb-event-store.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { sqliteEventStore } from '../../shared/event-store/sqlite-event-store.js';
import { openReadDb } from '../../shared/read-db.js';
import { userStreamId } from '../../shared/user-events.js';
import { migrateReadDb } from '../../shared/read-model/migrations.js';
import { projectionName } from '../../shared/read-model/user-row.js';
import { parkedCounts } from '../../shared/read-model/dead-letters.js';
import { userDataRebuild } from '../../projector/rebuild.js';
import { pino } from 'pino';
import { loadConfig } from '../../shared/config.js';
import { openConfiguredVault } from '../../shared/personal-data/open-vault.js';
import { openedEventStore } from '../../shared/personal-data/opened-event-store.js';
import { startEsdbTestServer } from '../support/esdb-test-server.js';
import { startKafkaTestBroker } from '../support/kafka-test-broker.js';
import { freePort } from '../../scripts/free-port.js';
import { runScript, waitUntilHealthy, type RunningScript } from '../support/processes.js';
import { mariadbUrl, openUnlessAbsent } from '../support/read-dbs.js';
import { expectedRows, tableRows, waitFor } from '../support/seed.js';
import { seededRandom } from '../support/seeded-random.js';

/**
 * Chaos: writes at a steady rate (registrations, renames and now and then a
 * forget) while the command side, the projector and (with Kafka) the relay are
 * killed with SIGKILL at random moments and restarted. Then: every acknowledged
 * write is in the event store, the read model equals a fold of the whole log (so
 * nothing was lost or applied twice), every user with a UserForgotten in the log
 * has no key left and an erased row (even when the forget's request was killed
 * half-way), and consistency tokens issued before the kills are honoured. CHAOS_SECONDS sets the length, CHAOS_SEED
 * replays a run.
 */
const seconds = Number(process.env.CHAOS_SECONDS ?? 12);
const seed = Number(process.env.CHAOS_SEED ?? Date.now() % 1_000_000);
const writesPerSecond = 40;
const silent = pino({ level: 'silent' });

interface Acknowledged {
  id: string;
  revision: number;
  token: string;
  name: string;
}

interface Stack {
  env: Record<string, string>;
  roles: Record<string, string>;
  store: EventStore;
  readDb: Awaited<ReturnType<typeof openReadDb>>;
  /** With Kafka: how many messages were delivered more than once (killed relays republish). */
  duplicatesPublished?: () => number;
}

async function chaos(t: Test, stack: Stack) {
  const random = seededRandom(seed);
  const commandPort = await freePort();
  const queryPort = await freePort();
  const env = { ...stack.env, COMMAND_PORT: String(commandPort), QUERY_PORT: String(queryPort), RATE_LIMIT_PER_MINUTE: '0', LOG_LEVEL: 'error' };
  const write = `http://127.0.0.1:${commandPort}`;
  const read = `http://127.0.0.1:${queryPort}`;
  const running = new Map<string, RunningScript>();
  const start = (role: string) => running.set(role, runScript(t, stack.roles[role]!, env));
  for (const role of Object.keys(stack.roles)) start(role);
  await waitUntilHealthy(`${write}/health`, running.get('command-side')!);
  await waitUntilHealthy(`${read}/health`, running.get('query-side')!);

  // The stack's own key store, to read the log as its readers do.
  const { vault, keyStore } = await openConfiguredVault(loadConfig({ ...env }));
  t.teardown(() => keyStore.close());
  const log = openedEventStore(stack.store, vault);
  const forgotten = new Set<string>();
  const acknowledged: Acknowledged[] = [];
  const tokensBeforeKills: string[] = [];
  let kills = 0;
  let stop = false;
  const json = { 'content-type': 'application/json' };

  const writer = (async () => {
    for (let n = 0; !stop; n++) {
      await new Promise((resolve) => setTimeout(resolve, 1000 / writesPerSecond));
      const renaming = acknowledged.length > 0 && random() < 0.3;
      // Now and then, and every fifth write until one forget went through: a short run forgets someone too.
      const forgetting = !renaming && acknowledged.length > 0 && (random() < 0.05 || (forgotten.size === 0 && n % 5 === 4));
      const target = renaming || forgetting ? acknowledged[Math.floor(random() * acknowledged.length)]! : undefined;
      const name = `Chaos ${n}`;
      try {
        if (forgetting) {
          const response = await fetch(`${write}/users/${target!.id}/personal-data`, { method: 'DELETE' });
          if (response.ok) forgotten.add(target!.id);
          continue;
        }
        const response = target
          ? await fetch(`${write}/users/${target.id}/name`, { method: 'PUT', headers: json, body: JSON.stringify({ name }) })
          : await fetch(`${write}/users`, { method: 'POST', headers: json, body: JSON.stringify({ name, email: `chaos${n}.${seed}@example.org` }) });
        if (response.ok) {
          const body = (await response.json()) as { id: string; revision: number; consistencyToken: string };
          acknowledged.push({ id: body.id, revision: body.revision, token: body.consistencyToken, name });
          if (kills === 0) tokensBeforeKills.push(body.consistencyToken);
        }
      } catch {
        // the command side is down right now: not acknowledged, nothing to check
      }
    }
  })();

  const killable = Object.keys(stack.roles).filter((role) => role !== 'query-side');
  // Some tokens before the first kill, for the check that they are honoured after all of them.
  await waitFor(() => tokensBeforeKills.length >= 3, 20_000, 'writes acknowledged before the first kill');
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 300 + random() * 900));
    const role = killable[Math.floor(random() * killable.length)]!;
    await running.get(role)!.stop('SIGKILL');
    kills += 1;
    await new Promise((resolve) => setTimeout(resolve, 50 + random() * 400));
    start(role);
  }
  stop = true;
  await writer;
  await waitUntilHealthy(`${write}/health`, running.get('command-side')!);
  // A run whose forgets all met a killed command side forgets one now, so that the erasure checks below check something.
  if (forgotten.size === 0) {
    const target = acknowledged[0]!;
    const response = await fetch(`${write}/users/${target.id}/personal-data`, { method: 'DELETE' });
    t.equal(response.status, 200, 'a forget after the kills');
    forgotten.add(target.id);
  }

  // Every acknowledged write is durable (what a forget erased is there, unreadable).
  let missing = 0;
  const forgets = new Set<string>();
  for (const write of acknowledged) {
    const stored = await stack.store.readStream(userStreamId(write.id));
    if (stored.some((e) => e.type === 'UserForgotten')) {
      forgets.add(write.id);
      if (!stored[write.revision]) missing += 1;
      continue;
    }
    const events = await log.readStream(userStreamId(write.id));
    const name = (events[write.revision]?.data as { name?: string } | undefined)?.name;
    if (name !== write.name) missing += 1;
  }
  t.equal(missing, 0, `all ${acknowledged.length} acknowledged writes are in the event store`);

  // The read model converges to a fold of the whole log.
  const expected = await expectedRows(log);
  await waitFor(async () => JSON.stringify(await tableRows(stack.readDb)) === JSON.stringify(expected), 60_000, 'read model to converge');
  const rows = await tableRows(stack.readDb);
  const differences = Math.abs(rows.length - expected.length) + rows.filter((row, i) => JSON.stringify(row) !== JSON.stringify(expected[i])).length;
  t.same(rows, expected, `read model equals the fold of ${expected.length} users`);
  // And a fresh rebuild from the event store, compared row by row, agrees; nothing was parked on the way.
  // Forgotten, even where the request was killed half-way: no key left, the row erased.
  t.ok(forgets.size > 0, `${forgets.size} users forgotten`);
  for (const id of forgotten) t.ok(forgets.has(id), `forgotten ${id} has UserForgotten in the log`);
  let keysLeft = 0;
  for (const id of forgets) keysLeft += (await keyStore.get(vault.keyIdsOf(await stack.store.readStream(userStreamId(id))))).size;
  t.equal(keysLeft, 0, `no key is left of the ${forgets.size} users with UserForgotten in the log (${forgotten.size} forgets acknowledged)`);
  const erased = (await tableRows(stack.readDb)).filter((row) => forgets.has(row.ID_USER_DATA));
  t.ok(erased.every((row) => row.STATUS === 'forgotten' && row.NAME === '' && row.EMAIL === ''), 'their rows are erased');
  const rebuilt = await userDataRebuild({ vault, store: stack.store, db: stack.readDb, logger: silent }).run({ verify: true, dryRun: true });
  t.match(rebuilt.verification, { compared: expected.length, missing: 0, extra: 0, different: 0 }, 'a fresh rebuild finds no difference');
  t.same(await parkedCounts(stack.readDb, projectionName), { failed: 0, held: 0 }, 'nothing in quarantine');

  // Tokens from before the first kill are honoured after all the restarts.
  let honoured = 0;
  for (const token of tokensBeforeKills.slice(0, 20)) {
    const id = token.slice('user-'.length, token.lastIndexOf('@'));
    const response = await fetch(`${read}/users/${id}`, { headers: { 'consistency-token': token } });
    // A forgotten user's token is honoured with 410.
    if (response.status === 200 || response.status === 410) honoured += 1;
  }
  t.ok(tokensBeforeKills.length > 0, `${tokensBeforeKills.length} tokens from before the first kill`);
  t.equal(honoured, Math.min(20, tokensBeforeKills.length), 'consistency tokens from before the kills are honoured');
  t.ok(kills > 3, `${kills} kills`);
  const duplicates = stack.duplicatesPublished ? `, ${stack.duplicatesPublished()} duplicate deliveries absorbed` : '';
  t.comment(
    `chaos (seed ${seed}): ${kills} kills, ${acknowledged.length} writes acknowledged, ${forgets.size} users forgotten, ${expected.reduce((n, r) => n + r.VERSION + 1, 0)} user events verified, ${missing + differences} differences (fold), ${rebuilt.verification!.missing + rebuilt.verification!.extra + rebuilt.verification!.different} (rebuild)${duplicates}`,
  );
  for (const script of running.values()) await script.stop('SIGTERM');
}

void t.test('embedded stack: SQLite event store and read DB', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'users-chaos-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const readDb = await openReadDb({ client: 'sqlite', file: join(dataDir, 'queries.sqlite') });
  await migrateReadDb(readDb);
  const store = sqliteEventStore({ file: join(dataDir, 'events.sqlite') });
  t.teardown(async () => {
    await store.close();
    await readDb.destroy();
  });
  await chaos(t, {
    env: { DATA_DIR: dataDir },
    roles: { 'command-side': 'command-side/main.ts', projector: 'projector/main.ts', 'query-side': 'query-side/main.ts' },
    store,
    readDb,
  });
});

void t.test('production stack: EventStoreDB and Kafka test servers, MariaDB', async (t) => {
  if (!(await openUnlessAbsent(t, 'mariadb'))) return;
  const esdb = await startEsdbTestServer();
  const topic = 'users.events.v1';
  const kafka = await startKafkaTestBroker({ topics: [{ name: topic, partitions: 3 }] });
  const database = `queries_chaos_${randomBytes(4).toString('hex')}`;
  const readDbUrl = `${mariadbUrl.replace(/\/$/, '')}/${database}`;
  const keyStoreUrl = `${mariadbUrl.replace(/\/$/, '')}/keys_chaos_${randomBytes(4).toString('hex')}`;
  const readDb = await openReadDb({ client: 'mysql', url: readDbUrl });
  await migrateReadDb(readDb);
  const store = esdbEventStore({ connectionString: esdb.connectionString });
  const dataDir = await mkdtemp(join(tmpdir(), 'users-chaos-'));
  t.teardown(async () => {
    await store.close();
    await readDb.raw('DROP DATABASE IF EXISTS ??', [database]);
    await readDb.raw('DROP DATABASE IF EXISTS ??', [new URL(keyStoreUrl).pathname.slice(1)]);
    await readDb.destroy();
    await kafka.stop();
    await esdb.stop();
    await rm(dataDir, { recursive: true, force: true });
  });
  await chaos(t, {
    env: {
      DATA_DIR: dataDir,
      EVENTSTORE_URL: esdb.connectionString,
      KAFKA_BROKERS: kafka.brokers.join(','),
      KAFKA_TOPIC: topic,
      READ_DB_URL: readDbUrl,
      KEY_STORE_URL: keyStoreUrl,
      // Short lease: a killed relay's successor takes over within a second or two.
      RELAY_LEASE_MS: '1500',
    },
    roles: {
      'command-side': 'command-side/main.ts',
      relay: 'command-side/relay-main.ts',
      projector: 'projector/main.ts',
      'query-side': 'query-side/main.ts',
    },
    store,
    readDb,
    duplicatesPublished: () => {
      const keys = [0, 1, 2].flatMap((p) => kafka.records(topic, p).map((r) => JSON.parse(r.value?.toString() ?? '{}') as { eventId?: string }));
      return keys.length - new Set(keys.map((k) => k.eventId)).size;
    },
  });
});
