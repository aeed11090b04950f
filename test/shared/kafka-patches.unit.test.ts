import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import t from 'tap';
import { seededRandom } from '../support/seeded-random.js';

/**
 * `patches/kafkajs+2.2.4.patch` (applied by `npm ci`) makes kafkajs's produce
 * path cheaper without changing a byte it sends: encoders cut from Node's buffer
 * pool (still zero-filled), varints written in place (32-bit varlongs without a
 * Long), a record's headers written into the record's own encoder, the message not
 * copied per record, messages grouped per partition in one pass. And its consume
 * path without changing a message it hands over (below). These tests hold it to that.
 */
const require = createRequire(import.meta.url);
// kafkajs's internals are CommonJS and untyped: required by path, typed here as far as used.
const Encoder = require('kafkajs/src/protocol/encoder.js') as new (size?: number) => {
  buf: Buffer;
  buffer: Buffer;
  writeVarInt(value: number): unknown;
  writeVarLong(value: unknown): unknown;
  writeVarIntString(value: string): unknown;
};
const produceRequest = require('kafkajs/src/protocol/requests/produce/v3/request.js') as (options: unknown) => unknown;
const createRequest = require('kafkajs/src/protocol/request.js') as (options: unknown) => Promise<{ buffer: Buffer }>;
const Long = require('kafkajs/src/utils/long.js') as { fromNumber(value: number): unknown; fromString(value: string): unknown };
const groupMessagesPerPartition = require('kafkajs/src/producer/groupMessagesPerPartition.js') as (options: unknown) => Record<string, unknown[]>;

const t0 = 1767225600000;
const messages = [
  {
    key: 'user-1',
    value: 'small',
    headers: { 'content-type': 'application/json', 'event-type': 'user.registered.v1', 'event-id': 'e1' },
    timestamp: String(t0),
  },
  {
    key: Buffer.from('user-2'),
    // Multi-byte characters, and past the encoder's first 512 bytes so that it grows.
    value: JSON.stringify({ name: 'Zoë Ünïcødé 名前', pad: 'x'.repeat(700) }),
    headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', multi: ['a', 'b'] },
    timestamp: String(t0 + 300),
  },
  { key: null, value: null, timestamp: String(t0 + 100000) },
  { key: 'user-3', value: Buffer.alloc(2000, 7), headers: {}, timestamp: String(t0 - 5) },
  // A timestamp delta past 32 bits (about 35 days) and an empty header value.
  { key: 'user-4', value: 'later', headers: { 'event-type': 'user.renamed.v1', empty: '' }, timestamp: String(t0 + 3000000000) },
];

void t.test('a produce request encodes to the bytes unpatched kafkajs 2.2.4 sends', async (t) => {
  const request = produceRequest({
    acks: -1,
    timeout: 30000,
    producerId: Long.fromNumber(123456789),
    producerEpoch: 3,
    topicData: [
      {
        topic: 'users.events.v1',
        partitions: [
          { partition: 0, firstSequence: 1000, messages: messages.slice(0, 2) },
          { partition: 5, firstSequence: 2147483000, messages: messages.slice(2) },
        ],
      },
    ],
  });
  const frame = (await createRequest({ request, correlationId: 4242, clientId: 'users-service' })).buffer;
  // Recorded from kafkajs 2.2.4 as published (no patch applied), for this very input.
  t.equal(frame.length, 3212, 'same length');
  t.equal(createHash('sha256').update(frame).digest('hex'), '861d4bd4cc3fbcc9e7ff9bf5c341aed329b66805887da993dbc98f2cd5a82ae0', 'same bytes');
});

void t.test('varints of every width encode as LEB128 zig-zag, as before', async (t) => {
  const cases: Array<[number, string]> = [
    [0, '00'],
    [-1, '01'],
    [1, '02'],
    [63, '7e'],
    [-64, '7f'],
    [64, '8001'],
    [8191, 'fe7f'],
    [8192, '808001'],
    [-2147483648, 'ffffffff0f'],
    [2147483647, 'feffffff0f'],
  ];
  for (const [value, hex] of cases) {
    const encoder = new Encoder();
    encoder.writeVarInt(value);
    t.equal(encoder.buffer.toString('hex'), hex, `${value}`);
  }
});

void t.test('varlongs encode as before, through the 32-bit path or the 64-bit one', async (t) => {
  // Recorded from kafkajs 2.2.4 as published.
  const cases: Array<[number | string, string]> = [
    [0, '00'],
    [-1, '01'],
    [300, 'd804'],
    [-300, 'd704'],
    [1073741823, 'feffffff07'],
    [-1073741824, 'ffffffff07'],
    [2147483647, 'feffffff0f'],
    [-2147483648, 'ffffffff0f'],
    [2147483648, '8080808010'],
    [-2147483649, '8180808010'],
    [2592000000, '80a0f6a713'],
    [Number.MAX_SAFE_INTEGER, 'feffffffffffff1f'],
    ['-9223372036854775808', 'ffffffffffffffffff01'],
  ];
  for (const [value, hex] of cases) {
    const encoder = new Encoder();
    encoder.writeVarLong(typeof value === 'string' ? Long.fromString(value) : value);
    t.equal(encoder.buffer.toString('hex'), hex, `${value}`);
  }
});

void t.test('a new encoder is zero-filled even when the shared pool holds old bytes, and comes from the pool', async (t) => {
  for (let i = 0; i < 64; i++) Buffer.allocUnsafe(512).fill(0xab);
  const encoder = new Encoder();
  t.ok(encoder.buf.every((byte) => byte === 0), 'every byte zero');
  t.equal(encoder.buf.length, 512, 'the initial size, as before');
  t.equal(encoder.buf.buffer.byteLength, Buffer.poolSize, 'a slice of the pool, not an ArrayBuffer of its own: the patch is applied');
  encoder.writeVarIntString('x'.repeat(600));
  t.equal(encoder.buffer.length, 602, 'grows past its first buffer');
});

void t.test('messages are grouped per partition in their order', async (t) => {
  const keyed = Array.from({ length: 500 }, (_, i) => ({ key: `k${i % 7}`, value: `${i}` }));
  const partitioner = ({ message }: { message: { key: string } }) => Number(message.key.slice(1)) % 3;
  const grouped = groupMessagesPerPartition({ topic: 't', partitionMetadata: [{}, {}, {}], messages: keyed, partitioner });
  t.same(Object.keys(grouped), ['0', '1', '2']);
  for (const [partition, list] of Object.entries(grouped)) {
    t.same(list, keyed.filter((m) => partitioner({ message: m }) === Number(partition)), `partition ${partition}: its messages, in order`);
  }
  t.same(groupMessagesPerPartition({ topic: 't', partitionMetadata: [], messages: keyed, partitioner }), {}, 'no partitions: nothing');
});

/*
 * The consume path (same patch): a record decoded where it lies in the fetch
 * response, offsets and timestamps summed as numbers while exact, headers walked
 * where they lie and gathered (without an object spread per header) only when first
 * read, a batch's offsets compared as numbers while exact. The decoded messages must be the ones unpatched kafkajs gives, broken
 * records included.
 */
const decodeMessages = require('kafkajs/src/protocol/requests/fetch/v4/decodeMessages.js') as (decoder: unknown) => Promise<DecodedMessage[]>;
const Decoder = require('kafkajs/src/protocol/decoder.js') as new (buffer: Buffer) => unknown;
const Batch = require('kafkajs/src/consumer/batch.js') as new (topic: string, fetchedOffset: string, data: unknown) => { messages: DecodedMessage[] };
const { RecordBatch } = require('kafkajs/src/protocol/recordBatch/v0/index.js') as { RecordBatch: (options: unknown) => Promise<{ buffer: Buffer }> };
const RecordEncoder = require('kafkajs/src/protocol/recordBatch/record/v0/index.js') as (options: unknown) => unknown;
const { Types: Compression } = require('kafkajs/src/protocol/message/compression/index.js') as { Types: { None: number; GZIP: number } };

interface DecodedMessage {
  offset: string;
  timestamp: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, unknown>;
}

/** Every outcome as one text: buffers as hex, headers with their own keys (`__proto__` included) in order, errors by name and message. */
const outcomeText = (value: unknown) => JSON.stringify(value, (_key, v: unknown) => (v && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer' ? `hex:${Buffer.from((v as { data: number[] }).data).toString('hex')}` : v));
const attempt = async <T>(work: () => Promise<T>): Promise<T | string> => {
  try {
    return await work();
  } catch (error) {
    return `throws ${(error as Error).name}: ${(error as Error).message}`;
  }
};
const fetchFrame = (batches: Buffer) => {
  const frame = Buffer.alloc(4 + batches.length);
  frame.writeInt32BE(batches.length, 0);
  batches.copy(frame, 4);
  return frame;
};
/** The record batch's attributes (int16) sit after offset, length, leader epoch, magic byte and CRC. */
const withAttributes = (batch: Buffer, bits: number) => {
  const copy = Buffer.from(batch);
  copy.writeInt16BE(copy.readInt16BE(21) | bits, 21);
  return copy;
};

async function consumeCases(): Promise<unknown[]> {
  const random = seededRandom(20261203);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  const headerKeys = ['content-type', 'event-type', 'event-id', 'traceparent', '__proto__', 'constructor', 'toString', '1', '0', ''];
  const headerValues: (string | Buffer)[] = ['x', '', 'Zoë 名前', 'y'.repeat(200), Buffer.from([0, 1, 2])];
  const headersOf = () => {
    const headers: Record<string, unknown> = {};
    for (let n = Math.floor(random() * 5); n > 0; n--) {
      const value = pick(headerValues);
      // defineProperty, so that a `__proto__` key is an own header too (the encoder lists own keys).
      Object.defineProperty(headers, pick(headerKeys), { value: random() < 0.3 ? [value, 'again'] : value, enumerable: true, writable: true, configurable: true });
    }
    return headers;
  };
  const batchOf = async (firstOffset: string, firstTimestamp: number, count: number, compression: number, delta: (i: number) => number) => {
    const records = Array.from({ length: count }, (_, i) =>
      RecordEncoder({
        offsetDelta: i,
        timestampDelta: Long.fromString(String(delta(i))),
        key: pick([null, Buffer.from(`user-${i}`), Buffer.alloc(0)]),
        value: pick([null, Buffer.from(JSON.stringify({ i, text: 'é'.repeat(i % 40) })), Buffer.alloc(300, 1)]),
        headers: headersOf(),
      }),
    );
    const batch = await RecordBatch({ compression, firstOffset: Long.fromString(firstOffset), firstTimestamp, maxTimestamp: firstTimestamp + 99, lastOffsetDelta: count - 1, records });
    return batch.buffer;
  };
  // First offsets and timestamps about 2^53 and 2^63 too, where sums stop being exact as numbers.
  const offsets = ['0', '123456789', '9007199254740985', '9223372036854775700'];
  const timestamps = [1767225600000, 0, 9007199254740000, -1000];
  // Timestamp deltas of every varlong width: 1 byte, 4 bytes (2^27), 5 bytes and more, negative.
  const deltas = [(i: number) => i, (i: number) => -i * 1000, (i: number) => i * 2 ** 27, (i: number) => (i % 2 ? -1 : 1) * 2 ** 40, (i: number) => 2 ** 28 - 1 + i];
  const outcomes: unknown[] = [];
  const decode = (batches: Buffer) => attempt(() => decodeMessages(new Decoder(fetchFrame(batches))));
  for (const offset of offsets) {
    for (const timestamp of timestamps) {
      for (const delta of deltas) {
        const compression = pick([Compression.None, Compression.None, Compression.GZIP]);
        const batch = await batchOf(offset, timestamp, 1 + Math.floor(random() * 12), compression, delta);
        outcomes.push(await decode(batch));
        outcomes.push(await decode(withAttributes(batch, 0x08))); // log-append time
        outcomes.push(await decode(withAttributes(batch, 0x20))); // a control batch
      }
    }
  }
  // Two batches in one response, and a response cut inside the second (the partial tail a fetch may end with).
  const two = Buffer.concat([await batchOf('100', timestamps[0]!, 5, Compression.None, deltas[0]!), await batchOf('105', timestamps[0]!, 5, Compression.None, deltas[0]!)]);
  outcomes.push(await decode(two), await decode(two.subarray(0, two.length - 7)));
  // Broken records: a byte changed or its high bit flipped anywhere past the batch header, or the response cut short.
  for (let i = 0; i < 400; i++) {
    const batch = Buffer.from(await batchOf(pick(offsets), pick(timestamps), 3, Compression.None, pick(deltas)));
    const at = 61 + Math.floor(random() * (batch.length - 61));
    batch[at] = random() < 0.5 ? Math.floor(random() * 256) : batch[at]! ^ 0x80;
    outcomes.push(await decode(i % 4 === 0 ? batch.subarray(0, 40 + Math.floor(random() * (batch.length - 40))) : batch));
  }
  // A batch keeps the messages at or past the offset fetched from, as compared through Long.
  for (const offset of ['0', '9007199254740985', '9223372036854775700']) {
    const messages = await decodeMessages(new Decoder(fetchFrame(await batchOf(offset, 0, 12, Compression.None, deltas[0]!))));
    for (const fetched of ['0', '3', '9007199254740992', '9007199254740995', '9223372036854775705', '-2']) {
      outcomes.push(await attempt(async () => new Batch('t', fetched, { partition: 0, highWatermark: '100', messages, abortedTransactions: [] }).messages.map((m) => m.offset)));
    }
  }
  return outcomes;
}

void t.test('fetched messages decode to what unpatched kafkajs 2.2.4 gives, broken ones included', async (t) => {
  const outcomes = await consumeCases();
  t.equal(outcomes.length, 660, 'every case ran');
  // Recorded from kafkajs 2.2.4 as published (no patch applied), for these very cases.
  t.equal(createHash('sha256').update(outcomeText(outcomes)).digest('hex'), '3aa6a67c300638f010bb047fb9c02c93726ce86e869138a86b2635fb362fa84e', 'the same outcomes');
});

void t.test('offsets and timestamps past 2^53 stay exact; headers keep repeats and own keys', async (t) => {
  const headers = { 'event-type': 'user.renamed.v1' };
  Object.defineProperty(headers, '__proto__', { value: 'not a prototype', enumerable: true, writable: true, configurable: true });
  const records = [0, 1, 2, 3].map((i) => RecordEncoder({ offsetDelta: i, timestampDelta: Long.fromString(String(i * 2 ** 40)), key: Buffer.from('k'), value: Buffer.from('v'), headers: i === 3 ? { multi: ['a', 'b', 'c'] } : headers }));
  const batch = await RecordBatch({ firstOffset: Long.fromString('9007199254740990'), firstTimestamp: 9007199254740000, maxTimestamp: 0, lastOffsetDelta: 3, records });
  const messages = await decodeMessages(new Decoder(fetchFrame(batch.buffer)));
  t.same(messages.map((m) => m.offset), ['9007199254740990', '9007199254740991', '9007199254740992', '9007199254740993']);
  t.same(messages.map((m) => m.timestamp), ['9007199254740000', '9008298766367776', '9009398277995552', '9010497789623328']);
  t.equal(Object.getPrototypeOf(messages[0]!.headers), Object.prototype, 'a plain object');
  t.same(Object.keys(messages[0]!.headers), ['event-type', '__proto__'], 'a `__proto__` header is an own key, not the prototype');
  t.same(messages[3]!.headers.multi, [Buffer.from('a'), Buffer.from('b'), Buffer.from('c')], 'a repeated header: every value, in order');
  t.equal(Object.getOwnPropertyDescriptor(messages[1]!, 'headers'), undefined, 'headers are made when read, by an accessor');
  t.equal(messages[1]!.headers, messages[1]!.headers, 'once: the same object every time');
  t.same(JSON.parse(JSON.stringify(messages[2])), JSON.parse(JSON.stringify({ ...messages[2], headers: messages[2]!.headers })), 'as JSON, the record kafkajs made');
  t.same(new Batch('t', '9007199254740992', { partition: 0, highWatermark: '9', messages, abortedTransactions: [] }).messages.map((m) => m.offset), ['9007199254740992', '9007199254740993']);
});

void t.test('offsets and timestamps within 2^53 are summed without a Long: the consume path is patched', async (t) => {
  const records = [0, 1, 2].map((i) => RecordEncoder({ offsetDelta: i, timestampDelta: Long.fromString(String(i)), key: null, value: Buffer.from('v'), headers: {} }));
  const batch = await RecordBatch({ firstOffset: Long.fromString('42'), firstTimestamp: t0, maxTimestamp: t0, lastOffsetDelta: 2, records });
  const longs = Long as unknown as { fromString(value: string): unknown };
  const fromString = longs.fromString;
  let parsed = 0;
  longs.fromString = (value: string) => {
    parsed++;
    return fromString.call(Long, value);
  };
  try {
    const messages = await decodeMessages(new Decoder(fetchFrame(batch.buffer)));
    t.same(new Batch('t', '43', { partition: 0, highWatermark: '45', messages, abortedTransactions: [] }).messages.map((m) => m.offset), ['43', '44']);
  } finally {
    longs.fromString = fromString;
  }
  // Unpatched, every record parses its batch's first offset and first timestamp into a Long, and the batch every
  // message's offset: 10 here.
  t.equal(parsed, 1, 'one decimal string parsed into a Long: the offset fetched from, once per batch');
});
