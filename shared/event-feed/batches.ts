/**
 * Groups an async stream of items into batches: a batch holds whatever has
 * arrived by the time the consumer is ready, up to `maxSize`, so a busy stream
 * gives big batches and a quiet one gives low latency. The reader runs at most
 * `maxSize` items ahead of the consumer.
 */
export async function* inBatches<T>(source: AsyncIterable<T>, maxSize: number): AsyncGenerator<T[]> {
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
      // Let items that are already on their way join this batch.
      await new Promise((resolve) => setImmediate(resolve));
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
