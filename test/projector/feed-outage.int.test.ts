import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import t from 'tap';
import { userProjector } from '../../projector/projector.js';
import { eventStoreFeed, globalLogSource } from '../../shared/event-feed/event-store-feed.js';
import { StoreUnavailableError } from '../../shared/errors.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { pollingSubscription } from '../../shared/event-store/log-subscription.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { forEachReadDb } from '../support/read-dbs.js';
import { commandsOver, expectedRows, seedUsers, tableRows, waitFor } from '../support/seed.js';
import { testVault } from '../support/vault.js';

/**
 * The event store's log cannot be read for a moment under a running projector (the embedded
 * store's file busy past its timeout, an I/O error): the projector waits and reads on from its
 * checkpoint, as it does when the read DB goes away, rather than stopping (and, under `npm start`,
 * taking every role with it).
 */
forEachReadDb(t, async (t, db) => {
  const store = inMemoryEventStore();
  let failures = 0;
  const flaky: EventStore = {
    ...store,
    subscribeToAll: (options) =>
      pollingSubscription(
        {
          async readAll(read) {
            if (failures > 0) {
              failures--;
              throw new StoreUnavailableError('event store unavailable: the log could not be read');
            }
            return store.readAll(read);
          },
          waitForAppend: (ms) => sleep(Math.min(ms, 20)),
        },
        options,
      ),
  };
  const warnings: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line).msg as string) });
  const projector = userProjector({ db, feed: eventStoreFeed(flaky, { vault: testVault, batchSize: 5 }), logger });
  let stopped: unknown;
  projector.start().then(
    () => (stopped = 'returned'),
    (error: unknown) => (stopped = error),
  );
  t.teardown(() => projector.stop());
  const commands = commandsOver(store);
  const head = async () => (await store.readAll({ maxCount: 100_000 })).at(-1)!.position.toString();

  await seedUsers(commands, 6, 'before');
  await waitFor(async () => projector.status().checkpoints[globalLogSource] === (await head()), 10_000, 'the first users');
  failures = 3;
  await seedUsers(commands, 6, 'during');
  await waitFor(async () => stopped !== undefined || projector.status().checkpoints[globalLogSource] === (await head()), 10_000, 'the users written while the log failed');
  t.equal(stopped, undefined, 'the projector did not stop');
  t.equal(failures, 0, 'the log failed three times under it');
  t.ok(projector.status().running, 'still running');
  t.same(await tableRows(db), await expectedRows(store), 'every user projected once, nothing lost');
  t.equal(warnings.filter((m) => m.startsWith('event feed failed')).length, 3, 'each failure logged');
});

void t.test("the embedded feed waits out the key store's outage, says so, and delivers every event", async (t) => {
  const store = inMemoryEventStore();
  await seedUsers(commandsOver(store), 3, 'keys');
  let failures = 2;
  const retries: number[] = [];
  const feed = eventStoreFeed(store, {
    batchSize: 100,
    vault: {
      open: (events, options) => {
        if (failures-- > 0) return Promise.reject(new StoreUnavailableError('key store unavailable'));
        return testVault.open(events, options);
      },
    },
    onKeyStoreRetry: (_error, attempt) => retries.push(attempt),
  });
  t.teardown(() => feed.close());
  const expected = (await store.readAll({ maxCount: 1000 })).length;
  const delivered: string[] = [];
  for await (const batch of feed.batches(new Map())) {
    delivered.push(...batch.events.map((e) => `${e.streamId}@${e.revision}`));
    if (delivered.length >= expected) break;
  }
  t.same(retries, [0, 1], 'each failed attempt told, numbered');
  t.equal(delivered.length, expected, 'every event delivered once the key store answers');
});
