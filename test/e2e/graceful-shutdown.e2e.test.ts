import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { sqliteEventStore } from '../../shared/event-store/sqlite-event-store.js';
import { userStreamId } from '../../shared/user-events.js';
import { freePort } from '../../scripts/free-port.js';
import { alive, runCommand, runScript, startedStack, waitUntilHealthy, within } from '../support/processes.js';

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
  const role = runScript(t, 'command-side/main.ts', { DATA_DIR: dataDir, COMMAND_PORT: String(port) });
  await waitUntilHealthy(`http://127.0.0.1:${port}/health`, role);
  // Hold a request open so the graceful close has something to wait for: its body is still coming (for up to
  // the request timeout, 30 s).
  const slow = connect(port, '127.0.0.1');
  t.teardown(() => slow.destroy());
  slow.on('error', () => {});
  slow.write('POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"name":');
  await new Promise((resolve) => setTimeout(resolve, 100));
  role.child.kill('SIGTERM');
  // Later than a terminal's echo of the first (below).
  await new Promise((resolve) => setTimeout(resolve, 1300));
  t.equal(role.child.exitCode, null, 'still draining after the first signal');
  role.child.kill('SIGTERM');
  t.equal(await role.exited, 130, 'the second signal exits with 130 without waiting');
});

void t.test("a signal repeated within a second (a terminal's Ctrl-C through npm) still drains", async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'users-term-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const port = await freePort();
  const role = runScript(t, 'query-side/main.ts', { DATA_DIR: dataDir, QUERY_PORT: String(port), CONSISTENCY_WAIT_MS: '1500' });
  await waitUntilHealthy(`http://127.0.0.1:${port}/health`, role);
  // A read waiting for a write that never comes: the drain answers it (503 SHUTTING_DOWN) rather than cut it off.
  const pending = fetch(`http://127.0.0.1:${port}/users/0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11`, {
    headers: { 'consistency-token': 'user-0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11@5' },
  }).then(
    async (response) => ({ status: response.status, code: ((await response.json()) as { code?: string }).code }),
    (error: unknown) => ({ status: 0, code: String(error) }),
  );
  await new Promise((resolve) => setTimeout(resolve, 100));
  role.child.kill('SIGINT');
  await new Promise((resolve) => setTimeout(resolve, 5));
  role.child.kill('SIGINT');
  t.equal(await role.exited, 0, 'exits 0 after draining');
  t.same(await pending, { status: 503, code: 'SHUTTING_DOWN' }, 'the waiting read was answered, not cut off');
  t.notMatch(role.output(), /second signal/, 'the echo was not taken for a second signal');
});

void t.test('a SIGTERM sent to `npm start` itself drains every role, as a process manager sends it', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'users-term-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const env = { LOG_LEVEL: 'info', LOG_FORMAT: 'json', DATA_DIR: dataDir, COMMAND_PORT: String(await freePort()), QUERY_PORT: String(await freePort()) };
  const npm = runCommand(t, 'npm', ['start'], env);
  const { supervisor, roles } = await startedStack(npm, 60_000);
  const stack = [supervisor, ...Object.values(roles)];
  // Stopped here whatever the test finds: without the fix the supervisor outlives npm.
  t.teardown(() => {
    for (const pid of stack) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  t.equal(stack.length, 4, 'the supervisor and its three roles');
  npm.child.kill('SIGTERM');
  t.equal(await within(30_000, 'npm to exit after SIGTERM', npm.exited), 0, 'npm exits 0 once the service has drained');
  t.match(npm.output(), /"every role stopped"/, 'the supervisor heard the signal and stopped every role');
  t.same(stack.filter(alive), [], 'no process of the stack is left running');
});
