import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { freePort } from '../../scripts/free-port.js';
import { runScript, type RunningScript } from '../support/processes.js';

/** A role's log lines as they reach a pipe: JSON unless LOG_FORMAT=pretty says otherwise. */
async function listeningLine(script: RunningScript, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = script.output().split('\n').find((l) => l.includes('Server listening at'));
    if (line !== undefined) return line;
    if (script.child.exitCode !== null) throw new Error(`exited early:\n${script.output()}`);
    if (Date.now() > deadline) throw new Error(`no listening line after ${timeoutMs} ms:\n${script.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

for (const [format, expect] of [
  [undefined, 'json'],
  ['pretty', 'pretty'],
] as const) {
  void t.test(`stdout a pipe, LOG_FORMAT ${format ?? 'unset'}: ${expect} lines`, async (t) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'users-logs-'));
    t.teardown(() => rm(dataDir, { recursive: true, force: true }));
    const role = runScript(t, 'command-side/main.ts', {
      DATA_DIR: dataDir,
      COMMAND_PORT: String(await freePort()),
      LOG_LEVEL: 'info',
      ...(format ? { LOG_FORMAT: format } : {}),
    });
    const line = await listeningLine(role);
    if (expect === 'json') {
      t.match(JSON.parse(line), { level: 30, name: 'command-side', msg: /^Server listening at http:\/\/127\.0\.0\.1:\d+$/ });
    } else {
      t.throws(() => JSON.parse(line) as unknown, 'not JSON');
      t.match(line, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO \(command-side\): Server listening at http:\/\/127\.0\.0\.1:\d+/);
    }
    t.equal(await role.stop(), 0, 'stops cleanly');
  });
}
