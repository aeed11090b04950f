import t, { type Test } from 'tap';
import { runScript, type RunningScript } from '../support/processes.js';

/** The fixture's lines that say what ran (its `cleanup:` and `exit` lines), in order. */
const said = (script: RunningScript) =>
  script
    .output()
    .split('\n')
    .filter((line) => line.startsWith('cleanup:') || line.startsWith('exit'));

async function started(t: Test, env: Record<string, string> = {}): Promise<RunningScript> {
  const script = runScript(t, 'test/support/interruptible-bench.ts', env);
  for (let waited = 0; !script.output().includes('ready'); waited += 20) {
    if (script.child.exitCode !== null) throw new Error(`the fixture exited early:\n${script.output()}`);
    if (waited > 30_000) throw new Error(`the fixture never said ready:\n${script.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return script;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What the fixture says when every registered cleanup ran, the last registered first, before it exited with `code`. */
const everyCleanupThen = (code: number) => ['cleanup: slow started', 'cleanup: slow done', 'cleanup: first registered', `exit ${code}`];

void t.test('on SIGINT every registered cleanup runs, the last registered first, a failing one not stopping the rest; then exit 130', async (t) => {
  const script = await started(t);
  script.child.kill('SIGINT');
  t.equal(await script.exited, 130);
  t.same(said(script), everyCleanupThen(130), 'an unregistered cleanup does not run');
  t.match(script.output(), /SIGINT: stopping what this benchmark started/);
  t.match(script.output(), /a cleanup failed: Error: a cleanup that fails/);
});

void t.test('on SIGTERM the same, with exit 143', async (t) => {
  const script = await started(t);
  script.child.kill('SIGTERM');
  t.equal(await script.exited, 143);
  t.same(said(script), everyCleanupThen(143));
});

void t.test('the same Ctrl-C arriving twice (within a second) and a SIGTERM during the cleanup do not cut it short', async (t) => {
  const script = await started(t, { SLOW_MS: '1500' });
  script.child.kill('SIGINT');
  await sleep(100);
  script.child.kill('SIGINT');
  await sleep(1_100);
  script.child.kill('SIGTERM');
  t.equal(await script.exited, 130);
  t.same(said(script), everyCleanupThen(130));
});

void t.test('Ctrl-C again, more than a second later, exits at once', async (t) => {
  const script = await started(t, { SLOW_MS: '20000' });
  script.child.kill('SIGINT');
  await sleep(1_200);
  const again = Date.now();
  script.child.kill('SIGINT');
  t.equal(await script.exited, 130);
  t.ok(Date.now() - again < 5_000, `exited ${Date.now() - again} ms after the second Ctrl-C`);
  t.same(said(script), ['cleanup: slow started', 'exit 130'], 'the cleanups still waiting never ran');
});

void t.test("a benchmark that fails while it is being cleaned up neither prints its error nor exits: the cleanup ends it", async (t) => {
  const script = await started(t, { FAIL_DURING: '1' });
  script.child.kill('SIGINT');
  t.equal(await script.exited, 130);
  t.notMatch(script.output(), /the benchmark's own failure/);
  t.same(said(script), everyCleanupThen(130));
});
