import { spawn, type ChildProcess } from 'node:child_process';
import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';

export interface RunningScript {
  child: ChildProcess;
  output: () => string;
  /** Resolves to the exit code once the process has exited. */
  exited: Promise<number | null>;
  /** SIGTERM, then waits for the exit; resolves to the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Runs an entry point of this project in its own process (with `args`), stopped in teardown:
 * a TypeScript source by its path in the project, through tsx, or a built `.js` file by its
 * absolute path, with plain node.
 */
export function runScript(t: Test, entry: string, env: Record<string, string>, args: readonly string[] = []): RunningScript {
  const built = isAbsolute(entry) && entry.endsWith('.js');
  const path = built ? entry : fileURLToPath(new URL(`../../${entry}`, import.meta.url));
  return runCommand(t, process.execPath, [...(built ? [] : ['--import', 'tsx']), path, ...args], env);
}

/**
 * Runs `command` (e.g. `npm start`) from the project's folder with the environment `runScript`
 * gives, its output gathered; stopped with SIGKILL in teardown if it still runs.
 */
export function runCommand(t: Test, command: string, args: readonly string[], env: Record<string, string>): RunningScript {
  const child = spawn(command, args, {
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
    // The projector's and the relay's metrics ports on ephemeral ports unless a test names them: files run in parallel.
    env: { ...process.env, LOG_LEVEL: 'warn', PROJECTOR_METRICS_PORT: '0', RELAY_METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exited;
  };
  t.teardown(() => stop('SIGKILL').then(() => undefined));
  return { child, output: () => output, exited, stop };
}

/**
 * What `promise` gives, or a failure naming `what` once `ms` have passed; the timer is
 * cleared as soon as the promise settles, so a passing test does not wait it out.
 */
export function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const gaveUp = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, gaveUp]).finally(() => clearTimeout(timer));
}

/** Whether a process of this id still runs (signal 0 checks without signalling). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The supervisor and its role processes as its "users service started" line names them (`npm start`, `start.js`). */
export async function startedStack(script: RunningScript, timeoutMs = 30_000): Promise<{ supervisor: number; roles: Record<string, number> }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = script.output().split('\n').find((l) => l.includes('"msg":"users service started"'));
    if (line) {
      const { pid, roles } = JSON.parse(line) as { pid: number; roles: Record<string, number> };
      return { supervisor: pid, roles };
    }
    if (script.child.exitCode !== null) throw new Error(`start exited early:\n${script.output()}`);
    if (Date.now() > deadline) throw new Error(`not started after ${timeoutMs} ms:\n${script.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Polls `url` until it answers 200, or fails with what the process printed. */
export async function waitUntilHealthy(url: string, script: RunningScript, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    if (script.child.exitCode !== null) throw new Error(`process exited early:\n${script.output()}`);
    if (Date.now() > deadline) throw new Error(`${url} not healthy after ${timeoutMs} ms:\n${script.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
