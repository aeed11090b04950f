import { decodeConsistencyToken } from '../shared/consistency-token.js';
import { ServiceError } from '../shared/errors.js';
import { uuidPattern } from '../shared/schema-validation.js';
import { userIdFromStream, userStreamId } from '../shared/user-events.js';

export interface WriteWait {
  /** The VERSION of the user's row, -1 when there is none. */
  versionOf: (userId: string) => Promise<number>;
  /** Longest wait (`CONSISTENCY_WAIT_MS`). */
  timeoutMs: number;
  /** Resolves when the read DB may have changed, or after `ms`. */
  waitForChange: (ms: number) => Promise<unknown>;
  /** Whether the projector's quarantine holds the write at this revision (parked, or held behind one parked before it). */
  quarantined?: (streamId: string, revision: number) => Promise<boolean>;
  /** Aborted when the read API closes. */
  closing?: AbortSignal;
  /** Aborted when the caller closes its connection. */
  left?: AbortSignal;
}

/** How long a wait runs before it asks whether the user's events are quarantined, and how often after. */
const quarantineLookAfterMs = 50;
const quarantineLookEveryMs = 1000;

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
 *
 * A write whose user's events the projector has parked (an event it could not apply, and the
 * user's later ones held behind it) is not applied until an operator releases them: a wait for it
 * ends as soon as it sees that, WRITE_QUARANTINED (503 without Retry-After), rather than time
 * out and invite a retry every second until someone acts. It asks once the wait has run a little
 * (most waits end within milliseconds, before any such look) and about once a second after.
 */
export async function waitForWrite(token: string, wait: WriteWait): Promise<void> {
  const { versionOf, timeoutMs, waitForChange, quarantined, closing, left } = wait;
  const { streamId, revision } = decodeConsistencyToken(token);
  // The write API names users by UUID; ids are case-insensitive, as in the read API's paths.
  // Anything else can never be satisfied: 400, not a wait that ends in 503 and a retry for ever.
  const named = userIdFromStream(streamId);
  if (!named || !uuidPattern.test(named)) throw new ServiceError('INVALID_CONSISTENCY_TOKEN', 'Consistency-Token does not name a user stream (user-<uuid>@<revision>)');
  const userId = named.toLowerCase();
  const started = Date.now();
  const deadline = started + timeoutMs;
  let nextQuarantineLook = started + quarantineLookAfterMs;
  for (let pause = 2; ; pause = Math.min(pause * 2, 50)) {
    if ((await versionOf(userId)) >= revision) return;
    if (closing?.aborted) {
      throw new ServiceError('SHUTTING_DOWN', `this instance is shutting down before the read model applied ${token}; retry the read`, true);
    }
    if (left?.aborted) throw new ServiceError('CONSISTENCY_TIMEOUT', `the caller closed its connection before the read model applied ${token}`, true);
    const now = Date.now();
    if (quarantined && (now >= nextQuarantineLook || now >= deadline)) {
      nextQuarantineLook = now + quarantineLookEveryMs;
      // Looked at after the version: a release that applied the write in between was seen above.
      if (await quarantined(userStreamId(userId), revision)) {
        throw new ServiceError(
          'WRITE_QUARANTINED',
          `${token} is in the event log, but the projector holds this user's events in quarantine (an event it could not apply); the read model shows it once an operator releases them`,
        );
      }
    }
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
