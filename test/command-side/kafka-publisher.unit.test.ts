import type { Kafka } from 'kafkajs';
import t from 'tap';
import { inSendSizedRuns, kafkaPublisher, maxSendBytes } from '../../command-side/relay/kafka-publisher.js';
import type { OutboundMessage } from '../../command-side/relay/publisher.js';

/**
 * A broker refuses for good a record batch over its `max.message.bytes` (1 MB by
 * default), and kafkajs puts a send's messages for one partition in one batch: the
 * relay sends a large batch in runs of at most `maxSendBytes`, in order.
 */
const message = (i: number, bytes: number): OutboundMessage => ({
  key: `user-${i % 7}`,
  value: JSON.stringify({ i, pad: 'x'.repeat(bytes) }),
  headers: { 'event-type': 'user.registered.v1', 'content-type': 'application/json' },
});

function recordingKafka() {
  const sends: { topic: string; acks?: number; messages: { key: string; value: string }[] }[] = [];
  const kafka = {
    producer: () => ({
      connect: () => Promise.resolve(),
      disconnect: () => Promise.resolve(),
      send: (record: (typeof sends)[number]) => {
        sends.push(record);
        return Promise.resolve([]);
      },
    }),
  } as unknown as Kafka;
  return { kafka, sends };
}

void t.test('a batch of 10,000 events of 700 bytes goes in runs under the broker default, every message once, in order', async (t) => {
  const { kafka, sends } = recordingKafka();
  const batch = Array.from({ length: 10_000 }, (_, i) => message(i, 640));
  await kafkaPublisher(kafka, 'users.events.v1').publish(batch);
  t.ok(sends.length > 1, `${sends.length} sends`);
  for (const send of sends) {
    const bytes = send.messages.reduce((sum, m) => sum + Buffer.byteLength(m.key) + Buffer.byteLength(m.value), 0);
    t.ok(bytes <= maxSendBytes, `a send of ${bytes} bytes`);
    t.equal(send.acks, -1, 'acknowledged by every in-sync replica');
  }
  t.same(sends.flatMap((s) => s.messages.map((m) => m.value)), batch.map((m) => m.value), 'every message once, in order');
});

void t.test('small batches go in one send; a message larger than a run goes alone; nothing goes for nothing', async (t) => {
  t.equal(inSendSizedRuns(Array.from({ length: 500 }, (_, i) => message(i, 600))).length, 1, 'the default batch: one send');
  const big = message(1, maxSendBytes + 10);
  t.same(inSendSizedRuns([message(0, 10), big, message(2, 10)]).map((run) => run.length), [1, 1, 1]);
  const { kafka, sends } = recordingKafka();
  await kafkaPublisher(kafka, 'users.events.v1').publish([]);
  t.equal(sends.length, 0);
});
