/**
 * Groups an async stream of items into batches: a batch holds whatever has
 * arrived by the time the consumer is ready, up to `maxSize`, so a busy stream
 * gives big batches and a quiet one gives low latency. The reader runs at most
 * `maxSize` items ahead of the consumer.
 *
 * While items keep arriving (a stream being caught up with, not a trickle), a
 * batch not yet full waits for more, up to `lingerMs` after its first item:
 * otherwise a consumer as fast as the reader takes a handful at a time and pays
 * its per-batch cost (a round trip to a broker, a transaction) for each
 * handful. A millisecond without a new item ends the wait, so an item that
 * arrives alone is handed on at most a millisecond later than without it.
 */
export async function* inBatches<T>(source: AsyncIterable<T>, maxSize: number, options: { lingerMs?: number } = {}): AsyncGenerator<T[]> {
  const lingerMs = options.lingerMs ?? 0;
  const queue: T[] = [];
  let done = false;
  let failure: unknown;
  let wakeConsumer: (() => void) | undefined;
  let wakeReader: (() => void) | undefined;

  void (async () => {
    try {
      for await (const item of source) {
        queue.push(item);
        wakeConsumer?.();
        if (queue.length >= maxSize) await new Promise<void>((resolve) => (wakeReader = resolve));
      }
    } catch (error) {
      failure = error;
    } finally {
      done = true;
      wakeConsumer?.();
    }
  })();

  try {
    for (;;) {
      if (queue.length === 0 && !done) await new Promise<void>((resolve) => (wakeConsumer = resolve));
      wakeConsumer = undefined;
      // Let items that are already on their way join this batch, and more while they keep coming.
      const started = performance.now();
      await new Promise((resolve) => setImmediate(resolve));
      while (lingerMs > 0 && queue.length < maxSize && !done && performance.now() - started < lingerMs) {
        const seen = queue.length;
        await new Promise((resolve) => setTimeout(resolve, 1));
        if (queue.length === seen) break; // a millisecond without an item: the stream is quiet
      }
      if (queue.length === 0) {
        if (failure) throw failure instanceof Error ? failure : new Error('batch source failed', { cause: failure });
        if (done) return;
        continue;
      }
      const batch = queue.splice(0, maxSize);
      wakeReader?.();
      wakeReader = undefined;
      yield batch;
    }
  } finally {
    // The source is closed by its owner; this only lets a paused reader see that.
    wakeReader?.();
  }
}
