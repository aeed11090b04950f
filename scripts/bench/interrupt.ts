/**
 * What a benchmark stopped by Ctrl-C (SIGINT) or SIGTERM still cleans up: the
 * stacks and processes it started, its temp folders, worktree and databases.
 * Node's default on those signals is to exit at once, skipping every `finally`,
 * which left a stack's data folder (a few hundred MB after a run), the compiled
 * build under `node_modules/.cache/users-bench` and the benchmark's databases
 * behind.
 *
 * Each cleanup is registered when its thing is made and must be safe to run again
 * (a stack's `stop()` is, and so are `rm` with `force` and `DROP DATABASE IF
 * EXISTS`), since the benchmark's own `finally` may have run it already. On the
 * first signal they run one after another, the last registered first (a stack
 * stops before the database it wrote to is dropped), and the process exits with
 * 128 plus the signal's number, after at most 30 s. Ctrl-C again, a second or more
 * later, exits at once; a repeat within that second (`npm run` relays the
 * terminal's Ctrl-C, which the process group has already had) or a SIGTERM
 * meanwhile (a parent benchmark stopping this one after the same Ctrl-C reached
 * both) changes nothing. The `bench:*` scripts, as every npm script, run under
 * `node --import tsx`, not tsx's command, whose relay kills a child that is slow to
 * report a signal.
 */
type Cleanup = () => unknown;

const cleanups = new Set<Cleanup>();
const signals = { SIGINT: 2, SIGTERM: 15 } as const;
let installed = false;
let interrupting = false;
let interruptedAt = 0;

/** Runs `cleanup` if the benchmark is interrupted; the returned function unregisters it. */
export function onInterrupt(cleanup: Cleanup): () => void {
  if (!installed) {
    installed = true;
    for (const [signal, number] of Object.entries(signals)) process.on(signal, () => void interrupted(signal, number));
  }
  cleanups.add(cleanup);
  return () => void cleanups.delete(cleanup);
}

async function interrupted(signal: string, number: number): Promise<void> {
  if (interrupting) {
    // The same Ctrl-C can arrive twice (from the terminal and relayed by `npm run`): only a later one insists.
    if (signal === 'SIGINT' && performance.now() - interruptedAt > 1_000) process.exit(128 + number);
    return;
  }
  interrupting = true;
  interruptedAt = performance.now();
  console.error(`${signal}: stopping what this benchmark started and removing its data (Ctrl-C again to exit at once)`);
  const deadline = setTimeout(() => process.exit(128 + number), 30_000);
  for (const cleanup of [...cleanups].reverse()) {
    try {
      await cleanup();
    } catch (error) {
      console.error('a cleanup failed:', error);
    }
  }
  clearTimeout(deadline);
  // 'exit' listeners still run: the compiled build's folder goes with them.
  process.exit(128 + number);
}

/**
 * How a benchmark ends: `error` printed, then exit with `code`. Once interrupted it
 * does neither: the error is then the interruption's own doing (a stopped stack's
 * refused connection), and the cleanup under way ends the process when it is done.
 */
export function benchExit(code: number, error?: unknown): void {
  if (interrupting) return;
  if (error !== undefined) console.error(error);
  process.exit(code);
}
