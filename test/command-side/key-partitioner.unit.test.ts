import { randomBytes, randomUUID } from 'node:crypto';
import { Partitioners, type PartitionMetadata } from 'kafkajs';
import t from 'tap';
import { keyPartitioner, murmur2 } from '../../command-side/relay/key-partitioner.js';

const metadata = (count: number, down: number[] = []): PartitionMetadata[] =>
  Array.from({ length: count }, (_, partitionId) => ({
    partitionId,
    leader: down.includes(partitionId) ? -1 : 0,
    partitionErrorCode: 0,
    replicas: [0],
    isr: [0],
  }));

void t.test("murmur2 gives the Java client's values (its own test vectors)", async (t) => {
  const vectors: Array<[string, number]> = [
    ['21', -973932308],
    ['foobar', -790332482],
    ['a-little-bit-long-string', -985981536],
    ['a-little-bit-longer-string', -1486304829],
    ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
    ['abc', 479470107],
  ];
  for (const [key, hash] of vectors) t.equal(murmur2(Buffer.from(key)), hash, key);
});

void t.test("a keyed message goes where kafkajs's DefaultPartitioner sends it, for any key and partition count", async (t) => {
  const ours = keyPartitioner()();
  const theirs = Partitioners.DefaultPartitioner();
  let differing = 0;
  for (let i = 0; i < 20_000; i++) {
    // Stream ids as the relay keys them, and arbitrary bytes and text of every length up to 70 (every tail of a 4-byte block).
    const key = i % 3 === 0 ? `user-${randomUUID()}` : i % 3 === 1 ? randomBytes(i % 71) : `${'Zoë-山田'.repeat(i % 9)}${i}`;
    const partitions = metadata(1 + (i % 64));
    const message = { key, value: 'v' };
    if (ours({ topic: 'users.events.v1', partitionMetadata: partitions, message }) !== theirs({ topic: 'users.events.v1', partitionMetadata: partitions, message })) differing += 1;
  }
  t.equal(differing, 0, 'none of the 20,000 messages placed differently');
});

void t.test('a message with its own partition keeps it; one without a key goes round the partitions that have a leader', async (t) => {
  const ours = keyPartitioner()();
  t.equal(ours({ topic: 'x', partitionMetadata: metadata(6), message: { key: 'user-1', value: 'v', partition: 4 } }), 4);
  const seen = new Set<number>();
  for (let i = 0; i < 60; i++) seen.add(ours({ topic: 'x', partitionMetadata: metadata(6, [1, 3]), message: { value: 'v' } }));
  t.same([...seen].sort(), [0, 2, 4, 5], 'every partition with a leader, none without');
});

void t.test('pinned to the count it began with, a key stays in its partition when partitions are added; the count is learnt from each send', async (t) => {
  let seen: number | undefined;
  const pinnedAt3 = keyPartitioner({ pinned: () => 3, seen: (count) => void (seen = count) })();
  const unpinned = keyPartitioner()();
  let moved = 0;
  let stayed = 0;
  for (let i = 0; i < 3000; i++) {
    const message = { key: `user-${randomUUID()}`, value: 'v' };
    const before = unpinned({ topic: 'x', partitionMetadata: metadata(3), message });
    if (pinnedAt3({ topic: 'x', partitionMetadata: metadata(8), message }) === before) stayed += 1;
    if (unpinned({ topic: 'x', partitionMetadata: metadata(8), message }) !== before) moved += 1;
  }
  t.equal(stayed, 3000, 'pinned, every key where it went over 3 partitions');
  t.equal(seen, 8, 'the topic\'s count at the last send');
  t.ok(moved > 1500, `unpinned, ${moved} of 3,000 keys would have moved`);
  const pinnedAbove = keyPartitioner({ pinned: () => 8, seen: () => {} })();
  t.ok(pinnedAbove({ topic: 'x', partitionMetadata: metadata(3), message: { key: 'user-a', value: 'v' } }) < 3, 'a topic with fewer partitions than pinned: within its own');
});
