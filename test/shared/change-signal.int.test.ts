import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { announceChange, changeSignalFile, sharedTicker, watchChanges } from '../../shared/change-signal.js';
import { sqliteEventStore } from '../../shared/event-store/sqlite-event-store.js';
import { announceReadDbChange, openReadDb } from '../../shared/read-db.js';
import { migrateReadDb } from '../../shared/read-model/migrations.js';
import { openUserReads } from '../../query-side/user-reads.js';
import { within } from '../support/processes.js';

/** How long a wake-up may take before the case fails: far below the polls these cases set. */
const patience = 10_000;

const nextChange = (file: string) =>
  new Promise<{ close(): void }>((resolve) => {
    const watching = watchChanges(file, () => resolve(watching));
  });

void t.test('a commit announced on a file wakes whoever watches it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'users-signal-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'store.sqlite');

  const first = nextChange(file);
  t.ok(existsSync(changeSignalFile(file)), 'watching creates the signal file');
  announceChange(file);
  (await within(patience, 'the watcher was not woken', first)).close();

  // The signal file removed by hand: the watcher watches the name again, and the next announcement still wakes it.
  let woken = 0;
  const watching = watchChanges(file, () => (woken += 1));
  t.teardown(() => watching.close());
  rmSync(changeSignalFile(file));
  await within(
    patience,
    'the signal file was not made again',
    (async () => {
      while (!existsSync(changeSignalFile(file))) await new Promise((resolve) => setTimeout(resolve, 10));
    })(),
  );
  const before = woken;
  announceChange(file);
  await within(
    patience,
    'the watcher was not woken after the signal file was replaced',
    (async () => {
      while (woken === before) await new Promise((resolve) => setTimeout(resolve, 10));
    })(),
  );

  // Closed: no more calls.
  watching.close();
  const after = woken;
  announceChange(file);
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal(woken, after, 'a closed watch calls nothing');

  t.doesNotThrow(() => announceChange(join(dir, 'missing', 'store.sqlite')), 'announcing never throws (readers also poll)');
});

void t.test('a subscriber in another process is woken by the writer\'s commit, not by its poll', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'users-signal-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'events.sqlite');
  // Two stores on one file share nothing in memory, as two processes would; the reader would poll once a minute.
  const writer = sqliteEventStore({ file });
  const reader = sqliteEventStore({ file, pollMs: 60_000 });
  const subscription = reader.subscribeToAll();
  t.teardown(async () => {
    await subscription.close();
    await reader.close();
    await writer.close();
  });
  const iterator = subscription[Symbol.asyncIterator]();
  await writer.appendToStream('first', [{ type: 'A', data: {} }], { expectedRevision: 'no_stream' });
  t.equal((await within(patience, 'the first event did not arrive', iterator.next())).value?.streamId, 'first');
  // Caught up now: the subscription waits. The next append reaches it through the change signal alone.
  const next = iterator.next();
  await new Promise((resolve) => setTimeout(resolve, 50));
  await writer.appendToStream('second', [{ type: 'A', data: {} }], { expectedRevision: 'no_stream' });
  t.equal((await within(patience, 'the subscriber was not woken by the commit', next)).value?.streamId, 'second');
});

void t.test('a read waiting for the embedded read DB is woken by the projector\'s commit', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'users-signal-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const db = await openReadDb({ client: 'sqlite', file: join(dir, 'queries.sqlite') });
  await migrateReadDb(db);
  const reads = openUserReads(db, { timeoutMs: 5000 });
  t.teardown(async () => {
    await reads.close();
    await db.destroy();
  });
  const waiting = reads.waitForChange(60_000);
  await new Promise((resolve) => setTimeout(resolve, 50));
  announceReadDbChange(db);
  await within(patience, 'the wait was not woken by the commit', waiting);
  t.pass('woken long before its minute ran out');
});

void t.test('a shared tick wakes the waits that can only poll, together, and runs no timer while none waits', async (t) => {
  const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
  const idle = timers();
  const ticks = sharedTicker(5);
  const woken: number[] = [];
  await within(patience, 'the tick did not wake the waits', Promise.all([1, 2, 3].map((n) => ticks.wait(60_000).then(() => woken.push(n)))));
  t.same(woken.sort(), [1, 2, 3], 'every wait woke at a tick, long before its minute');
  t.equal(timers(), idle, 'the tick stops once nothing waits');
});
