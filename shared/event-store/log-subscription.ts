import { setTimeout as sleep } from 'node:timers/promises';
import type { LogSubscription, ReadAllOptions, RecordedEvent, SubscribeOptions } from './port.js';

export interface LogSource {
  readAll(options: ReadAllOptions): Promise<RecordedEvent[]>;
  /** Resolves when new events may exist, or after `ms` at the latest. */
  waitForAppend(ms: number): Promise<void>;
}

/**
 * A catch-up subscription over any store that can read its global log in pages:
 * reads page after page, and once caught up waits for the source's wake-up (an
 * append, here or in another process) or a poll interval, whichever comes first,
 * before reading again. With `minIntervalMs`, reads once caught up start at least
 * that far apart: a source that wakes its subscribers at every commit of a busy
 * writer is then read once per interval (one page, one batch downstream) rather
 * than once per commit, while an append after a quiet spell is read at once.
 */
export function pollingSubscription(
  source: LogSource,
  options: SubscribeOptions & { pageSize?: number; pollMs?: number; minIntervalMs?: number } = {},
): LogSubscription {
  const pageSize = options.pageSize ?? 500;
  const pollMs = options.pollMs ?? 20;
  const minIntervalMs = options.minIntervalMs ?? 0;
  const prefixes = options.streamPrefixes;
  let closed = false;
  let wakeClosed: () => void = () => {};
  const closedSignal = new Promise<void>((resolve) => (wakeClosed = resolve));

  async function* events(): AsyncGenerator<RecordedEvent> {
    let after = options.after;
    let live = false;
    const report = (now: boolean) => {
      if (now !== live) options.onLiveChange?.((live = now));
    };
    while (!closed) {
      const readAt = performance.now();
      const page = await source.readAll(after === undefined ? { maxCount: pageSize } : { after, maxCount: pageSize });
      for (const event of page) {
        if (closed) return;
        after = event.position;
        if (!prefixes || prefixes.some((p) => event.streamId.startsWith(p))) yield event;
      }
      report(page.length < pageSize);
      if (page.length < pageSize) {
        await Promise.race([source.waitForAppend(pollMs), closedSignal]);
        const early = readAt + minIntervalMs - performance.now();
        if (early > 0) await Promise.race([sleep(early), closedSignal]);
      }
    }
  }

  const iterator = events();
  return {
    [Symbol.asyncIterator]: () => iterator,
    async close() {
      closed = true;
      wakeClosed();
      await iterator.return(undefined);
    },
  };
}
