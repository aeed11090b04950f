import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import type { EventStore, LoggedEvent } from '../../shared/event-store/port.js';
import { sqliteEventStore } from '../../shared/event-store/sqlite-event-store.js';
import { groupCommitter, writerCheckpointPages } from '../../shared/event-store/sqlite-group-commit.js';
import { cursorAfter, eventsOfPage, firstCursor, pageStatements, pieceSizer, pieceUnits, readPage, type PageStatements } from '../../shared/event-store/sqlite-log-pages.js';
import { logReader } from '../../shared/event-store/sqlite-long-reads.js';
import { eventStoreContract } from '../contracts/event-store.contract.js';
import { walFrames } from '../support/sqlite-wal.js';

void t.test('in-memory event store', async (t) => {
  eventStoreContract(t, () => {
    const store = inMemoryEventStore();
    return Promise.resolve({ store, cleanup: () => store.close() });
  }, { readsByStream: true, appendsToStreams: true });
});

void t.test('embedded SQLite event store', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'users-es-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // One file shared by every case, like a long-lived store with history in it.
  const file = join(dir, 'events.sqlite');
  const commitFailsFor = 'contract-commit-fails';
  eventStoreContract(t, () => {
    const store = sqliteEventStore({ file, pollMs: 10, failCommitsFor: [commitFailsFor] });
    return Promise.resolve({ store, cleanup: () => store.close() });
  }, { readsByStream: true, appendsToStreams: true, commitFailsFor });

  void t.test('survives a reopen: what was appended is still there', async (t) => {
    const first = sqliteEventStore({ file: join(dir, 'reopen.sqlite') });
    await first.appendToStream('s', [{ type: 'A', data: { v: 1 } }], { expectedRevision: 'no_stream' });
    await first.close();
    const second = sqliteEventStore({ file: join(dir, 'reopen.sqlite') });
    t.teardown(() => second.close());
    t.same((await second.readStream('s')).map((e) => e.data), [{ v: 1 }]);
  });

  void t.test('appends wait for another process\'s write lock, and a group that cannot get it fails whole', async (t) => {
    const shared = join(dir, 'locked.sqlite');
    const store = sqliteEventStore({ file: shared, busyTimeoutMs: 100 });
    t.teardown(() => store.close());
    await store.appendToStream('warm', [{ type: 'A', data: {} }], { expectedRevision: 'no_stream' });
    // Another connection (as another process would) holds the write lock for longer than the store waits.
    const other = new Database(shared);
    other.exec('BEGIN IMMEDIATE');
    const results = await Promise.allSettled(
      ['a', 'b', 'c'].map((id) => store.appendToStream(id, [{ type: 'A', data: { id } }], { expectedRevision: 'no_stream' })),
    );
    other.exec('ROLLBACK');
    other.close();
    t.ok(results.every((r) => r.status === 'rejected'), 'every waiter gets the error');
    t.match((results[0] as PromiseRejectedResult).reason, { name: 'StoreUnavailableError', retriable: true, message: /SQLITE_BUSY/ });
    for (const id of ['a', 'b', 'c']) t.same(await store.readStream(id), [], `${id}: nothing written`);
    const after = await store.appendToStream('a', [{ type: 'A', data: {} }], { expectedRevision: 'no_stream' });
    t.equal(after.nextExpectedRevision, 0, 'once the lock is free, appends go on');
  });

  void t.test('a burst of appends shares transactions', async (t) => {
    const file = join(dir, 'burst.sqlite');
    await sqliteEventStore({ file }).close(); // creates the schema
    const writer = groupCommitter({ file, busyTimeoutMs: 5000, translate: (error) => error });
    t.teardown(() => writer.close());
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, n) => writer.append([{ streamId: `burst-${n}`, events: [{ type: 'A', data: { n } }], expectedRevision: 'no_stream' }])),
    );
    const first = writer.stats();
    t.match(first, { groups: 1, appends: 200 }, 'appends made in one turn of the event loop share one transaction');
    t.ok(first.seconds > 0 && first.seconds < 5, `its transaction timed: ${first.seconds} s`);
    const more = await Promise.all([
      writer.append([{ streamId: 'one', events: [{ type: 'A', data: {} }], expectedRevision: 'no_stream' }]),
      // Made while the first is committing: both travel and commit after it.
      new Promise<void>((resolve) => setImmediate(resolve)).then(() => writer.append([{ streamId: 'two', events: [{ type: 'A', data: {} }], expectedRevision: 'no_stream' }])),
    ]);
    t.equal(more.length, 2);
    t.ok(writer.stats().groups <= 3, `${writer.stats().groups} groups for 202 appends`);
    t.ok(writer.stats().seconds > first.seconds, 'the later transactions add their time');
    t.equal(new Set(results.map(([r]) => r!.position)).size, 200);
    const db = new Database(file, { readonly: true });
    t.teardown(() => db.close());
    t.equal((db.prepare('SELECT COUNT(*) AS n FROM events').get() as { n: number }).n, 202, 'all on disk');
  });

  void t.test("each transaction's time goes to its observers, and a failing observer costs no append its outcome", async (t) => {
    const file = join(dir, 'observed.sqlite');
    const store = sqliteEventStore({ file });
    t.teardown(() => store.close());
    const heard: number[] = [];
    const stop = store.observeCommits!((seconds) => heard.push(seconds));
    store.observeCommits!(() => {
      throw new Error('an observer that fails');
    });
    const appended = await Promise.all(['a', 'b'].map((id) => store.appendToStream(id, [{ type: 'A', data: {} }], { expectedRevision: 'no_stream' })));
    t.equal(appended.length, 2, 'both appends answered, whatever an observer does');
    await store.appendToStream('c', [{ type: 'A', data: {} }], { expectedRevision: 'no_stream' });
    const stats = store.writerStats!();
    t.equal(heard.length, stats.groups, 'one observation per transaction');
    t.ok(Math.abs(heard.reduce((sum, s) => sum + s, 0) - stats.seconds) < 1e-9, 'the times the stats add up');
    stop();
    await store.appendToStream('d', [{ type: 'A', data: {} }], { expectedRevision: 'no_stream' });
    t.equal(heard.length, stats.groups, 'a stopped observer hears no more');
    t.equal(store.writerStats!().groups, stats.groups + 1);
  });

  void t.test('the writer checkpoints every few hundred WAL pages, so no commit waits on a large one', async (t) => {
    const file = join(dir, 'checkpoints.sqlite');
    const store = sqliteEventStore({ file });
    t.teardown(() => store.close());
    // 100 groups of 20 new streams: each new stream a random leaf of the stream index, some 2,500 WAL frames in all.
    for (let group = 0; group < 100; group++) {
      await Promise.all(
        Array.from({ length: 20 }, () => store.appendToStream(`s-${Math.random().toString(36).slice(2)}`, [{ type: 'A', data: { pad: 'x'.repeat(200) } }], { expectedRevision: 'no_stream' })),
      );
    }
    // The log restarts after each checkpoint, so its file holds at most the threshold plus the group that crossed it.
    const frames = await walFrames(file);
    t.ok(frames <= writerCheckpointPages + 100, `the log holds ${frames} frames at its largest (checkpoint at ${writerCheckpointPages}; SQLite's default would let it reach 1,000)`);
    t.equal((await store.readAll({ maxCount: 3000 })).length, 2000, 'every append is there');
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
    const first = await Promise.race([
      subscription[Symbol.asyncIterator]().next(),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no event within 10 s')), 10_000).unref()),
    ]);
    t.equal(first.done, false, 'the subscription delivered an event');
    t.equal(first.value?.streamId, 'x');
  });
});

void t.test('embedded SQLite event store, long reads on a worker thread', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'users-es-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'events.sqlite');
  eventStoreContract(
    t,
    () => {
      const store = sqliteEventStore({ file, pollMs: 10, readAllInWorker: true });
      return Promise.resolve({ store, cleanup: () => store.close() });
    },
    { readsByStream: true, appendsToStreams: true },
  );

  const readByStream = async (store: EventStore, streamPrefix: string, pageSize = 1000) => {
    const read: LoggedEvent[] = [];
    for await (const page of store.readAllByStream!({ streamPrefix, until: 1n << 60n, pageSize })) read.push(...page);
    return read;
  };

  void t.test('any stored data, stream id and position comes through a page exactly, in SQLite\'s order', async (t) => {
    const store = sqliteEventStore({ file: join(dir, 'exact.sqlite'), readAllInWorker: true });
    t.teardown(() => store.close());
    const data = { text: 'quote " backslash \\ newline \n tab \t', clef: '𝄞', nested: [1, [2, { deep: null }]], big: 2 ** 53 - 1, float: 0.1 };
    // Ids that need escaping, and code points whose order differs between UTF-8 and UTF-16.
    const streams = ['p-"quoted"', 'p-back\\slash', 'p-\uFFFF', 'p-😀', 'p-plain'];
    for (const id of streams) await store.appendToStream(id, [{ type: 'T"1', data }, { type: 'T2', data: [] }], { expectedRevision: 'no_stream' });
    const read = await readByStream(store, 'p-', 3);
    t.same(
      read.map((e) => e.streamId),
      ['p-"quoted"', 'p-"quoted"', 'p-back\\slash', 'p-back\\slash', 'p-plain', 'p-plain', 'p-\uFFFF', 'p-\uFFFF', 'p-😀', 'p-😀'],
      'streams in SQLite\'s (UTF-8) order, each one together',
    );
    const recorded = (await store.readAll({ maxCount: 100 })).map((e) => ({ streamId: e.streamId, revision: e.revision, position: e.position, type: e.type, data: e.data }));
    t.same(new Set(read), new Set(recorded), 'every event as readAll reads it');
  });

  void t.test('positions come through exactly, as numbers up to 2^53 - 1 and as strings past it', async (t) => {
    const file = join(dir, 'positions.sqlite');
    const store = sqliteEventStore({ file, readAllInWorker: true });
    t.teardown(() => store.close());
    for (const id of ['p-a', 'p-b']) await store.appendToStream(id, [{ type: 'A', data: { id } }, { type: 'B', data: [] }], { expectedRevision: 'no_stream' });
    const head = (await store.headPosition!())!;
    const readUntil = async (until: bigint) => {
      const read: LoggedEvent[] = [];
      for await (const page of store.readAllByStream!({ streamPrefix: 'p-', until, pageSize: 3 })) read.push(...page);
      return read.map((e) => [e.streamId, e.revision, e.position, e.type, e.data]);
    };
    const asNumbers = await readUntil(head);
    t.same(asNumbers.map((e) => e[2]), [1n, 2n, 3n, 4n], 'positions as bigints, read as numbers');
    t.same(await readUntil(BigInt(Number.MAX_SAFE_INTEGER)), asNumbers, 'the last exact number still reads as numbers');
    t.same(await readUntil(BigInt(Number.MAX_SAFE_INTEGER) + 1n), asNumbers, 'past it, as strings: the same events');
    // A log whose positions outgrew a double (SQLite's rowid goes to 2^63 - 1): not rounded.
    const big = 2n ** 60n + 3n;
    const raw = new Database(file);
    raw
      .prepare("INSERT INTO events (position, event_id, stream_id, revision, type, data, metadata, recorded_at) VALUES (?, 'e-big', 'p-c', 0, 'A', '{}', '{}', '2026-12-04T00:00:00.000Z')")
      .run(big);
    raw.close();
    const past = await readUntil(2n ** 61n);
    t.same(past.at(-1), ['p-c', 0, big, 'A', {}], `a position of 2^60 + 3 comes through as ${big}`);
    t.same(past.slice(0, -1), asNumbers, 'and the rest as before');
  });

  void t.test('stored data that is not JSON fails a stream-ordered read as it fails readAll', async (t) => {
    for (const readAllInWorker of [true, false]) {
      const broken = join(dir, `broken-${readAllInWorker}.sqlite`);
      const store = sqliteEventStore({ file: broken, readAllInWorker });
      t.teardown(() => store.close());
      await store.appendToStream('user-a', [{ type: 'A', data: { n: 1 } }], { expectedRevision: 'no_stream' });
      await store.appendToStream('user-b', [{ type: 'A', data: { n: 2 } }, { type: 'A', data: { n: 3 } }], { expectedRevision: 'no_stream' });
      const raw = new Database(broken);
      // Two broken rows that would make well-formed JSON together if pasted into one text.
      raw.prepare("UPDATE events SET data = '{\"n\": [' WHERE stream_id = 'user-b' AND revision = 0").run();
      raw.prepare("UPDATE events SET data = '1]}' WHERE stream_id = 'user-b' AND revision = 1").run();
      raw.close();
      await t.rejects(store.readAll({ maxCount: 10 }), SyntaxError, `readAll (worker: ${readAllInWorker})`);
      await t.rejects(readByStream(store, 'user-'), SyntaxError, `readAllByStream (worker: ${readAllInWorker})`);
      t.same((await readByStream(store, 'user-a')).map((e) => e.data), [{ n: 1 }], 'the intact stream still reads');
    }
  });

  void t.test('stored data that pastes into well-formed JSON still fails a stream-ordered read', async (t) => {
    const broken = join(dir, 'pasted.sqlite');
    const store = sqliteEventStore({ file: broken, readAllInWorker: true });
    t.teardown(() => store.close());
    await store.appendToStream('user-a', [{ type: 'A', data: { n: 1 } }], { expectedRevision: 'no_stream' });
    await store.appendToStream('user-b', [{ type: 'A', data: { n: 2 } }], { expectedRevision: 'no_stream' });
    const raw = new Database(broken);
    // Valid JSON as a whole page, but one row more than SQLite read: an event that is not in the log.
    raw.prepare(`UPDATE events SET data = '{"n": 2}],["9","user-b",1,"A",{"n": 3}' WHERE stream_id = 'user-b'`).run();
    raw.close();
    await t.rejects(readByStream(store, 'user-'), SyntaxError, 'the count gives it away');
    await t.rejects(store.readAll({ maxCount: 10 }), SyntaxError, 'as readAll fails on the row');
    t.same((await readByStream(store, 'user-a')).map((e) => e.data), [{ n: 1 }], 'the intact stream still reads');
  });

  void t.test('a long read over many pages: every event once, streams together, as the rows are', async (t) => {
    const store = sqliteEventStore({ file: join(dir, 'long.sqlite'), readAllInWorker: true });
    t.teardown(() => store.close());
    const ids = Array.from({ length: 300 }, (_, i) => `user-${String(i).padStart(4, '0')}`);
    for (let round = 0; round < 4; round++) {
      for (const [i, id] of ids.entries()) {
        if ((i + round) % 3 !== 0) await store.appendToStream(id, [{ type: 'A', data: { round, i } }], { expectedRevision: 'any' });
      }
    }
    const read = await readByStream(store, 'user-', 37);
    const expected = (await store.readAll({ maxCount: 10_000 })).sort((x, y) => (x.streamId === y.streamId ? x.revision - y.revision : x.streamId < y.streamId ? -1 : 1));
    t.same(
      read.map((e) => [e.streamId, e.revision, e.position, e.data]),
      expected.map((e) => [e.streamId, e.revision, e.position, e.data]),
    );
  });

  void t.test('a page too large for one text is read in pieces, each below V8\'s large objects, and comes whole', async (t) => {
    const file = join(dir, 'pieces.sqlite');
    const store = sqliteEventStore({ file, readAllInWorker: true });
    t.teardown(() => store.close());
    // Rows of about 1 KB, of varying sizes: a page of 200 would be a text of some 200 KB.
    const ids = Array.from({ length: 120 }, (_, i) => `user-${String(i).padStart(4, '0')}`);
    await store.appendToStreams!(
      ids.map((id, i) => ({
        streamId: id,
        events: [0, 1, 2].map((n) => ({ type: 'A', data: { i, n, pad: 'x'.repeat(400 + ((i * 37 + n * 101) % 1200)) } })),
        expectedRevision: 'no_stream' as const,
      })),
    );
    const expected = (await store.readAll({ maxCount: 10_000 }))
      .sort((x, y) => (x.streamId === y.streamId ? x.revision - y.revision : x.streamId < y.streamId ? -1 : 1))
      .map((e) => [e.streamId, e.revision, e.position, e.data]);
    const pages: number[] = [];
    const read: unknown[][] = [];
    for await (const page of store.readAllByStream!({ streamPrefix: 'user-', until: 1n << 60n, pageSize: 200 })) {
      pages.push(page.length);
      read.push(...page.map((e) => [e.streamId, e.revision, e.position, e.data]));
    }
    t.same(pages, [200, 160], 'pages of the size asked for, however many pieces each took');
    t.same(read, expected, 'every event once, in SQLite\'s order');

    const db = new Database(file, { readonly: true });
    t.teardown(() => db.close());
    const sizer = pieceSizer();
    const first = readPage(pageStatements(db), firstCursor('user-', 1n << 60n, 200), sizer);
    t.ok(first.pieces.length > 1, `the first page came in ${first.pieces.length} pieces`);
    t.same(first.pieces.reduce((sum, p) => sum + p.count, 0), 200, 'of 200 rows in all');
    // The first piece is read before the sizer has seen a row; every later one is sized from the rows before it.
    const later = first.pieces.slice(1).map((p) => p.text.length);
    t.ok(later.every((units) => units <= pieceUnits * 1.5), `the later pieces' texts hold ${later.join(', ')} units (target ${pieceUnits})`);
    t.same(first.next, first.pieces.at(-1)!.last, 'the page goes on where its last piece ended');
    const second = readPage(pageStatements(db), cursorAfter(firstCursor('user-', 1n << 60n, 200), first.next!), sizer);
    t.same([...eventsOfPage(first), ...eventsOfPage(second)].map((e) => [e.streamId, e.revision, e.position, e.data]), expected, 'the pieces\' events, in order');
    t.equal(second.next, undefined, 'the last page says so');
  });

  void t.test('while its thread starts, a stream-ordered read reads here, then the thread goes on from there', async (t) => {
    const file = join(dir, 'handover.sqlite');
    const store = sqliteEventStore({ file });
    const ids = Array.from({ length: 400 }, (_, i) => `user-${String(i).padStart(4, '0')}`);
    await store.appendToStreams!(ids.map((id, i) => ({ streamId: id, events: [{ type: 'A', data: { i } }, { type: 'B', data: { i } }], expectedRevision: 'no_stream' })));
    const expected = (await readByStream(store, 'user-', 1000)).map((e) => [e.streamId, e.revision, e.position, e.data]);
    await store.close();

    const db = new Database(file, { readonly: true });
    t.teardown(() => db.close());
    // This connection's statements, counting the pages read with them.
    const own = pageStatements(db);
    let readHere = 0;
    const counting = (statement: PageStatements['pageText']) =>
      ({ get: (...params: unknown[]) => (readHere++, statement.get(...params)) }) as unknown as PageStatements['pageText'];
    const counted: PageStatements = { ...own, pageText: counting(own.pageText), pageTextWide: counting(own.pageTextWide) };
    const reader = logReader(file, 'SELECT 1 WHERE ? < ?', (error) => error as Error);
    t.teardown(() => reader.close());
    const read: unknown[][] = [];
    let pages = 0;
    for await (const page of reader.byStream(firstCursor('user-', 1n << 60n, 7), () => counted)) {
      pages += 1;
      read.push(...page.map((e) => [e.streamId, e.revision, e.position, e.data]));
      // The first page is read here (the thread has just been started); the thread takes over once it is ready.
      if (pages === 1) await reader.whenReady();
    }
    t.same(read, expected, 'every event once, streams together, in the same order as a read by the thread alone');
    t.ok(readHere > 0, `the first pages were read here (${readHere} of ${pages})`);
    t.ok(readHere < pages - 1, 'the thread took over once it was ready');
  });
});
