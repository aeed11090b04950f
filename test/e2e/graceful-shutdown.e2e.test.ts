import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { sqliteEventStore } from '../../shared/event-store/sqlite-event-store.js';
import { userStreamId } from '../../shared/user-events.js';
import { freePort } from '../../scripts/free-port.js';
import { runScript, waitUntilHealthy } from '../support/processes.js';

void t.test('SIGTERM lets in-flight writes finish; every answered write is durable', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'users-term-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const port = await freePort();
  const role = runScript(t, 'command-side/main.ts', { DATA_DIR: dataDir, COMMAND_PORT: String(port), RATE_LIMIT_PER_MINUTE: '0' });
  await waitUntilHealthy(`http://127.0.0.1:${port}/health`, role);

  type Answer = { status: number; id?: string };
  let firstAnswer: () => void = () => {};
  const answered = new Promise<void>((resolve) => (firstAnswer = resolve));
  const inFlight = Array.from({ length: 60 }, (_, i) =>
    fetch(`http://127.0.0.1:${port}/users`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: `Term ${i}`, email: `term${i}@example.org` }),
    }).then(
      async (response): Promise<Answer> => {
        firstAnswer();
        return { status: response.status, ...((await response.json()) as { id?: string }) };
      },
      (): Answer => ({ status: 0 }),
    ),
  );
  // Signal while the rest of the burst is being handled.
  await answered;
  role.child.kill('SIGTERM');
  const answers = await Promise.all(inFlight);
  t.equal(await role.exited, 0, 'exits 0 after draining');
  // Requests already being handled finish (201); ones that arrive while closing are told to retry (503).
  t.same(answers.filter((a) => ![0, 201, 503].includes(a.status)), [], 'no request failed with anything but a retryable answer');
  const store = sqliteEventStore({ file: join(dataDir, 'events.sqlite') });
  t.teardown(() => store.close());
  const created = answers.filter((a) => a.status === 201);
  t.ok(created.length > 0, `${created.length} writes answered before the exit`);
  for (const { id } of created) t.equal((await store.readStream(userStreamId(id ?? ''))).length, 1, `user ${id} is durable`);
});

void t.test('a second signal exits at once', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'users-term-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const port = await freePort();
  const role = runScript(t, 'query-side/main.ts', { DATA_DIR: dataDir, QUERY_PORT: String(port) });
  await waitUntilHealthy(`http://127.0.0.1:${port}/health`, role);
  // Hold a request open so the graceful close has something to wait for.
  const pending = fetch(`http://127.0.0.1:${port}/users/0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11`, {
    headers: { 'consistency-token': 'user-0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11@5' },
  }).catch(() => undefined);
  await new Promise((resolve) => setTimeout(resolve, 100));
  role.child.kill('SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 50));
  role.child.kill('SIGTERM');
  t.equal(await role.exited, 130, 'the second signal exits with 130 without waiting');
  await pending;
});

/** Whether a process of this id still runs (signal 0 checks without signalling). */
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

void t.test('a SIGTERM sent to `npm start` itself drains every role, as a process manager sends it', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'users-term-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const env = { ...process.env, LOG_LEVEL: 'info', LOG_FORMAT: 'json', DATA_DIR: dataDir, PROJECTOR_METRICS_PORT: '0', RELAY_METRICS_PORT: '0' };
  const [commandPort, queryPort] = [await freePort(), await freePort()];
  const npm = spawn('npm', ['start'], {
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
    env: { ...env, COMMAND_PORT: String(commandPort), QUERY_PORT: String(queryPort) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  npm.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  npm.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => npm.once('exit', (code) => resolve(code)));
  // Every process the stack started, read from its own log: stopped here whatever the test found.
  const pids = () =>
    output
      .split('\n')
      .flatMap((line) => (line.includes('"users service started"') ? [JSON.parse(line) as { pid: number; roles: Record<string, number> }] : []))
      .flatMap(({ pid, roles }) => [pid, ...Object.values(roles)]);
  t.teardown(() => {
    if (npm.exitCode === null) npm.kill('SIGKILL');
    for (const pid of pids()) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });

  const deadline = Date.now() + 60_000;
  while (pids().length === 0) {
    if (npm.exitCode !== null || Date.now() > deadline) throw new Error(`npm start did not start:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const stack = pids();
  t.equal(stack.length, 4, 'the supervisor and its three roles');
  npm.kill('SIGTERM');
  const code = await Promise.race([exited, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 30_000))]);
  t.equal(code, 0, 'npm exits 0 once the service has drained');
  t.match(output, /"every role stopped"/, 'the supervisor heard the signal and stopped every role');
  t.same(stack.filter(alive), [], 'no process of the stack is left running');
});
