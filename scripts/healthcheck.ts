/**
 * The container's health check (`node dist/scripts/healthcheck.js`): exits 0 when
 * `/health/live` on this machine answers 2xx within 3 s, else 1. One image serves
 * every role, so HEALTHCHECK_PORT names the port of the role in the container
 * (the write API's COMMAND_PORT, 3000, when unset). Reads no other configuration,
 * so it cannot fail on settings that concern only the role.
 */
const port = process.env.HEALTHCHECK_PORT ?? process.env.COMMAND_PORT ?? '3000';

try {
  const response = await fetch(`http://127.0.0.1:${port}/health/live`, { signal: AbortSignal.timeout(3000) });
  await response.body?.cancel();
  process.exitCode = response.ok ? 0 : 1;
  if (!response.ok) process.stderr.write(`health check: port ${port} answered ${response.status}\n`);
} catch (error) {
  // fetch's own message is "fetch failed"; its cause says why (ECONNREFUSED, a timeout).
  const reason = error instanceof Error && error.cause instanceof Error ? error.cause.message : String(error);
  process.stderr.write(`health check: port ${port}: ${reason}\n`);
  process.exitCode = 1;
}
