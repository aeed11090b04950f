import t from 'tap';
import { loadConfig } from '../../shared/config.js';

void t.test('defaults run everything embedded under ./data', async (t) => {
  const config = loadConfig({});
  t.match(config, { commandPort: 3000, queryPort: 3001, host: '127.0.0.1', consistencyWaitMs: 5000, readDb: { client: 'sqlite' } });
  t.match(config.eventStore.file, /data\/events\.sqlite$/);
  t.equal(config.eventStore.url, undefined);
  t.equal(config.kafka, undefined);
  t.same(config.writeApiTokens, []);
  t.equal(config.rateLimitPerMinute, 0, 'no rate limit unless configured');
  t.equal(config.trustProxy, false, 'X-Forwarded-For not trusted unless configured');
  t.equal(config.logFormat, 'auto');
  t.ok(Object.isFrozen(config));
});

void t.test('TRUST_PROXY: true, false, a hop count, or addresses and CIDR ranges', async (t) => {
  const trust = (value: string) => loadConfig({ TRUST_PROXY: value }).trustProxy;
  t.equal(trust('true'), true);
  t.equal(trust('false'), false);
  t.equal(trust('0'), false);
  t.equal(trust('2'), 2);
  t.same(trust('10.0.0.0/8, 192.168.1.7,fd00::/8 , ::1, loopback'), ['10.0.0.0/8', '192.168.1.7', 'fd00::/8', '::1', 'loopback']);
  t.equal(loadConfig({ TRUST_PROXY: '' }).trustProxy, false, 'empty is unset');
  for (const bad of ['yes', 'lb.example.org', '10.0.0.0/33', '::1/129', '10.0.0.1/8/8', '10.0.0.1,', '300.1.1.1', '1000']) {
    t.throws(
      () => trust(bad),
      { name: 'ConfigError', problems: [{ field: 'TRUST_PROXY', message: 'must be true, false, a hop count or a comma-separated list of addresses and CIDR ranges' }] },
      bad,
    );
  }
});

void t.test('LOG_FORMAT is auto, json or pretty; a bad enum value lists the allowed ones', async (t) => {
  t.equal(loadConfig({ LOG_FORMAT: 'pretty' }).logFormat, 'pretty');
  t.equal(loadConfig({ LOG_FORMAT: 'json' }).logFormat, 'json');
  t.throws(() => loadConfig({ LOG_FORMAT: 'xml' }), { name: 'ConfigError', problems: [{ field: 'LOG_FORMAT', message: 'must be one of: auto, json, pretty' }] });
  t.throws(() => loadConfig({ LOG_LEVEL: 'loud' }), { message: /LOG_LEVEL: must be one of: fatal, error, warn, info, debug, trace, silent/ });
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

void t.test('the write API requires WRITE_API_TOKENS in production; the other roles do not', async (t) => {
  const production = { NODE_ENV: 'production' };
  t.throws(() => loadConfig(production, { servesWriteApi: true }), {
    name: 'ConfigError',
    problems: [{ field: 'WRITE_API_TOKENS', message: 'must be set when NODE_ENV=production' }],
  });
  t.throws(() => loadConfig({ ...production, WRITE_API_TOKENS: ' , ' }, { servesWriteApi: true }), { name: 'ConfigError' }, 'only separators is no token');
  t.throws(
    () => loadConfig({ ...production, COMMAND_PORT: 'eighty' }, { servesWriteApi: true }),
    { name: 'ConfigError', problems: [{ field: 'COMMAND_PORT' }, { field: 'WRITE_API_TOKENS' }] },
    'listed with the other bad keys',
  );
  t.same(loadConfig({ ...production, WRITE_API_TOKENS: 'a' }, { servesWriteApi: true }).writeApiTokens, ['a']);
  t.equal(loadConfig(production).env, 'production', 'a role without the write API');
  t.same(loadConfig({}, { servesWriteApi: true }).writeApiTokens, [], 'outside production tokens are optional');
});

void t.test('Kafka settings that would fail later are refused at start', async (t) => {
  const fieldsOf = (env: NodeJS.ProcessEnv) => {
    try {
      loadConfig(env);
      return [];
    } catch (error) {
      return (error as { problems: { field: string }[] }).problems.map((p) => p.field);
    }
  };
  t.same(fieldsOf({ KAFKA_BROKERS: 'kafka1' }), ['KAFKA_BROKERS'], 'a broker without its port');
  t.same(fieldsOf({ KAFKA_BROKERS: 'kafka1:9092,kafka2' }), ['KAFKA_BROKERS'], 'one of several without its port');
  t.same(loadConfig({ KAFKA_BROKERS: 'kafka1:9092,[::1]:9093' }).kafka?.brokers, ['kafka1:9092', '[::1]:9093']);
  // `<topic>:<partition>` names a checkpoint and a parked event's source in 191 characters.
  t.same(fieldsOf({ KAFKA_BROKERS: 'k:9092', KAFKA_TOPIC: 't'.repeat(181) }), ['KAFKA_TOPIC']);
  t.equal(loadConfig({ KAFKA_BROKERS: 'k:9092', KAFKA_TOPIC: 't'.repeat(180) }).kafka?.topic.length, 180);
});

void t.test('a database URL that does not parse (a port out of range, a space in the host) is named at start, not met later as a bare "Invalid URL"', async (t) => {
  t.throws(() => loadConfig({ READ_DB_URL: 'mysql://root@db:70000/queries' }), {
    name: 'ConfigError',
    problems: [{ field: 'READ_DB_URL', message: /is not a URL/ }],
  });
  t.throws(() => loadConfig({ KEY_STORE_URL: 'mysql://a b/keys' }), { name: 'ConfigError', problems: [{ field: 'KEY_STORE_URL', message: /is not a URL/ }] });
  t.match(loadConfig({ READ_DB_URL: 'sqlite://./my data/q.sqlite' }).readDb, { client: 'sqlite', file: /my data\/q\.sqlite$/ }, 'a file path may hold spaces');
});

void t.test('in production, a shared event store refuses a key store in a local file by default', async (t) => {
  const production = { NODE_ENV: 'production', EVENTSTORE_URL: 'esdb://es:2113?tls=false' };
  t.throws(() => loadConfig(production), { name: 'ConfigError', problems: [{ field: 'KEY_STORE_URL', message: /not shared between hosts/ }] });
  t.throws(() => loadConfig({ ...production, READ_DB_URL: 'sqlite:///var/q.sqlite' }), { name: 'ConfigError', problems: [{ field: 'KEY_STORE_URL' }] });
  t.match(loadConfig({ ...production, READ_DB_URL: 'mysql://db/queries' }).keyStore, { client: 'mysql', url: 'mysql://db/user_keys' }, 'beside a MariaDB read DB');
  t.match(loadConfig({ ...production, KEY_STORE_URL: 'mysql://keys/user_keys' }).keyStore, { client: 'mysql' });
  t.match(loadConfig({ ...production, KEY_STORE_URL: 'sqlite:///var/keys.sqlite' }).keyStore, { client: 'sqlite' }, 'a file named outright is the operator\'s choice');
  t.match(loadConfig({ EVENTSTORE_URL: production.EVENTSTORE_URL }).keyStore, { client: 'sqlite' }, 'outside production the default stands');
});

void t.test('the rebuild\'s tuning: REBUILD_HEARTBEAT_MS, REBUILD_PAUSE_MS, REBUILD_PAGE_DELAY_MS', async (t) => {
  t.same(loadConfig({}).rebuild, { heartbeatMs: 5000, pauseMs: 30_000, pageDelayMs: 0 });
  t.same(loadConfig({ REBUILD_HEARTBEAT_MS: '10', REBUILD_PAUSE_MS: '100', REBUILD_PAGE_DELAY_MS: '40' }).rebuild, { heartbeatMs: 10, pauseMs: 100, pageDelayMs: 40 });
  t.throws(() => loadConfig({ REBUILD_HEARTBEAT_MS: '9', REBUILD_PAUSE_MS: '99', REBUILD_PAGE_DELAY_MS: '-1' }), {
    name: 'ConfigError',
    problems: [
      { field: 'REBUILD_HEARTBEAT_MS', message: 'must be >= 10' },
      { field: 'REBUILD_PAUSE_MS', message: 'must be >= 100' },
      { field: 'REBUILD_PAGE_DELAY_MS', message: 'must be >= 0' },
    ],
  });
  t.throws(() => loadConfig({ REBUILD_PAUSE_MS: '1e3' }), { name: 'ConfigError', problems: [{ field: 'REBUILD_PAUSE_MS', message: 'must be integer' }] });
});

void t.test("EMAIL_RESERVATION_GRACE_MS on EventStoreDB outlives an append that timed out and may still commit", async (t) => {
  t.throws(() => loadConfig({ EVENTSTORE_URL: 'esdb://127.0.0.1:2113?tls=false', EMAIL_RESERVATION_GRACE_MS: '5000' }), {
    name: 'ConfigError',
    problems: [{ field: 'EMAIL_RESERVATION_GRACE_MS', message: /^must be at least 30000 when EVENTSTORE_URL is set/ }],
  });
  t.equal(loadConfig({ EVENTSTORE_URL: 'esdb://127.0.0.1:2113?tls=false', EMAIL_RESERVATION_GRACE_MS: '30000' }).emailReservationGraceMs, 30_000);
  t.equal(loadConfig({ EMAIL_RESERVATION_GRACE_MS: '5000' }).emailReservationGraceMs, 5000, "on the embedded store an append's outcome is always known");
});
