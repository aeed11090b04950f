/**
 * The request paths' targets (issue 10) and the verdict a `npm run bench:http` run
 * gives each of them, printed after its table so that nobody has to hold the figures
 * against the issue by hand.
 */
export type Path = 'GET /users/:id' | 'GET /users?email=' | 'POST /users';
export type ReadDb = 'embedded' | 'mariadb';

/**
 * Each path's target as a ratio to its bare counterpart in the same run (hello-world
 * GET, JSON-echo POST) and as a p99. The list's is 0.8 of the lookup's ratio: here as
 * a ratio to bare (0.8 of the lookup's target), for the CPU budget; its verdict
 * compares it with the lookup's measured ratio when both ran. The issue sets no p99
 * for the list.
 */
export const targets: Record<ReadDb, Record<Path, { ratio: number; p99Ms?: number }>> = {
  embedded: { 'GET /users/:id': { ratio: 0.6, p99Ms: 5 }, 'GET /users?email=': { ratio: 0.8 * 0.6 }, 'POST /users': { ratio: 0.4, p99Ms: 25 } },
  mariadb: { 'GET /users/:id': { ratio: 0.4, p99Ms: 10 }, 'GET /users?email=': { ratio: 0.8 * 0.4 }, 'POST /users': { ratio: 0.4, p99Ms: 25 } },
};

/** The list's target relative to the lookup's ratio. */
export const listToLookup = 0.8;

/** A path's medians over a run's repetitions: its ratio to bare (median of the per-run ratios) and its p99. */
export interface PathMedians {
  path: Path;
  ratio: number;
  p99Ms: number;
}

const verdict = (met: boolean) => (met ? 'met' : 'missed');

/**
 * One line per path measured: each target, the figure against it and whether it was
 * met, e.g. `GET /users/:id: 0.62 of bare (target >= 0.60): met; p99 6 ms (target <= 5): missed`.
 */
export function targetVerdicts(readDb: ReadDb, measured: readonly PathMedians[]): string[] {
  const lookup = measured.find((m) => m.path === 'GET /users/:id');
  return measured.map(({ path, ratio, p99Ms }) => {
    const target = targets[readDb][path];
    const bare = path === 'POST /users' ? 'the echo' : 'bare';
    const parts =
      path === 'GET /users?email=' && lookup
        ? [`${(ratio / lookup.ratio).toFixed(2)} of the lookup's ratio (target >= ${listToLookup.toFixed(2)}): ${verdict(ratio >= listToLookup * lookup.ratio)}`]
        : [`${ratio.toFixed(2)} of ${bare} (target >= ${target.ratio.toFixed(2)}): ${verdict(ratio >= target.ratio)}`];
    if (target.p99Ms !== undefined) parts.push(`p99 ${p99Ms} ms (target <= ${target.p99Ms}): ${verdict(p99Ms <= target.p99Ms)}`);
    return `${path}: ${parts.join('; ')}`;
  });
}
