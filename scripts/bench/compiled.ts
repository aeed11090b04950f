import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * How the benchmarks run the service and their own processes: as production runs
 * them, the TypeScript compiled to JavaScript (`tsconfig.bench.json`: the
 * production build's settings and sources, plus `scripts/bench/*.ts`) under plain
 * node. Compiled once per benchmark, at the first process started, into
 * `node_modules/.cache/users-bench/<pid>` (inside the project, so that the compiled
 * files resolve the project's packages; removed when the benchmark exits normally).
 * Through tsx, as `npm start` runs the sources, a registration costs the command
 * side's event loop about 7% more (tsx keeps function names by wrapping every
 * closure as it is created: docs/hot-paths-log.md, "The benchmarks measure the
 * build"); BENCH_SOURCES=1 measures that way instead.
 */
const root = fileURLToPath(new URL('../../', import.meta.url));
/** A folder per benchmark process, removed when it exits: two benchmarks at once do not share (or delete) one build. */
const outDir = join(root, 'node_modules/.cache/users-bench', String(process.pid));
const fromSources = process.env.BENCH_SOURCES === '1';

/** What a benchmark prints, before its first process, about how it runs them. */
const howRun = fromSources
  ? "the service and the benchmark's own processes from their TypeScript sources through tsx, as `npm start` runs them (BENCH_SOURCES=1)"
  : "the service and the benchmark's own processes compiled to JavaScript under plain node, as production runs the service (`tsconfig.bench.json`; BENCH_SOURCES=1 runs the sources through tsx)";

let compiling: Promise<void> | undefined;
let told = false;

function compile(): Promise<void> {
  compiling ??= (async () => {
    rmSync(outDir, { recursive: true, force: true });
    await mkdir(outDir, { recursive: true });
    process.once('exit', () => rmSync(outDir, { recursive: true, force: true }));
    const tsc = fileURLToPath(import.meta.resolve('typescript/bin/tsc'));
    const args = [tsc, '-p', join(root, 'tsconfig.bench.json'), '--outDir', outDir];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    const code = await new Promise<number | null>((resolve, reject) => child.once('error', reject).once('exit', resolve));
    if (code !== 0) throw new Error(`compiling the benchmark's build (tsc -p tsconfig.bench.json) failed (exit ${code})`);
    // Under node_modules, Node looks no further up for the project's "type": "module".
    await writeFile(join(outDir, 'package.json'), '{ "type": "module" }\n');
  })();
  return compiling;
}

/**
 * The node arguments that run `script` (a `.ts` file of the project): its compiled
 * `.js`, or with BENCH_SOURCES=1 the source through tsx. The first call says which
 * on standard output.
 */
export async function runnable(script: URL): Promise<string[]> {
  const source = fileURLToPath(script);
  if (!told) console.log(`Runs ${howRun}.`);
  told = true;
  if (fromSources) return ['--import', 'tsx', source];
  await compile();
  return [join(outDir, relative(root, source).replace(/\.ts$/, '.js'))];
}
