import { spawn, type ChildProcess } from 'node:child_process';
import { Agent, request as httpRequest } from 'node:http';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import knexFactory from 'knex';
import { freePort } from '../free-port.js';
import { runnable } from './compiled.js';
import { onInterrupt } from './interrupt.js';

/**
 * Requests through node:http on kept-alive connections: about a third of the CPU
 * per request of `fetch`, which at 1,000 requests/s took a core of this 2-core
 * machine away from the service it measured.
 */
const agent = new Agent({ keepAlive: true, maxSockets: 256 });
export function send(url: string, method: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(url, { method, headers, agent }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(body);
  });
}

export const percentile = (sorted: readonly number[], p: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

/** The median of unsorted values (the upper one of an even count), as the benchmarks report it. */
export const median = (values: readonly number[]): number => percentile([...values].sort((a, b) => a - b), 50);

/**
 * Starts `npm start`'s process tree (as compiled: `compiled.ts`) on fresh data and free ports, for a
 * benchmark: LOG_LEVEL warn and no rate limit unless `extraEnv` says otherwise.
 * With `logFile`, the roles' logs go to that file in the data dir (as to a log
 * collector) instead of this terminal. `stop()` removes the data dir (a stack's
 * stores take a few hundred MB after a benchmark) unless BENCH_KEEP_DATA=1, which
 * keeps it, log included, and says where; a stack that does not come up is stopped
 * the same way before the error is thrown.
 */
export async function startStack(extraEnv: Record<string, string> = {}, options: { logFile?: string } = {}) {
  const dataDir = await mkdtemp(join(tmpdir(), 'users-bench-'));
  const stdout = options.logFile ? openSync(join(dataDir, options.logFile), 'a') : 'inherit';
  const commandPort = await freePort();
  const queryPort = await freePort();
  const child: ChildProcess = spawn(
    process.execPath,
    await runnable(new URL('../start.ts', import.meta.url)),
    {
      // Rate limiting off: the load comes from one client on purpose.
      env: {
        ...process.env,
        LOG_LEVEL: 'warn',
        RATE_LIMIT_PER_MINUTE: '0',
        DATA_DIR: dataDir,
        COMMAND_PORT: `${commandPort}`,
        QUERY_PORT: `${queryPort}`,
        PROJECTOR_METRICS_PORT: '0',
        RELAY_METRICS_PORT: '0',
        ...extraEnv,
      },
      stdio: ['ignore', stdout, 'inherit'],
    },
  );
  const write = `http://127.0.0.1:${commandPort}`;
  const read = `http://127.0.0.1:${queryPort}`;
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      await stopChild(child);
      if (typeof stdout === 'number') closeSync(stdout);
      if (process.env.BENCH_KEEP_DATA === '1') console.log(`the stack's data dir is kept: ${dataDir}`);
      else await rm(dataDir, { recursive: true, force: true });
    })());
  onInterrupt(stop);
  try {
    for (const url of [`${write}/health`, `${read}/health`]) await untilHealthy(url, child, 'the stack');
  } catch (error) {
    // A stack that did not come up is stopped and its data dir removed (or kept) as after a run.
    await stop();
    throw error;
  }
  return {
    write,
    read,
    dataDir,
    /** The role processes the supervisor started, by role (its script's folder: command-side, projector, query-side). */
    roles: () => roleProcesses(child.pid!),
    stop,
  };
}

/** Drops each of `databases` that is there, on the MariaDB server at `serverUrl` (`mysql://user@host:port`). */
export async function dropDatabases(serverUrl: string, databases: readonly string[]): Promise<void> {
  const admin = knexFactory({ client: 'mysql2', connection: serverUrl, pool: { min: 0, max: 1 } });
  try {
    for (const name of databases) await admin.raw('DROP DATABASE IF EXISTS ??', [name]);
  } finally {
    await admin.destroy();
  }
}

/** The supervisor's child processes by the folder of the script each runs (Linux /proc). */
export function roleProcesses(supervisor: number): Map<string, number> {
  const roles = new Map<string, number>();
  for (const task of readdirSync(`/proc/${supervisor}/task`)) {
    for (const pid of readFileSync(`/proc/${supervisor}/task/${task}/children`, 'utf8').split(' ').filter(Boolean).map(Number)) {
      const script = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').find((arg) => /\/main\.(ts|js)$/.test(arg));
      if (script) roles.set(script.split('/').at(-2)!, pid);
    }
  }
  return roles;
}

/**
 * The process of the MariaDB server `url` points at, when it runs on this machine
 * (Linux /proc): its CPU is part of the cost of what the service asks of it, and it
 * shares the cores with the service. Undefined when the server runs elsewhere.
 */
export function localMariaDbServer(url: string): number | undefined {
  if (!['127.0.0.1', 'localhost'].includes(new URL(url).hostname)) return undefined;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (/^(mariadbd|mysqld)$/.test(readFileSync(`/proc/${entry}/comm`, 'utf8').trim())) return Number(entry);
    } catch {
      // Gone meanwhile.
    }
  }
  return undefined;
}

/** The machine's cores: every bench's bound by CPU spreads the work measured over them. */
/** An environment variable a benchmark's child process is started with; throws when it is missing. */
export function requiredEnv(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
}

export const cores = availableParallelism();

/**
 * The least wall time this much CPU (seconds, of every process that shares the machine) could take: all of it
 * spread evenly over every core, nothing waiting. However work is overlapped, it cannot finish sooner.
 */
export const leastSeconds = (cpuSeconds: number): number => cpuSeconds / cores;

/** User + system CPU time a process has used so far, in microseconds (Linux /proc). */
export function cpuMicros(pid: number): number {
  return statCpuMicros(`/proc/${pid}/stat`);
}

/**
 * The same for a process's main thread alone (where its JavaScript runs: a Node
 * process's event loop), without V8's and libuv's helper threads or its workers. One
 * thread can use at most one core, so a path whose event loop spends N µs per request
 * cannot pass 1,000,000 / N requests a second however many cores are free.
 */
export function mainThreadCpuMicros(pid: number): number {
  return statCpuMicros(`/proc/${pid}/task/${pid}/stat`);
}

/**
 * Core-seconds the whole machine has spent idle since boot (`/proc/stat`: idle and
 * iowait, in hundredths of a second): the difference over a run is what its cores
 * left unused, whichever process could have used them.
 */
export function machineIdleSeconds(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
  return (Number(fields[4]) + Number(fields[5])) / 100;
}

function statCpuMicros(file: string): number {
  const fields = readFileSync(file, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * (1_000_000 / 100);
}

/**
 * A script of this folder as a process of its own (compiled, or through tsx: `compiled.ts`; after `nodeOptions`),
 * once it has printed its first line (a server's address, or `ready`). Later lines
 * are read with `nextLine()`, and `send()` writes a line to its stdin.
 */
export async function startChild(script: string, env: Record<string, string> = {}, nodeOptions: readonly string[] = []) {
  const child = spawn(process.execPath, [...nodeOptions, ...(await runnable(new URL(script, import.meta.url)))], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  child.once('exit', onInterrupt(() => stopChild(child)));
  const exited = new Promise<never>((_resolve, reject) => child.once('exit', (code) => reject(new Error(`${script} exited (${code})`))));
  exited.catch(() => {});
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const nextLine = async (): Promise<string> => {
    const next = await Promise.race([lines.next(), exited]);
    if (next.done) throw new Error(`${script} closed its output`);
    return next.value.trim();
  };
  const line = await nextLine();
  return {
    line,
    pid: child.pid!,
    nextLine,
    send: (text: string) => void child.stdin.write(`${text}\n`),
    stop: () => stopChild(child),
  };
}

const hasExited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

/** Resolves once `url` (a /health) answers 2xx; throws if `child` (`who`) exits first or it has not after about 30 s. */
export async function untilHealthy(url: string, child: ChildProcess, who: string): Promise<void> {
  for (let i = 0; ; i++) {
    if (await fetch(url).then((r) => r.ok, () => false)) return;
    if (hasExited(child)) throw new Error(`${who} exited (${child.exitCode ?? child.signalCode}) before ${url} came up`);
    if (i > 300) throw new Error(`${url} did not come up`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** SIGTERM to a child process, resolved once it has exited (at once if it already has). */
export function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (hasExited(child)) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/**
 * A CPU profile of this process from now until `stop()`, written to `<dir>/<name>`
 * (node:inspector, 200 µs sampling), for a phase of a benchmark that shares its
 * process with others; open the file in Chrome DevTools or any `.cpuprofile`
 * viewer. Without a `dir` (BENCH_PROFILE_DIR unset) nothing is profiled.
 */
export async function profilePhase(dir: string | undefined, name: string): Promise<{ stop(): Promise<void> }> {
  if (dir === undefined) return { stop: () => Promise.resolve() };
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  return {
    async stop() {
      const { profile } = await session.post('Profiler.stop');
      session.disconnect();
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, name), JSON.stringify(profile));
    },
  };
}
