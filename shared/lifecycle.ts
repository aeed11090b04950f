import type { Logger } from 'pino';
import { stopTracing } from './tracing.js';

/**
 * How long after the first signal another one counts as the same: a terminal's Ctrl-C
 * reaches a process directly and again through the npm (and tsx) wrappers above it,
 * within milliseconds.
 */
export const repeatedSignalMs = 1000;

/**
 * Graceful shutdown: the first SIGTERM or SIGINT runs `shutdown` (finish what is
 * in flight, close what was opened); a second one, later than `repeatedSignalMs`
 * after the first, exits at once.
 */
export function onShutdownSignal(logger: Logger, shutdown: () => Promise<void>): void {
  let stoppingSince: number | undefined;
  const handle = (signal: NodeJS.Signals | 'disconnect') => {
    if (stoppingSince !== undefined) {
      if (signal === 'disconnect' || Date.now() - stoppingSince < repeatedSignalMs) return;
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    stoppingSince = Date.now();
    logger.info({ signal }, 'shutting down');
    // The spans of the work just finished are exported last (nothing to do when tracing is off).
    shutdown().finally(stopTracing).then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handle);
  process.on('SIGINT', handle);
  // Started by `npm start` (an IPC channel): a supervisor that went away, even killed, stops this role too.
  if (process.connected) process.once('disconnect', () => handle('disconnect'));
}

/** Tells a supervising `npm start` (scripts/start.ts) that this role is up; a role run alone has no one to tell. */
export function reportReady(role: string): void {
  // Not once the channel has closed (a supervisor that went away while this role started): a send then fails with
  // an 'error' event that nothing handles, ending the process with a stack trace in the middle of its drain.
  if (process.connected && process.send) process.send({ ready: role }, (error: Error | null) => void error);
}

/** Logs a start-up failure (e.g. invalid configuration) in plain words and exits non-zero. */
export function exitOnStartupError(role: string) {
  return (error: unknown) => {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`${role} could not start: ${message}\n`);
    process.exitCode = 1;
    // The supervisor reports why (e.g. the port in use); the message must leave before the exit.
    if (process.connected && process.send) process.send({ failed: role, message }, () => process.exit(1));
    else process.exit(1);
  };
}
