import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchExit, onInterrupt } from './bench/interrupt.js';
import { median, stopChild } from './bench/stack.js';
import { rebuildNodeOptions } from './role-node-options.js';

/**
 * Issue 14's budget for the rebuild, measured as it is defined: the rebuild of
 * this tree against the rebuild of the code just before personal data was sealed
 * (commit dc7b58c, BENCH_BEFORE), in turn on the same machine, so both meet the
 * same hour's pace.
 *  1. Checks that commit out into a temporary git worktree beside this one (its
 *     node_modules a link to this tree's: the same libraries, as every earlier
 *     measurement of the budget did) and seeds a store for each, BENCH_EVENTS
 *     (1,000,000) events: sealed for this tree, in clear for the code before
 *     sealing, which cannot read sealed events. BENCH_SEED_DIR keeps both seeded
 *     stores between invocations (`before/` and `sealed/` inside it).
 *  2. Runs BENCH_ROUNDS (5) rounds; each runs the code before sealing's
 *     `bench-rebuild.ts` (its own Node options: 64 MiB semi-spaces) and this
 *     tree's (`npm run bench:rebuild`, one run), in that order, each a process of
 *     its own into a fresh MariaDB database.
 *  3. Prints each round's wall times and ratio, the median of the per-round
 *     ratios and the ratio of the medians, against the budget (+10%).
 * Needs the repository's history (a full clone) and MariaDB as `bench:rebuild`
 * does. Prints figures; asserts nothing. Removes the worktree at the end.
 */
const before = process.env.BENCH_BEFORE ?? 'dc7b58c';
const rounds = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 5));
const events = process.env.BENCH_EVENTS ?? '1000000';
const budget = 1.1;
const root = fileURLToPath(new URL('..', import.meta.url));

/** Runs a command to its end and returns its output; its errors pass through, and a failure throws. */
function run(command: string, args: string[], cwd: string, env: Record<string, string>): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    // Interrupted, the run is told to stop, and cleans up after itself the same way.
    child.once('exit', onInterrupt(() => stopChild(child)));
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolvePromise(output) : reject(new Error(`${command} ${args.join(' ')} exited (${code}):\n${output}`))));
  });
}

/** The wall time of the rebuild a bench's output reports (`rebuild: ... in 2.10 s`), in seconds. */
function rebuildSeconds(output: string, who: string): number {
  const match = /rebuild: \d+ events -> \d+ rows in ([\d.]+) s/.exec(output);
  if (!match) throw new Error(`no rebuild figure in the output of ${who}:\n${output}`);
  return Number(match[1]);
}

async function main() {
  const scratch = mkdtempSync(join(tmpdir(), 'users-rebuild-budget-'));
  const seeds = process.env.BENCH_SEED_DIR ?? scratch;
  const tree = join(scratch, 'before');
  let removed = false;
  const removeScratch = () => {
    if (removed) return;
    removed = true;
    execFileSync('git', ['worktree', 'remove', '--force', tree], { cwd: root, stdio: 'ignore' });
    rmSync(scratch, { recursive: true, force: true });
  };
  execFileSync('git', ['worktree', 'add', '--detach', '--force', tree, before], { cwd: root, stdio: 'ignore' });
  onInterrupt(removeScratch);
  try {
    symlinkSync(join(root, 'node_modules'), join(tree, 'node_modules'));
    const beforeRun = () =>
      run(process.execPath, ['--max-semi-space-size=64', '--import', 'tsx', 'scripts/bench-rebuild.ts'], tree, {
        BENCH_EVENTS: events,
        BENCH_DATA_DIR: join(seeds, 'before'),
      });
    const nowRun = () =>
      run(process.execPath, [...rebuildNodeOptions, '--import', 'tsx', 'scripts/bench-rebuild.ts'], root, {
        BENCH_EVENTS: events,
        BENCH_RUNS: '1',
        BENCH_DATA_DIR: join(seeds, 'sealed'),
        // Through tsx as the code before sealing runs (it has no compiled build for its benchmarks): like for like.
        BENCH_SOURCES: '1',
      });
    if (!existsSync(join(seeds, 'before')) || !existsSync(join(seeds, 'sealed'))) console.log(`seeding ${events} events for each (once)`);
    const pairs: Array<[number, number]> = [];
    for (let round = 1; round <= rounds; round++) {
      const b = rebuildSeconds(await beforeRun(), `the code before sealing (${before})`);
      const n = rebuildSeconds(await nowRun(), 'this tree');
      pairs.push([b, n]);
      console.log(`round ${round}: before sealing ${b.toFixed(2)} s, this tree ${n.toFixed(2)} s: ${((n / b - 1) * 100).toFixed(0)}%`);
    }
    const perRound = median(pairs.map(([b, n]) => n / b));
    const ofMedians = median(pairs.map(([, n]) => n)) / median(pairs.map(([b]) => b));
    const pct = (ratio: number) => `${ratio >= 1 ? '+' : ''}${((ratio - 1) * 100).toFixed(0)}%`;
    console.log(
      `${events} events, ${rounds} rounds in turn: median of the per-round ratios ${pct(perRound)}, ratio of the medians ${pct(ofMedians)} ` +
        `(budget +10%: ${Math.max(perRound, ofMedians) <= budget ? 'met' : 'missed'})`,
    );
  } finally {
    removeScratch();
  }
}

main().catch((error: unknown) => benchExit(1, error));
