import type { Logger } from 'pino';

/**
 * Graceful shutdown: the first SIGTERM or SIGINT runs `shutdown` (finish what is
 * in flight, close what was opened); a second one exits at once.
 */
export function onShutdownSignal(logger: Logger, shutdown: () => Promise<void>): void {
  let stopping = false;
  const handle = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    shutdown().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handle);
  process.on('SIGINT', handle);
}

/** Logs a start-up failure (e.g. invalid configuration) in plain words and exits non-zero. */
export function exitOnStartupError(role: string) {
  return (error: unknown) => {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`${role} could not start: ${message}\n`);
    process.exit(1);
  };
}
