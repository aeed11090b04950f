import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { sqliteEventStore } from '../../shared/event-store/sqlite-event-store.js';
import { eventStoreContract } from '../contracts/event-store.contract.js';

void t.test('in-memory event store', async (t) => {
  eventStoreContract(t, () => {
    const store = inMemoryEventStore();
    return Promise.resolve({ store, cleanup: () => store.close() });
  });
});

void t.test('embedded SQLite event store', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'users-es-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // One file shared by every case, like a long-lived store with history in it.
  const file = join(dir, 'events.sqlite');
  eventStoreContract(t, () => {
    const store = sqliteEventStore({ file, pollMs: 10 });
    return Promise.resolve({ store, cleanup: () => store.close() });
  });

  void t.test('survives a reopen: what was appended is still there', async (t) => {
    const first = sqliteEventStore({ file: join(dir, 'reopen.sqlite') });
    await first.appendToStream('s', [{ type: 'A', data: { v: 1 } }], { expectedRevision: 'no_stream' });
    await first.close();
    const second = sqliteEventStore({ file: join(dir, 'reopen.sqlite') });
    t.teardown(() => second.close());
    t.same((await second.readStream('s')).map((e) => e.data), [{ v: 1 }]);
  });

  void t.test('a subscriber in one connection sees appends made through another', async (t) => {
    const writer = sqliteEventStore({ file: join(dir, 'shared.sqlite') });
    const reader = sqliteEventStore({ file: join(dir, 'shared.sqlite'), pollMs: 10 });
    const subscription = reader.subscribeToAll();
    t.teardown(async () => {
      await subscription.close();
      await reader.close();
      await writer.close();
    });
    await writer.appendToStream('x', [{ type: 'A', data: {} }], { expectedRevision: 'no_stream' });
    for await (const e of subscription) {
      t.equal(e.streamId, 'x');
      break;
    }
  });
});
