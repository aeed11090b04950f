import { randomUUID } from 'node:crypto';
import type { Test } from 'tap';
import type { EventStore, RecordedEvent } from '../../shared/event-store/port.js';
import { within } from '../support/processes.js';

/**
 * The behaviour every event store adapter must have. Run it from an adapter's test
 * file: `eventStoreContract(t, async () => ({ store, cleanup }))`. Stream ids are
 * random, so the suite also runs against a store that already holds data.
 */
export interface StoreUnderTest {
  store: EventStore;
  cleanup(): Promise<void>;
}

const event = (n: number) => ({ type: 'Counted', data: { n }, metadata: { correlationId: `c-${n}` } });
const stream = () => `contract-${randomUUID()}`;

async function take(iterable: AsyncIterable<RecordedEvent>, count: number, predicate: (e: RecordedEvent) => boolean) {
  const taken: RecordedEvent[] = [];
  for await (const e of iterable) {
    if (predicate(e)) taken.push(e);
    if (taken.length === count) break;
  }
  return taken;
}

/** What an adapter declares of the port's optional reads. */
export interface ContractOptions {
  /** Whether it reads the log stream after stream (`readAllByStream`). */
  readsByStream: boolean;
  /** Whether it appends to several streams in one transaction (`appendToStreams`). */
  appendsToStreams: boolean;
  /** Whether it can keep a stream to its last events (`capStream`); false when absent. */
  capsStreams?: boolean;
  /**
   * For stores that commit the appends made in one turn of the event loop as
   * one group: a stream id whose appends make the commit of their whole group
   * fail (a seam the test opened the store with).
   */
  commitFailsFor?: string;
}

export function eventStoreContract(t: Test, open: () => Promise<StoreUnderTest>, options: ContractOptions): void {
  async function withStore(t: Test, body: (store: EventStore) => Promise<void>) {
    const { store, cleanup } = await open();
    t.teardown(cleanup);
    await body(store);
  }

  void t.test('appends to a new stream with no_stream and reads it back in order', (t) =>
    withStore(t, async (store) => {
      const id = stream();
      const result = await store.appendToStream(id, [event(1), event(2)], { expectedRevision: 'no_stream' });
      t.equal(result.nextExpectedRevision, 1);
      const read = await store.readStream(id);
      t.same(
        read.map((e) => [e.streamId, e.revision, e.type, e.data, e.metadata.correlationId]),
        [
          [id, 0, 'Counted', { n: 1 }, 'c-1'],
          [id, 1, 'Counted', { n: 2 }, 'c-2'],
        ],
      );
      t.equal(read[1]?.position, result.position, 'the result names the last event position');
      t.ok(read[0]!.position < read[1]!.position, 'positions grow');
      t.ok(read.every((e) => typeof e.id === 'string' && e.recordedAt instanceof Date));
    }),
  );

  void t.test('keeps the event id given by the caller', (t) =>
    withStore(t, async (store) => {
      const id = stream();
      const eventId = randomUUID();
      await store.appendToStream(id, [{ ...event(1), id: eventId }], { expectedRevision: 'any' });
      t.equal((await store.readStream(id))[0]?.id, eventId);
    }),
  );

  void t.test('enforces the expected revision', (t) =>
    withStore(t, async (store) => {
      const id = stream();
      await t.rejects(store.appendToStream(id, [event(1)], { expectedRevision: 0 }), {
        name: 'ConcurrencyError',
        code: 'REVISION_CONFLICT',
        actual: -1,
      });
      await t.rejects(store.appendToStream(id, [event(1)], { expectedRevision: 'stream_exists' }), {
        name: 'ConcurrencyError',
      });
      await store.appendToStream(id, [event(1)], { expectedRevision: 'no_stream' });
      await t.rejects(store.appendToStream(id, [event(2)], { expectedRevision: 'no_stream' }), {
        name: 'ConcurrencyError',
        actual: 0,
      });
      await t.rejects(store.appendToStream(id, [event(2)], { expectedRevision: 5 }), { name: 'ConcurrencyError' });
      const second = await store.appendToStream(id, [event(2)], { expectedRevision: 0 });
      t.equal(second.nextExpectedRevision, 1);
      const third = await store.appendToStream(id, [event(3)], { expectedRevision: 'stream_exists' });
      t.equal(third.nextExpectedRevision, 2);
      const fourth = await store.appendToStream(id, [event(4)], { expectedRevision: 'any' });
      t.equal(fourth.nextExpectedRevision, 3);
      t.same((await store.readStream(id)).map((e) => (e.data as { n: number }).n), [1, 2, 3, 4]);
    }),
  );

  void t.test('lets exactly one of two concurrent appends at the same revision win', (t) =>
    withStore(t, async (store) => {
      const id = stream();
      await store.appendToStream(id, [event(0)], { expectedRevision: 'no_stream' });
      const results = await Promise.allSettled(
        [1, 2, 3, 4].map((n) => store.appendToStream(id, [event(n)], { expectedRevision: 0 })),
      );
      t.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      t.equal((await store.readStream(id)).length, 2);
    }),
  );

  void t.test('reads a stream from a revision, and an unknown stream as empty', (t) =>
    withStore(t, async (store) => {
      const id = stream();
      await store.appendToStream(id, [event(1), event(2), event(3)], { expectedRevision: 'no_stream' });
      t.same((await store.readStream(id, { fromRevision: 1 })).map((e) => e.revision), [1, 2]);
      t.same(await store.readStream(stream()), []);
    }),
  );

  void t.test('reads a stream backwards from its end or from a revision, and at most maxCount events either way', (t) =>
    withStore(t, async (store) => {
      const id = stream();
      await store.appendToStream(id, [event(0), event(1), event(2), event(3)], { expectedRevision: 'no_stream' });
      const revisions = (events: readonly RecordedEvent[]) => events.map((e) => e.revision);
      const forwards = await store.readStream(id);
      const last = await store.readStream(id, { backwards: true, maxCount: 1 });
      t.same(
        last.map((e) => [e.streamId, e.revision, e.position, e.id, e.type, e.data, e.metadata.correlationId]),
        [[id, 3, forwards[3]!.position, forwards[3]!.id, 'Counted', { n: 3 }, 'c-3']],
        'the last event alone, as recorded',
      );
      t.ok(last[0]!.recordedAt instanceof Date);
      t.same(revisions(await store.readStream(id, { backwards: true })), [3, 2, 1, 0], 'the whole stream, last first');
      t.same(revisions(await store.readStream(id, { backwards: true, maxCount: 2 })), [3, 2]);
      t.same(revisions(await store.readStream(id, { backwards: true, fromRevision: 1 })), [1, 0], 'from a revision towards the start');
      t.same(revisions(await store.readStream(id, { backwards: true, fromRevision: 2, maxCount: 2 })), [2, 1]);
      t.same(revisions(await store.readStream(id, { maxCount: 2 })), [0, 1], 'forwards, at most maxCount');
      t.same(revisions(await store.readStream(id, { fromRevision: 2, maxCount: 5 })), [2, 3]);
      t.same(await store.readStream(stream(), { backwards: true, maxCount: 1 }), [], 'an unknown stream reads as empty backwards too');
      await store.appendToStream(id, [event(4)], { expectedRevision: 3 });
      t.same(revisions(await store.readStream(id, { backwards: true, maxCount: 1 })), [4], 'the last event follows appends');
    }),
  );

  if (options.capsStreams) {
    void t.test('caps a stream at its last events: revisions and expected revisions go on as before', (t) =>
      withStore(t, async (store) => {
        const revisions = (events: readonly RecordedEvent[]) => events.map((e) => e.revision);
        const id = stream();
        await store.appendToStream(id, [0, 1, 2, 3, 4].map(event), { expectedRevision: 'no_stream' });
        await store.capStream!(id, 2);
        t.same(revisions(await store.readStream(id)), [3, 4], 'a read finds the last two');
        t.same(revisions(await store.readStream(id, { backwards: true, maxCount: 1 })), [4], 'the last event is kept');
        await t.rejects(store.appendToStream(id, [event(5)], { expectedRevision: 1 }), { name: 'ConcurrencyError', actual: 4 });
        const next = await store.appendToStream(id, [event(5)], { expectedRevision: 4 });
        t.equal(next.nextExpectedRevision, 5, 'an append names the real last revision');
        t.same(revisions(await store.readStream(id)), [4, 5], 'the window moves with the appends');
        await store.capStream!(id, 3);
        t.same(revisions(await store.readStream(id)), [4, 5], 'a stream already capped keeps its cap');

        const before = stream();
        await store.capStream!(before, 1);
        await store.appendToStream(before, [event(0), event(1), event(2)], { expectedRevision: 'no_stream' });
        t.same(revisions(await store.readStream(before)), [2], 'a cap set before the stream exists holds once it does');
      }),
    );
  } else {
    void t.test('offers no cap on a stream: every event stays readable', (t) =>
      withStore(t, async (store) => {
        t.equal(store.capStream, undefined);
      }),
    );
  }

  void t.test('reads the global log after a position, in append order, in pages', (t) =>
    withStore(t, async (store) => {
      const a = stream();
      const b = stream();
      const first = await store.appendToStream(a, [event(1)], { expectedRevision: 'no_stream' });
      await store.appendToStream(b, [event(2), event(3)], { expectedRevision: 'no_stream' });
      await store.appendToStream(a, [event(4)], { expectedRevision: 0 });
      const page = await store.readAll({ after: first.position, maxCount: 2 });
      t.same(page.map((e) => [e.streamId, (e.data as { n: number }).n]), [
        [b, 2],
        [b, 3],
      ]);
      const rest = await store.readAll({ after: page[1]!.position, maxCount: 100 });
      t.same(
        rest.filter((e) => e.streamId === a || e.streamId === b).map((e) => (e.data as { n: number }).n),
        [4],
      );
      const fromStart = await store.readAll({ maxCount: 100_000 });
      const ours = fromStart.filter((e) => e.streamId === a || e.streamId === b);
      t.same(ours.map((e) => (e.data as { n: number }).n), [1, 2, 3, 4]);
      for (let i = 1; i < fromStart.length; i++) t.ok(fromStart[i - 1]!.position < fromStart[i]!.position);
    }),
  );

  void t.test('subscribes from a position, catches up, then tails live appends', (t) =>
    withStore(t, async (store) => {
      const id = stream();
      const first = await store.appendToStream(id, [event(1)], { expectedRevision: 'no_stream' });
      await store.appendToStream(id, [event(2)], { expectedRevision: 0 });
      const subscription = store.subscribeToAll({ after: first.position });
      t.teardown(() => subscription.close());
      const received = take(subscription, 3, (e) => e.streamId === id);
      // Appended after the subscription started: must arrive live.
      setTimeout(() => void store.appendToStream(id, [event(3), event(4)], { expectedRevision: 1 }), 50);
      t.same((await received).map((e) => (e.data as { n: number }).n), [2, 3, 4]);
    }),
  );

  void t.test('filters a subscription by stream prefix', (t) =>
    withStore(t, async (store) => {
      const prefix = `contract-${randomUUID()}-`;
      const wanted = `${prefix}one`;
      const head = await store.readAll({ maxCount: 1 });
      const subscription = store.subscribeToAll({ streamPrefixes: [prefix] });
      t.teardown(() => subscription.close());
      await store.appendToStream(stream(), [event(1)], { expectedRevision: 'no_stream' });
      await store.appendToStream(wanted, [event(2)], { expectedRevision: 'no_stream' });
      const [first] = await take(subscription, 1, () => true);
      t.equal(first?.streamId, wanted, `first event seen after ${head.length ? 'existing' : 'no'} history`);
    }),
  );

  void t.test('a subscription reports when it has caught up with the log', (t) =>
    withStore(t, async (store) => {
      await store.appendToStream(stream(), [event(1)], { expectedRevision: 'no_stream' });
      let caughtUp: () => void = () => {};
      const live = new Promise<void>((resolve) => (caughtUp = resolve));
      const subscription = store.subscribeToAll({ onLiveChange: (isLive) => isLive && caughtUp() });
      t.teardown(() => subscription.close());
      const draining = (async () => {
        for await (const _ of subscription) {
          // consume until closed
        }
      })();
      await within(5000, 'never caught up', live);
      t.pass('caught up');
      await subscription.close();
      await draining;
    }),
  );

  void t.test('a closed subscription ends its iteration', (t) =>
    withStore(t, async (store) => {
      const subscription = store.subscribeToAll();
      const iterator = subscription[Symbol.asyncIterator]();
      const pending = (async () => {
        for (;;) {
          const next = await iterator.next();
          if (next.done) return 'ended';
        }
      })();
      await new Promise((r) => setTimeout(r, 30));
      await subscription.close();
      t.equal(await pending, 'ended');
    }),
  );

  multiStreamAppends(t, withStore, options.appendsToStreams);

  if (!options.readsByStream) {
    void t.test('offers no stream-ordered read, so replays read in order of position', (t) =>
      withStore(t, async (store) => {
        t.equal(store.readAllByStream, undefined);
      }),
    );
  } else {
    void t.test('reads the log up to a position stream after stream, in full pages, only the prefix\'s streams', (t) =>
      withStore(t, async (store) => {
        const prefix = `bystream-${randomUUID()}-`;
        const [a, b, c] = [`${prefix}a`, `${prefix}b`, `${prefix}c`];
        const other = stream();
        // Interleaved in the log; seven events, six of them in the prefix's streams.
        await store.appendToStream(b, [event(1)], { expectedRevision: 'no_stream' });
        await store.appendToStream(a, [event(2), event(3)], { expectedRevision: 'no_stream' });
        await store.appendToStream(other, [event(4)], { expectedRevision: 'no_stream' });
        await store.appendToStream(c, [event(5)], { expectedRevision: 'no_stream' });
        await store.appendToStream(b, [event(6)], { expectedRevision: 0 });
        const until = (await store.appendToStream(a, [event(7)], { expectedRevision: 1 })).position;
        // After `until`: not part of the read.
        await store.appendToStream(a, [event(8)], { expectedRevision: 2 });
        await store.appendToStream(`${prefix}d`, [event(9)], { expectedRevision: 'no_stream' });

        const pages: Array<readonly { streamId: string; revision: number; position: bigint; type: string; data: unknown }[]> = [];
        for await (const page of store.readAllByStream!({ streamPrefix: prefix, until, pageSize: 2 })) pages.push(page);
        t.same(
          pages.map((p) => p.length),
          [2, 2, 2],
          'full pages; a last page that ends the read exactly is not followed by an empty one',
        );
        const read = pages.flat();
        const byStream = new Map<string, number[]>();
        for (const e of read) byStream.set(e.streamId, [...(byStream.get(e.streamId) ?? []), (e.data as { n: number }).n]);
        t.same(
          [...byStream.keys()].sort(),
          [a, b, c],
          'only the prefix\'s streams, as they stood at `until`',
        );
        t.same(Object.fromEntries(byStream), { [a]: [2, 3, 7], [b]: [1, 6], [c]: [5] }, "each stream's events in order of revision");
        const seen = new Set<string>();
        for (let i = 0; i < read.length; i++) {
          const e = read[i]!;
          if (i > 0 && read[i - 1]!.streamId !== e.streamId) {
            t.notOk(seen.has(e.streamId), `${e.streamId} comes in one run`);
            seen.add(read[i - 1]!.streamId);
          }
        }
        const recorded = new Map((await Promise.all([a, b, c].map((s) => store.readStream(s)))).flat().map((e) => [`${e.streamId}@${e.revision}`, e]));
        for (const e of read) {
          const original = recorded.get(`${e.streamId}@${e.revision}`);
          t.same([e.position, e.type, e.data], [original?.position, original?.type, original?.data], `${e.streamId}@${e.revision} as recorded`);
        }
      }),
    );

    void t.test('a stream-ordered read left early stops, and the store reads on as before', (t) =>
      withStore(t, async (store) => {
        const prefix = `bystream-${randomUUID()}-`;
        let until = 0n;
        for (let i = 0; i < 12; i++) until = (await store.appendToStream(`${prefix}${i}`, [event(i)], { expectedRevision: 'no_stream' })).position;
        for await (const page of store.readAllByStream!({ streamPrefix: prefix, until, pageSize: 3 })) {
          t.equal(page.length, 3);
          break;
        }
        let count = 0;
        for await (const page of store.readAllByStream!({ streamPrefix: prefix, until, pageSize: 5 })) count += page.length;
        t.equal(count, 12, 'a second read sees everything');
        t.equal((await store.readAll({ after: until - 1n, maxCount: 10 }))[0]?.position, until);
        await t.rejects(
          (async () => {
            for await (const page of store.readAllByStream!({ streamPrefix: '', until, pageSize: 3 })) t.fail(`read ${page.length} events`);
          })(),
          /needs a stream prefix/,
        );
      }),
    );
  }

  void t.test('a closed store refuses appends; an append under way at the close finishes first', (t) =>
    withStore(t, async (store) => {
      const id = stream();
      const underWay = store.appendToStream(id, [event(1)], { expectedRevision: 'no_stream' });
      await store.close();
      t.equal((await underWay).nextExpectedRevision, 0, 'the append made before the close');
      await t.rejects(store.appendToStream(id, [event(2)], { expectedRevision: 0 }), /closed/);
      await store.close();
    }),
  );

  void t.test('concurrent appends to different streams each succeed with their own position', (t) =>
    withStore(t, async (store) => {
      const ids = Array.from({ length: 40 }, () => stream());
      const results = await Promise.all(ids.map((id, n) => store.appendToStream(id, [event(n), event(n + 1)], { expectedRevision: 'no_stream' })));
      t.ok(results.every((r) => r.nextExpectedRevision === 1), 'each append has its own revisions');
      t.equal(new Set(results.map((r) => r.position)).size, ids.length, 'and its own position');
      for (const [n, id] of ids.entries()) {
        const read = await store.readStream(id);
        t.same(read.map((e) => e.data), [{ n }, { n: n + 1 }], `${id} holds its own events`);
        t.equal(read[1]!.position, results[n]!.position, 'the result names its last event');
      }
    }),
  );

  void t.test('concurrent appends to one stream are serialised: each gets a revision of its own', (t) =>
    withStore(t, async (store) => {
      const id = stream();
      const results = await Promise.all(Array.from({ length: 20 }, (_, n) => store.appendToStream(id, [event(n)], { expectedRevision: 'any' })));
      const read = await store.readStream(id);
      t.same(read.map((e) => e.revision), Array.from({ length: 20 }, (_, n) => n));
      t.same(
        [...results.map((r) => r.nextExpectedRevision)].sort((a, b) => a - b),
        read.map((e) => e.revision),
        'every append reports the revision it took',
      );
      for (const result of results) {
        t.same(read[result.nextExpectedRevision]!.position, result.position, 'and the position it took');
      }
    }),
  );

  void t.test('a conflict among concurrent appends fails that append alone', (t) =>
    withStore(t, async (store) => {
      const [first, left, conflicted, right] = [stream(), stream(), stream(), stream()];
      await store.appendToStream(conflicted, [event(0)], { expectedRevision: 'no_stream' });
      // The first append is in flight while the others arrive: a grouping store commits them together.
      const results = await Promise.allSettled([
        store.appendToStream(first, [event(1)], { expectedRevision: 'no_stream' }),
        store.appendToStream(left, [event(2)], { expectedRevision: 'no_stream' }),
        store.appendToStream(conflicted, [event(3)], { expectedRevision: 5 }),
        store.appendToStream(right, [event(4)], { expectedRevision: 'no_stream' }),
      ]);
      t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
      t.match((results[2] as PromiseRejectedResult).reason, { name: 'ConcurrencyError', code: 'REVISION_CONFLICT', actual: 0 });
      t.same((await store.readStream(left)).map((e) => e.data), [{ n: 2 }], 'its neighbours are written');
      t.same((await store.readStream(right)).map((e) => e.data), [{ n: 4 }]);
      t.same((await store.readStream(conflicted)).map((e) => e.data), [{ n: 0 }], 'the conflicted stream is unchanged');
    }),
  );

  const failing = options.commitFailsFor;
  if (failing !== undefined) {
    void t.test('a commit that fails fails every append of its group and writes none of them', (t) =>
      withStore(t, async (store) => {
        const before = stream();
        await store.appendToStream(before, [event(0)], { expectedRevision: 'no_stream' });
        const [left, right] = [stream(), stream()];
        const results = await Promise.allSettled([
          store.appendToStream(left, [event(2)], { expectedRevision: 'no_stream' }),
          store.appendToStream(failing, [event(3)], { expectedRevision: 'any' }),
          store.appendToStream(right, [event(4)], { expectedRevision: 'no_stream' }),
        ]);
        const reasons = results.map((r) => (r.status === 'rejected' ? (r.reason as Error) : undefined));
        t.ok(reasons.every((reason) => reason !== undefined), 'every waiter of the failed group gets the error');
        t.ok(reasons.every((reason) => reason === reasons[0]), 'the same error');
        t.match(reasons[0], { name: 'StoreUnavailableError', retriable: true });
        for (const id of [left, failing, right]) t.same(await store.readStream(id), [], `${id}: nothing half-written`);
        t.same((await store.readStream(before)).map((e) => e.data), [{ n: 0 }], 'what committed before is untouched');
        await store.appendToStream(left, [event(5)], { expectedRevision: 'no_stream' });
        t.same((await store.readStream(left)).map((e) => e.data), [{ n: 5 }], 'the store goes on appending');
      }),
    );
  }
}

function multiStreamAppends(t: Test, withStore: (t: Test, body: (store: EventStore) => Promise<void>) => Promise<void>, offered: boolean) {
  if (!offered) {
    void t.test('offers no multi-stream append, so callers append stream by stream', (t) =>
      withStore(t, async (store) => {
        t.equal(store.appendToStreams, undefined);
      }),
    );
    return;
  }

  void t.test('appends to several streams at once, in the order given', (t) =>
    withStore(t, async (store) => {
      const [a, b] = [stream(), stream()];
      await store.appendToStream(b, [event(0)], { expectedRevision: 'no_stream' });
      const results = await store.appendToStreams!([
        { streamId: a, events: [event(1), event(2)], expectedRevision: 'no_stream' },
        { streamId: b, events: [event(3)], expectedRevision: 0 },
      ]);
      t.same(results.map((r) => r.nextExpectedRevision), [1, 1], 'one result per stream');
      t.ok(results[1]!.position > results[0]!.position);
      const [readA, readB] = [await store.readStream(a), await store.readStream(b)];
      t.same(readA.map((e) => e.data), [{ n: 1 }, { n: 2 }]);
      t.same(readB.map((e) => e.data), [{ n: 0 }, { n: 3 }]);
      const positions = [...readA, readB[1]!].map((e) => e.position);
      t.same(positions, [...positions].sort((x, y) => (x < y ? -1 : 1)), 'positions follow the order given');
      t.equal(positions[2]!, results[1]!.position);
    }),
  );

  void t.test('a multi-stream append with one stream out of place writes none of them', (t) =>
    withStore(t, async (store) => {
      const [a, b, neighbour] = [stream(), stream(), stream()];
      await store.appendToStream(b, [event(0)], { expectedRevision: 'no_stream' });
      const [together, alone] = await Promise.allSettled([
        store.appendToStreams!([
          { streamId: a, events: [event(1)], expectedRevision: 'no_stream' },
          { streamId: b, events: [event(2)], expectedRevision: 'no_stream' },
        ]),
        store.appendToStream(neighbour, [event(3)], { expectedRevision: 'no_stream' }),
      ]);
      t.equal(together.status, 'rejected');
      t.match((together as PromiseRejectedResult).reason, { name: 'ConcurrencyError', streamId: b, actual: 0 });
      t.same(await store.readStream(a), [], 'the stream that was in place is not written either');
      t.same((await store.readStream(b)).map((e) => e.data), [{ n: 0 }]);
      t.equal(alone.status, 'fulfilled', 'an append alongside it is not affected');
      t.same((await store.readStream(neighbour)).map((e) => e.data), [{ n: 3 }]);
    }),
  );
}
