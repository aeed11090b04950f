import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import t from 'tap';

/**
 * `patches/kafkajs+2.2.4.patch` (applied by `npm ci`) makes kafkajs's produce
 * path cheaper without changing a byte it sends: encoders cut from Node's buffer
 * pool (still zero-filled), varints written in place (32-bit varlongs without a
 * Long), a record's headers written into the record's own encoder, the message not
 * copied per record, messages grouped per partition in one pass. These tests hold
 * it to that.
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
