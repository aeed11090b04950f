import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { freePort } from '../../scripts/free-port.js';
import { runScript, waitUntilHealthy } from '../support/processes.js';

void t.test('the write API refuses to start in production without tokens', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'users-start-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const role = runScript(t, 'command-side/main.ts', { NODE_ENV: 'production', WRITE_API_TOKENS: '', DATA_DIR: dataDir, COMMAND_PORT: String(await freePort()) });
  t.equal(await role.exited, 1);
  t.match(role.output(), /WRITE_API_TOKENS: must be set when NODE_ENV=production/);
});

void t.test('the write API refuses to start with another email hash secret than the store\'s reservations were made with', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'users-start-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const env = { DATA_DIR: dataDir, COMMAND_PORT: String(await freePort()) };
  // The first start records the key store's own secret (none is set), as the first registration would.
  const first = runScript(t, 'command-side/main.ts', env);
  await waitUntilHealthy(`http://127.0.0.1:${env.COMMAND_PORT}/health`, first);
  t.equal(await first.stop(), 0);
  const second = runScript(t, 'command-side/main.ts', { ...env, EMAIL_HASH_SECRET: 'a secret set later, 32 characters or more' });
  t.equal(await second.exited, 1);
  t.match(second.output(), /command-side could not start: invalid configuration/);
  t.match(second.output(), /EMAIL_HASH_SECRET: differs from the secret the event store's email reservations were made with/);
});

void t.test('a bad configuration stops a role at start with every bad key listed', async (t) => {
  const role = runScript(t, 'query-side/main.ts', { QUERY_PORT: 'http', CONSISTENCY_WAIT_MS: '-5' });
  t.equal(await role.exited, 1);
  t.match(role.output(), /query-side could not start: invalid configuration/);
  t.match(role.output(), /QUERY_PORT/);
  t.match(role.output(), /CONSISTENCY_WAIT_MS/);
});

void t.test('the relay needs Kafka brokers', async (t) => {
  const role = runScript(t, 'command-side/relay-main.ts', { KAFKA_BROKERS: '' });
  t.equal(await role.exited, 1);
  t.match(role.output(), /KAFKA_BROKERS: the relay needs Kafka brokers/);
});

void t.test('npm start stops when a role cannot take its port, naming the role and the port', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'users-start-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => taken.close(() => resolve())));
  const port = (taken.address() as AddressInfo).port;
  const start = runScript(t, 'scripts/start.ts', { DATA_DIR: dataDir, COMMAND_PORT: String(port), QUERY_PORT: String(await freePort()) });
  t.equal(await start.exited, 1, 'exits 1 once the other roles have stopped');
  t.match(start.output(), `users service could not start: command-side: listen EADDRINUSE: address already in use 127.0.0.1:${port}`);
  t.notMatch(start.output(), /users service started/);
});
