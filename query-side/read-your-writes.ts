import { decodeConsistencyToken } from '../shared/consistency-token.js';
import { ServiceError } from '../shared/errors.js';
import { uuidPattern } from '../shared/schema-validation.js';
import { userIdFromStream } from '../shared/user-events.js';

/**
 * Waits until the read model has applied the write a consistency token names,
 * looking at the row's VERSION again whenever the read DB may have changed
 * (`waitForChange`: the projector's change signal on the embedded read DB, a
 * shared tick on MariaDB) and after a short growing pause in any case, for at
 * most `timeoutMs`. Past that it throws a retriable CONSISTENCY_TIMEOUT (503 with
 * Retry-After) rather than let the caller read stale data. Once `closing` is aborted (the
 * read API closes) it looks once more and then throws SHUTTING_DOWN: a wait may last
 * `CONSISTENCY_WAIT_MS` (up to 600 s), and the close, which waits for the requests under
 * way, would otherwise wait as long, past a container's stop grace period. Once `left` is aborted
 * (the caller closed its connection) it stops looking at once: no one is left to answer.
 */
export async function waitForWrite(
  token: string,
  versionOf: (userId: string) => Promise<number>,
  timeoutMs: number,
  waitForChange: (ms: number) => Promise<unknown>,
  closing?: AbortSignal,
  left?: AbortSignal,
): Promise<void> {
  const { streamId, revision } = decodeConsistencyToken(token);
  // The write API names users by UUID; ids are case-insensitive, as in the read API's paths.
  // Anything else can never be satisfied: 400, not a wait that ends in 503 and a retry for ever.
  const named = userIdFromStream(streamId);
  if (!named || !uuidPattern.test(named)) throw new ServiceError('INVALID_CONSISTENCY_TOKEN', 'Consistency-Token does not name a user stream (user-<uuid>@<revision>)');
  const userId = named.toLowerCase();
  const deadline = Date.now() + timeoutMs;
  for (let pause = 2; ; pause = Math.min(pause * 2, 50)) {
    if ((await versionOf(userId)) >= revision) return;
    if (closing?.aborted) {
      throw new ServiceError('SHUTTING_DOWN', `this instance is shutting down before the read model applied ${token}; retry the read`, true);
    }
    if (left?.aborted) throw new ServiceError('CONSISTENCY_TIMEOUT', `the caller closed its connection before the read model applied ${token}`, true);
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    const change = waitForChange(Math.min(pause, remaining));
    await (closing || left ? untilAnyOf(change, closing, left) : change);
  }
  throw new ServiceError(
    'CONSISTENCY_TIMEOUT',
    `the read model has not applied ${token} yet (waited ${timeoutMs} ms); retry shortly`,
    true,
  );
}

/** `wait`, or the abort of either signal if that comes first. */
function untilAnyOf(wait: Promise<unknown>, ...signals: (AbortSignal | undefined)[]): Promise<unknown> {
  const watched = signals.filter((signal): signal is AbortSignal => signal !== undefined);
  if (watched.some((signal) => signal.aborted)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const aborted = () => {
      stopWatching();
      resolve(undefined);
    };
    const stopWatching = () => {
      for (const signal of watched) signal.removeEventListener('abort', aborted);
    };
    for (const signal of watched) signal.addEventListener('abort', aborted, { once: true });
    wait.then(
      (value) => {
        stopWatching();
        resolve(value);
      },
      (error: unknown) => {
        stopWatching();
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
