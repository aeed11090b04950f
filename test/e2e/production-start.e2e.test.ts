import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readdir, readFile, rm, symlink } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { sqliteEventStore } from '../../shared/event-store/sqlite-event-store.js';
import { userStreamId } from '../../shared/user-events.js';
import { freePort } from '../../scripts/free-port.js';
import { alive, runScript, startedStack, waitUntilHealthy, within } from '../support/processes.js';

/**
 * The production start: the project built with tsconfig.build.json, run with plain
 * node (`node dist/scripts/start.js`, the image's command) from a folder laid out as
 * the image is (package.json and node_modules beside dist/), so a developer's own
 * dist/ is left alone.
 */
const project = fileURLToPath(new URL('../../', import.meta.url));
const image = await mkdtemp(join(tmpdir(), 'users-build-'));
t.teardown(() => rm(image, { recursive: true, force: true }));
await copyFile(join(project, 'package.json'), join(image, 'package.json'));
await symlink(join(project, 'node_modules'), join(image, 'node_modules'), 'dir');
const tsc = join(project, 'node_modules', 'typescript', 'bin', 'tsc');
await promisify(execFile)(process.execPath, [tsc, '-p', join(project, 'tsconfig.build.json'), '--outDir', join(image, 'dist')], { cwd: project });
const start = join(image, 'dist', 'scripts', 'start.js');

/** The image's HEALTHCHECK: `node dist/scripts/healthcheck.js` with HEALTHCHECK_PORT; resolves to its exit code. */
const healthcheck = (port: string) =>
  new Promise<number | null>((resolve) => {
    const check = execFile(process.execPath, [join(image, 'dist', 'scripts', 'healthcheck.js')], { env: { ...process.env, NODE_OPTIONS: '', HEALTHCHECK_PORT: port } });
    check.once('exit', (code) => resolve(code));
  });

/** Every environment here: embedded stores in a fresh folder, free ports, no loader inherited from the test runner. */
async function serviceEnv(t: Test, overrides: Record<string, string> = {}) {
  const dataDir = await mkdtemp(join(tmpdir(), 'users-prod-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const env = {
    NODE_OPTIONS: '',
    LOG_LEVEL: 'info',
    DATA_DIR: dataDir,
    COMMAND_PORT: String(await freePort()),
    QUERY_PORT: String(await freePort()),
    PROJECTOR_METRICS_PORT: String(await freePort()),
    RATE_LIMIT_PER_MINUTE: '0',
    ...overrides,
  };
  return { env, dataDir, write: `http://127.0.0.1:${env.COMMAND_PORT}`, read: `http://127.0.0.1:${env.QUERY_PORT}` };
}

/** Processes still running this build (its path is on their command line): none once a start has stopped. */
async function processesOfTheBuild(): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const commandLine = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (commandLine.includes(image)) found.push(Number(entry));
  }
  return found;
}

void t.test('node dist/scripts/start.js serves, and SIGTERM drains every role and exits 0', async (t) => {
  const { env, dataDir, write, read } = await serviceEnv(t);
  const service = runScript(t, start, env);
  const { roles } = await startedStack(service);
  t.same(Object.keys(roles).sort(), ['command-side', 'projector', 'query-side'], 'the three embedded roles started');
  for (const [role, pid] of Object.entries(roles)) {
    const commandLine = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter(Boolean);
    t.equal(commandLine.find((arg) => arg.endsWith('.js')), join(image, 'dist', role, 'main.js'));
    t.notOk(commandLine.some((arg) => arg.includes('tsx')), `${role} runs with plain node: ${commandLine.join(' ')}`);
  }

  for (const port of [env.COMMAND_PORT, env.QUERY_PORT, env.PROJECTOR_METRICS_PORT]) {
    t.equal(await healthcheck(port), 0, `the health check passes on port ${port}`);
  }

  const created = await fetch(`${write}/users`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'Ada Lovelace', email: 'ada@example.org' }),
  });
  t.equal(created.status, 201, 'a write is accepted');
  const { id, consistencyToken } = (await created.json()) as { id: string; consistencyToken: string };
  const user = await fetch(`${read}/users/${id}`, { headers: { 'consistency-token': consistencyToken } });
  t.equal(user.status, 200, 'the projector applied it and the read API serves it');
  t.match(await user.json(), { id, name: 'Ada Lovelace' });

  const stoppedAt = Date.now();
  service.child.kill('SIGTERM');
  t.equal(await within(15_000, 'exit after SIGTERM', service.exited), 0, 'exits 0 once every role has exited');
  t.comment(`stopped in ${Date.now() - stoppedAt} ms`);
  const lines = service
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { name?: string; msg?: string; role?: string; code?: number; signal?: string });
  for (const [role, pid] of Object.entries(roles)) {
    t.ok(lines.some((l) => l.name === role && l.msg === 'shutting down' && l.signal === 'SIGTERM'), `${role} drained on SIGTERM`);
    t.ok(lines.some((l) => l.msg === 'role stopped' && l.role === role && l.code === 0), `${role} exited 0`);
    t.notOk(alive(pid), `${role} (pid ${pid}) is gone`);
  }
  t.same(await processesOfTheBuild(), [], 'no process of the build is left');
  t.equal(await healthcheck(env.COMMAND_PORT), 1, 'the health check fails once nothing listens');

  const store = sqliteEventStore({ file: join(dataDir, 'events.sqlite') });
  t.teardown(() => store.close());
  t.equal((await store.readStream(userStreamId(id))).length, 1, 'the answered write is durable');
});

void t.test('a port in use stops the start, naming the role and the port', async (t) => {
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => taken.close(() => resolve())));
  const port = (taken.address() as { port: number }).port;
  const { env } = await serviceEnv(t, { PROJECTOR_METRICS_PORT: String(port), LOG_LEVEL: 'warn' });
  const service = runScript(t, start, env);
  t.equal(await within(30_000, 'exit after the failed start', service.exited), 1, 'exits 1');
  t.match(service.output(), new RegExp(`users service could not start: projector: .*EADDRINUSE.*127\\.0\\.0\\.1:${port}`));
  t.notMatch(service.output(), /users service started/);
  t.same(await processesOfTheBuild(), [], 'the roles that had started were stopped');
});

void t.test('a second signal kills the roles still draining', async (t) => {
  const { env, read, write } = await serviceEnv(t);
  const service = runScript(t, start, env);
  await startedStack(service);
  await waitUntilHealthy(`${read}/health`, service);
  // A request whose body is still coming keeps the write API draining until it ends or times out (30 s).
  const { port } = new URL(write);
  const slow = connect(Number(port), '127.0.0.1');
  t.teardown(() => slow.destroy());
  slow.on('error', () => {});
  slow.write('POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"name":');
  await new Promise((resolve) => setTimeout(resolve, 200));
  service.child.kill('SIGTERM');
  // Past the window in which a repeated signal is taken for the same Ctrl-C.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  t.equal(service.child.exitCode, null, 'still draining after the first signal');
  service.child.kill('SIGTERM');
  t.equal(await within(5000, 'exit after the second signal', service.exited), 130, 'exits 130 at once');
  t.match(service.output(), /second signal: killing every role/);
  t.same(await processesOfTheBuild(), [], 'no role is left');
});
