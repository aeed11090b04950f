import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { openReadDb } from '../../shared/read-db.js';
import { startEsdbTestServer } from '../support/esdb-test-server.js';
import { startKafkaTestBroker } from '../support/kafka-test-broker.js';
import { freePort } from '../../scripts/free-port.js';
import { runScript, waitUntilHealthy } from '../support/processes.js';
import { mariadbUrl, openUnlessAbsent } from '../support/read-dbs.js';

/**
 * The production topology, every role its own process: command side -> EventStoreDB
 * (gRPC test server) -> relay -> Kafka (test broker) -> projector -> MariaDB -> query
 * side. Writes over HTTP become rows readable through the query API, read-your-writes.
 */
void t.test('four roles over EventStoreDB, Kafka and MariaDB', async (t) => {
  if (!(await openUnlessAbsent(t, 'mariadb'))) return;
  const esdb = await startEsdbTestServer();
  t.teardown(() => esdb.stop());
  const topic = 'users.events.v1';
  const kafka = await startKafkaTestBroker({ topics: [{ name: topic, partitions: 3 }] });
  t.teardown(() => kafka.stop());
  const database = `queries_prod_e2e_${randomBytes(4).toString('hex')}`;
  const readDbUrl = `${mariadbUrl.replace(/\/$/, '')}/${database}`;
  t.teardown(async () => {
    const db = await openReadDb({ client: 'mysql', url: readDbUrl });
    await db.raw('DROP DATABASE IF EXISTS ??', [database]);
    await db.destroy();
  });
  const dataDir = await mkdtemp(join(tmpdir(), 'users-prod-e2e-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));

  const [commandPort, queryPort] = [await freePort(), await freePort()];
  const service = runScript(t, 'scripts/start.ts', {
    DATA_DIR: dataDir,
    EVENTSTORE_URL: esdb.connectionString,
    KAFKA_BROKERS: kafka.brokers.join(','),
    KAFKA_TOPIC: topic,
    READ_DB_URL: readDbUrl,
    COMMAND_PORT: String(commandPort),
    QUERY_PORT: String(queryPort),
  });
  const write = `http://127.0.0.1:${commandPort}`;
  const read = `http://127.0.0.1:${queryPort}`;
  await waitUntilHealthy(`${write}/health`, service);
  await waitUntilHealthy(`${read}/health`, service);
  const json = { 'content-type': 'application/json' };

  const users: Array<{ id: string; token: string }> = [];
  for (let i = 0; i < 20; i++) {
    const response = await fetch(`${write}/users`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ name: `Prod ${i}`, email: `prod${i}@example.org` }),
    });
    t.equal(response.status, 201);
    const body = (await response.json()) as { id: string; consistencyToken: string };
    users.push({ id: body.id, token: body.consistencyToken });
  }
  const renamed = await fetch(`${write}/users/${users[3]!.id}/name`, { method: 'PUT', headers: json, body: JSON.stringify({ name: 'Renamed' }) });
  const { consistencyToken } = (await renamed.json()) as { consistencyToken: string };

  const seen = await fetch(`${read}/users/${users[3]!.id}`, { headers: { 'consistency-token': consistencyToken } });
  t.equal(seen.status, 200, 'read-your-writes through relay, Kafka and projector');
  t.match(await seen.json(), { name: 'Renamed', version: 1 });
  for (const user of users) {
    const row = await fetch(`${read}/users/${user.id}`, { headers: { 'consistency-token': user.token } });
    t.equal(row.status, 200, `user ${user.id} visible`);
  }
  const duplicate = await fetch(`${write}/users`, { method: 'POST', headers: json, body: JSON.stringify({ name: 'X', email: 'prod1@example.org' }) });
  t.equal(duplicate.status, 409, 'email uniqueness holds on EventStoreDB');

  const published = [0, 1, 2].flatMap((p) => kafka.records(topic, p));
  t.equal(published.length, 21, 'every event reached Kafka once');
  t.ok(published.every((r) => r.key?.toString().startsWith('user-')), 'keyed by stream id');
  t.equal(await service.stop('SIGTERM'), 0, 'all four roles shut down gracefully');
});
