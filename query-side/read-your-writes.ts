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
 * Retry-After) rather than let the caller read stale data.
 */
export async function waitForWrite(
  token: string,
  versionOf: (userId: string) => Promise<number>,
  timeoutMs: number,
  waitForChange: (ms: number) => Promise<unknown>,
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
    const left = deadline - Date.now();
    if (left <= 0) break;
    await waitForChange(Math.min(pause, left));
  }
  throw new ServiceError(
    'CONSISTENCY_TIMEOUT',
    `the read model has not applied ${token} yet (waited ${timeoutMs} ms); retry shortly`,
    true,
  );
}
