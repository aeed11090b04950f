import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';

void t.test('a role whose supervisor went away while it started reports ready to no one, quietly', async (t) => {
  const child = fork(fileURLToPath(new URL('../support/report-ready-child.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise((resolve) => child.once('message', resolve));
  child.disconnect();
  t.equal(await exited, 0, 'it goes on to its own exit');
  t.equal(stderr, '', 'without an error or a stack trace');
});
