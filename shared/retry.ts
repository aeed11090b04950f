import { setTimeout as sleep } from 'node:timers/promises';

/** Capped exponential backoff with full jitter: the n-th delay is random in [0, min(cap, base * 2^n)]. */
export function backoffDelay(attempt: number, baseMs = 100, capMs = 10_000): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** attempt);
}

/** `work`'s outcome, or `timedOut()`'s error thrown after `ms` (the work itself is not stopped: `timedOut` may release it). */
export function withTimeout<T>(work: Promise<T>, ms: number, timedOut: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut()), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

export const isRetriable = (error: unknown): boolean =>
  typeof error === 'object' && error !== null && (error as { retriable?: unknown }).retriable === true;

/**
 * `work` run once, its promise shared by every caller, until it fails: the next call after
 * a failure runs it again (a connection, a check against a store that may be down).
 */
export function onceUntilFailure<T>(work: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined;
  return () =>
    (running ??= work().catch((error: unknown) => {
      running = undefined;
      throw error;
    }));
}

/**
 * Runs `work` until it succeeds, retrying retriable errors with backoff; any other
 * error is thrown at once. `onRetry` is told of each failure so callers can log
 * state changes rather than every attempt.
 */
export async function retrying<T>(
  work: () => Promise<T>,
  options: { signal?: AbortSignal; onRetry?: (error: unknown, attempt: number) => void; capMs?: number } = {},
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      if (!isRetriable(error) || options.signal?.aborted) throw error;
      options.onRetry?.(error, attempt);
      await sleep(backoffDelay(attempt, 100, options.capMs), undefined, { signal: options.signal });
    }
  }
}
