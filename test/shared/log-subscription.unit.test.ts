import t from 'tap';
import { pollingSubscription } from '../../shared/event-store/log-subscription.js';
import type { RecordedEvent } from '../../shared/event-store/port.js';

/** A log that is always caught up and wakes its subscriber at once, as under a writer committing without pause. */
function alwaysWaking() {
  let reads = 0;
  return {
    reads: () => reads,
    source: {
      readAll: () => {
        reads += 1;
        return Promise.resolve([] as RecordedEvent[]);
      },
      waitForAppend: () => new Promise<void>((resolve) => setImmediate(resolve)),
    },
  };
}

async function readsDuring(ms: number, options: { minIntervalMs?: number }) {
  const log = alwaysWaking();
  const subscription = pollingSubscription(log.source, { pollMs: 1000, ...options });
  const iterator = subscription[Symbol.asyncIterator]();
  void iterator.next();
  await new Promise((resolve) => setTimeout(resolve, ms));
  await subscription.close();
  return log.reads();
}

void t.test('a caught-up subscriber woken at every commit reads at most once per minIntervalMs', async (t) => {
  const paced = await readsDuring(300, { minIntervalMs: 50 });
  t.ok(paced >= 2 && paced <= 9, `${paced} reads in 300 ms at one per 50 ms at most`);
  const unpaced = await readsDuring(300, {});
  t.ok(unpaced > 3 * paced, `without the interval it reads at every wake-up (${unpaced} reads)`);
});
