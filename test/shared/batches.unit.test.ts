import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { inBatches } from '../../shared/event-feed/batches.js';

/** Items 0..count-1, one every `everyMs` (0: as fast as the event loop turns). */
async function* trickle(count: number, everyMs: number) {
  for (let i = 0; i < count; i++) {
    if (everyMs > 0) await sleep(everyMs);
    else await new Promise((resolve) => setImmediate(resolve));
    yield i;
  }
}

async function collect(source: AsyncIterable<number>, maxSize: number, lingerMs?: number) {
  const batches: number[][] = [];
  const handedAt: number[] = [];
  for await (const batch of inBatches(source, maxSize, lingerMs === undefined ? {} : { lingerMs })) {
    batches.push(batch);
    handedAt.push(performance.now());
    // A consumer as fast as the reader: each batch costs about as much as an item takes to arrive.
    await new Promise((resolve) => setImmediate(resolve));
  }
  return { batches, handedAt };
}

void t.test('every item once, in order, no batch above the maximum', async (t) => {
  const { batches } = await collect(trickle(500, 0), 64, 20);
  t.same(batches.flat(), Array.from({ length: 500 }, (_, i) => i));
  t.ok(batches.every((b) => b.length >= 1 && b.length <= 64));
});

void t.test('a stream that keeps coming fills bigger batches with a linger than without', async (t) => {
  const without = await collect(trickle(400, 0), 1000);
  const lingering = await collect(trickle(400, 0), 1000, 50);
  t.ok(
    lingering.batches.length * 4 <= without.batches.length,
    `${lingering.batches.length} batches with a 50 ms linger, ${without.batches.length} without`,
  );
});

void t.test('an item that arrives alone is handed on at once, linger or not', async (t) => {
  const started = performance.now();
  const source = (async function* () {
    yield 1;
    await sleep(200);
    yield 2;
  })();
  const iterator = inBatches(source, 1000, { lingerMs: 100 })[Symbol.asyncIterator]();
  const first = await iterator.next();
  const waited = performance.now() - started;
  t.same(first.value, [1]);
  t.ok(waited < 50, `handed on after ${waited.toFixed(1)} ms, not after the 100 ms linger`);
  t.same((await iterator.next()).value, [2]);
  t.equal((await iterator.next()).done, true);
});
