import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';

/** Ports this process has handed out: the kernel may give a port it gave before once it is free again. */
const handedOut = new Set<number>();

/** A port the kernel picks on 127.0.0.1 and lets go again. */
function pickPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * A port that was free a moment ago, on 127.0.0.1, and not one this process handed
 * out before: two calls in a row (a write API's port and a read API's) could
 * otherwise get the same port, and the second server to bind it would fail, or the
 * first would answer for both.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await pickPort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

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
  const child = spawn(process.execPath, [...(built ? [] : ['--import', 'tsx']), path, ...args], {
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
