import t from 'tap';
import { loadConfig } from '../../shared/config.js';

void t.test('defaults run everything embedded under ./data', async (t) => {
  const config = loadConfig({});
  t.match(config, { commandPort: 3000, queryPort: 3001, host: '127.0.0.1', consistencyWaitMs: 5000, readDb: { client: 'sqlite' } });
  t.match(config.eventStore.file, /data\/events\.sqlite$/);
  t.equal(config.eventStore.url, undefined);
  t.equal(config.kafka, undefined);
  t.same(config.writeApiTokens, []);
  t.ok(Object.isFrozen(config));
});

void t.test('production settings are read and typed', async (t) => {
  const config = loadConfig({
    COMMAND_PORT: '8080',
    READ_DB_URL: 'mysql://root@db:3306/queries',
    EVENTSTORE_URL: 'esdb://es:2113?tls=false',
    KAFKA_BROKERS: 'k1:9092,k2:9092',
    WRITE_API_TOKENS: ' a , b ,',
  });
  t.equal(config.commandPort, 8080);
  t.same(config.readDb, { client: 'mysql', url: 'mysql://root@db:3306/queries' });
  t.equal(config.eventStore.url, 'esdb://es:2113?tls=false');
  t.same(config.kafka, {
    brokers: ['k1:9092', 'k2:9092'],
    topic: 'users.events.v1',
    clientId: 'users-service',
    groupId: 'users-projector',
    sessionTimeoutMs: 6000,
  });
  t.same(config.writeApiTokens, ['a', 'b']);
});

void t.test('the relay\'s identity is stable across restarts: RELAY_ID, else one derived from the host', async (t) => {
  const derived = loadConfig({}).relayId;
  t.match(derived, /^relay@.+/);
  t.equal(loadConfig({}).relayId, derived, 'the same on every start');
  t.equal(loadConfig({ RELAY_ID: 'relay-b' }).relayId, 'relay-b');
  t.throws(() => loadConfig({ RELAY_ID: 'has spaces' }), { name: 'ConfigError' });
  t.equal(loadConfig({ KAFKA_BROKERS: 'k:9092', KAFKA_SESSION_TIMEOUT_MS: '10000' }).kafka?.sessionTimeoutMs, 10_000);
});

void t.test('an invalid configuration names every bad key at once', async (t) => {
  let error: unknown;
  try {
    loadConfig({ COMMAND_PORT: 'eighty', QUERY_PORT: '70000', READ_DB_URL: 'postgres://x', LOG_LEVEL: 'loud', KAFKA_BROKERS: 'a,,b' });
  } catch (caught) {
    error = caught;
  }
  t.match(error, { name: 'ConfigError', code: 'CONFIG_INVALID', message: /invalid configuration/ });
  const fields = (error as { problems: { field: string }[] }).problems.map((p) => p.field).sort();
  t.same(fields, ['COMMAND_PORT', 'KAFKA_BROKERS', 'LOG_LEVEL', 'QUERY_PORT', 'READ_DB_URL']);
});
