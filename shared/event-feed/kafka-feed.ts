import type { Admin, Consumer, ConsumerConfig, Kafka, KafkaMessage } from 'kafkajs';
import type { Logger } from 'pino';
import { StoreUnavailableError } from '../errors.js';
import { translateKafkaError } from '../kafka/kafka-client.js';
import { fromEnvelope } from '../public-events.js';
import { traceContextOf, tracingOn } from '../tracing.js';
import type { EventFeed, ProjectedEvent } from './port.js';

export const partitionSource = (topic: string, partition: number) => `${topic}:${partition}`;

const headerText = (value: Buffer | string | (Buffer | string)[] | undefined): string | undefined =>
  value === undefined || Array.isArray(value) ? undefined : value.toString();

/**
 * A message as the projector sees it. One that is not a readable v1 envelope is
 * handed on as a problem (the projector parks it under its key, the stream id,
 * holding that stream's later events back) rather than stopping consumption.
 */
function projectedEventOf(message: KafkaMessage, source: string): ProjectedEvent {
  try {
    const { streamId, revision, type, data } = fromEnvelope(message.value);
    // Built field by field: every event of a batch has the same shape, which the projector's loops read fastest.
    const event: ProjectedEvent = { streamId, revision, type, data, position: message.offset, source };
    if (tracingOn()) {
      const trace = traceContextOf(headerText(message.headers?.traceparent), headerText(message.headers?.tracestate));
      if (trace) event.trace = trace;
    }
    return event;
  } catch (error) {
    const type = message.headers?.['event-type'];
    return {
      streamId: message.key?.toString('utf8') ?? '(no key)',
      revision: -1,
      type: type === undefined ? '(unreadable)' : String(type),
      data: message.value?.toString('utf8').slice(0, 1 << 20) ?? null,
      position: message.offset,
      source,
      problem: error instanceof Error ? error.message : String(error),
    };
  }
}

/** One partition's fetched batch, waiting to be merged into the projector's next batch. */
interface Handoff {
  source: string;
  events: ProjectedEvent[];
  /** The offset after its last message: the partition's checkpoint once it is applied. */
  next: string;
  /** Messages left behind it in the partition when it was fetched. */
  behind: number;
  /** When its last message was appended to the partition. */
  lastEventAt: number;
  applied: () => void;
  failed: (error: unknown) => void;
}

/**
 * The projector's feed from a Kafka consumer group. Each fetched batch of one
 * partition is handed to the projector and only after the projector committed
 * it (rows + `topic:partition` -> next offset, in one DB transaction) and said
 * so (`applied`) is the offset committed to Kafka. A crash in between replays
 * the batch, which the row-version guard makes harmless. On every join of the group, each
 * partition the member gets is sought where the read DB holds it (the offset this member read
 * at start or wrote since; for any other, the DB is read before the partition is fetched, and a
 * partition the DB has no row for starts at its beginning), so the DB, not Kafka, is the source
 * of truth for where projection resumes: a rebalance does not send a member back to where it
 * started, and a read DB that is new (or lost a commit) is filled from the start, whatever
 * offsets the group committed for another.
 */
export function kafkaFeed(deps: {
  kafka: Kafka;
  topic: string;
  groupId: string;
  logger: Logger;
  /**
   * How long the group waits for a member that stopped heartbeating before it
   * hands that member's partitions on (default 6 s, the least a Kafka broker
   * accepts by default). A projector restarted after a crash rejoins the group
   * only then, so this bounds the recovery; a shorter one also evicts a live
   * member whose process stalls that long (it rejoins; its batch is replayed,
   * harmlessly).
   */
  sessionTimeoutMs?: number;
  /** Partitions fetched at once (default 4): their batches are applied together. */
  concurrentPartitions?: number;
  consumerConfig?: Partial<ConsumerConfig>;
}): EventFeed & { lag(): Promise<ReadonlyMap<string, number>> } {
  const { topic } = deps;
  let consumer: Consumer | undefined;
  /** The member's partitions and where the read DB holds them, while it consumes (see `batches`). */
  let holding: { known: ReadonlyMap<string, string>; assigned: ReadonlySet<string>; joined: boolean } | undefined;
  let admin: { client: Admin; connected: Promise<void> } | undefined;
  let highWaterMarks: { at: number; read: Promise<Map<string, bigint>>; settled: boolean } | undefined;
  let closing = false;
  const waiting: Handoff[] = [];
  let wake: (() => void) | undefined;

  async function readHighWaterMarks(): Promise<Map<string, bigint>> {
    if (closing) throw new Error('the feed is closed');
    if (!admin) {
      const client = deps.kafka.admin();
      const opened = { client, connected: client.connect() };
      admin = opened;
      // A broker down at the first look: the next one connects afresh.
      opened.connected.catch(() => {
        if (admin === opened) admin = undefined;
      });
    }
    const { client, connected } = admin;
    await connected;
    const offsets = await client.fetchTopicOffsets(topic);
    return new Map(offsets.map(({ partition, high }) => [partitionSource(topic, partition), BigInt(high)]));
  }

  return {
    async *batches(from, current) {
      const sessionTimeout = deps.sessionTimeoutMs ?? 6000;
      const concurrentPartitions = deps.concurrentPartitions ?? 4;
      const active = deps.kafka.consumer({
        groupId: deps.groupId,
        allowAutoTopicCreation: false,
        maxWaitTimeInMs: 100,
        sessionTimeout,
        // kafkajs heartbeats between fetches and when told to; a third of the session or less.
        heartbeatInterval: Math.min(1000, Math.floor(sessionTimeout / 3)),
        ...deps.consumerConfig,
      });
      consumer = active;
      let failure: unknown;
      /** Per partition: whether its last batch handed over is applied yet. */
      const inFlight = new Map<number, Promise<void>>();
      /**
       * Where the read DB is, for the partitions this member holds: what it found there at start,
       * then what it committed there since. Every join (each rebalance, not only the first) seeks
       * them there. A partition handed to another member is forgotten, for that member moves it on;
       * one this member gets without knowing where the DB holds it (handed back, or never in the DB)
       * is paused until the DB has been read, then sought there, or to its first offset when the DB
       * has no row for it: the group's committed offset may be ahead of the DB (another read DB
       * filled from the same group, a commit lost with its machine).
       */
      const known = new Map(from);
      const assigned = new Set<string>();
      const held = { known, assigned, joined: false };
      holding = held;
      /** Joins so far; bumped by a crash too, and ended with this consumer: a look at the DB answered later is for nothing. */
      let joins = 0;
      let ended = false;
      // kafkajs restarts a crashed consumer after a delay, and a restart already under way when the feed
      // disconnects it comes back afterwards (its own `stop` clears only a restart not yet begun): a
      // consumer that joins or crashes once this one has ended is disconnected again, not left running.
      const stopIfEnded = () => {
        if (ended || closing) setImmediate(() => void active.disconnect().catch(() => {}));
        return ended || closing;
      };
      active.on(active.events.GROUP_JOIN, ({ payload }) => {
        if (stopIfEnded()) return;
        const join = ++joins;
        const partitions = payload.memberAssignment[topic] ?? [];
        const now = new Set(partitions.map((partition) => partitionSource(topic, partition)));
        for (const source of [...known.keys()]) if (!now.has(source)) known.delete(source);
        assigned.clear();
        held.joined = true;
        const sought: Record<number, string> = {};
        const seeking: number[] = [];
        const unknown: number[] = [];
        for (const partition of partitions) {
          const source = partitionSource(topic, partition);
          assigned.add(source);
          const offset = known.get(source);
          if (offset === undefined) {
            unknown.push(partition);
            continue;
          }
          active.seek({ topic, partition, offset });
          sought[partition] = offset;
          seeking.push(partition);
        }
        // Pauses outlive joins: one an earlier join made, whose look at the DB this join overtook, ends here.
        if (seeking.length > 0) active.resume([{ topic, partitions: seeking }]);
        deps.logger.info({ topic, partitions, sought }, 'projector joined its consumer group');
        if (unknown.length === 0 || !current) return;
        active.pause([{ topic, partitions: unknown }]);
        const failed = (error: unknown) => {
          failure = error;
          wake?.();
        };
        current().then((checkpoints) => {
          // A later join (or a crash, or the end of this consumer) has its own look for what it hands this member.
          if (join !== joins || ended || closing) return;
          const found: Record<number, string> = {};
          try {
            for (const partition of unknown) {
              const source = partitionSource(topic, partition);
              const offset = checkpoints.get(source) ?? '0';
              known.set(source, offset);
              active.seek({ topic, partition, offset });
              found[partition] = offset;
            }
            active.resume([{ topic, partitions: unknown }]);
          } catch (error) {
            // The consumer went away under the look (kafkajs restarting it): the feed fails, and starts again.
            failed(new StoreUnavailableError('Kafka consumer restarted while the read DB was read', { cause: error }));
            return;
          }
          deps.logger.info({ topic, sought: found }, 'partitions sought where the read DB holds them');
        }, failed);
      });
      active.on(active.events.CRASH, ({ payload }) => {
        if (stopIfEnded()) return;
        joins++;
        if (!payload.restart) {
          failure = translateKafkaError(payload.error, 'consume');
          wake?.();
        }
      });
      try {
        await active.connect();
        await active.subscribe({ topic, fromBeginning: true });
        await active.run({
          autoCommit: false,
          eachBatchAutoResolve: false,
          // Partitions are fetched and decoded while the projector applies what came before.
          partitionsConsumedConcurrently: concurrentPartitions,
          eachBatch: async (payload) => {
            const { batch } = payload;
            if (batch.messages.length === 0 || !payload.isRunning() || payload.isStale()) return;
            const source = partitionSource(topic, batch.partition);
            const events = batch.messages.map((m) => projectedEventOf(m, source));
            const lastOffset = batch.messages[batch.messages.length - 1]!.offset;
            const next = (BigInt(lastOffset) + 1n).toString();
            const applied = new Promise<void>((resolve, reject) => {
              waiting.push({
                source,
                events,
                next,
                behind: Math.max(0, Number(BigInt(batch.highWatermark) - BigInt(next))),
                lastEventAt: Number(batch.messages[batch.messages.length - 1]!.timestamp),
                applied: resolve,
                failed: reject,
              });
              wake?.();
            });
            // Committed to Kafka once the read DB holds it. Not awaited by anything: the DB already
            // holds this offset, so a commit lost or overtaken only means a harmless replay after a rebalance.
            applied.then(
              () =>
                active.commitOffsets([{ topic, partition: batch.partition, offset: next }]).catch((error: unknown) => {
                  deps.logger.warn({ err: error, partition: batch.partition }, 'Kafka offset commit failed; the read DB keeps the position');
                }),
              () => {},
            );
            // One batch per partition may wait while the one before it is applied: this callback returns
            // once that one is, so kafkajs fetches and decodes the next batch while the projector writes.
            const before = inFlight.get(batch.partition);
            inFlight.set(batch.partition, applied);
            // A slow apply (the read DB down, a rebuild's pause) must not cost the group membership.
            const keepAlive = setInterval(() => void payload.heartbeat().catch(() => {}), Math.min(1000, Math.floor(sessionTimeout / 3)));
            try {
              await before;
            } finally {
              clearInterval(keepAlive);
            }
            // kafkajs fetches from resolved offsets, not committed ones: resolve, or the batch comes again.
            payload.resolveOffset(lastOffset);
            await payload.heartbeat();
          },
        });
      } catch (error) {
        ended = true;
        // Retried by the projector: this consumer's connections go, not one per attempt.
        await active.disconnect().catch(() => {});
        throw translateKafkaError(error, 'subscribe');
      }
      /** Handed to the projector, not yet confirmed applied. */
      const unconfirmed = new Set<Handoff>();
      try {
        while (!closing) {
          if (failure) throw failure instanceof Error ? failure : new Error('Kafka consumer crashed', { cause: failure });
          if (waiting.length === 0) {
            await new Promise<void>((resolve) => (wake = resolve));
            continue;
          }
          // Whatever the partitions have handed over goes into one batch: one transaction for all.
          // Each partition's messages keep their order, and a stream lives in one partition.
          const current = waiting.splice(0);
          const checkpoints = new Map<string, string>();
          const behind = new Map<string, number>();
          // Per partition, not the latest of all: a live partition must not hide one that is far behind.
          const lastEventAt = new Map<string, number>();
          for (const handoff of current) {
            unconfirmed.add(handoff);
            // One partition's batches wait here in their order: a later one's figures stand.
            checkpoints.set(handoff.source, handoff.next);
            behind.set(handoff.source, handoff.behind);
            lastEventAt.set(handoff.source, handoff.lastEventAt);
          }
          yield {
            events: current.flatMap((handoff) => handoff.events),
            checkpoints,
            behind,
            lastEventAt,
            // The projector says when the read DB holds the batch; it may ask for the next one before.
            applied() {
              for (const handoff of current) {
                unconfirmed.delete(handoff);
                if (assigned.has(handoff.source)) known.set(handoff.source, handoff.next);
                handoff.applied();
              }
            },
          };
        }
      } finally {
        // Batches not confirmed are not committed to Kafka: they come again, harmlessly.
        ended = true;
        for (const handoff of [...unconfirmed, ...waiting.splice(0)]) handoff.failed(new Error('feed closed'));
        await active.disconnect().catch(() => {});
      }
    },
    /**
     * Per partition this member holds: the messages after the offset the read DB holds, from the broker's
     * high-water marks (read at most once a second, when asked); NaN for one held but not yet placed (its
     * offset in the read DB still being read after a rebalance handed it over, or its mark not read yet):
     * how far behind it is is not known, which is not "caught up". Rejects when the broker does not answer,
     * and until the feed's consumer has joined its group.
     */
    async lag() {
      const current = holding;
      // Between a (re)start of the feed and its consumer's join, which partitions it will hold is not
      // known: no figure, rather than "nothing behind" (a member that joined holding none has none).
      if (!current?.joined) throw new StoreUnavailableError('the Kafka consumer has not joined its group yet');
      // One read at a time: a broker that does not answer (kafkajs retries for up to tens of seconds) is not
      // asked again by every scrape and probe meanwhile.
      if (!highWaterMarks || (highWaterMarks.settled && Date.now() - highWaterMarks.at > 1000)) {
        const read = readHighWaterMarks();
        const entry = { at: Date.now(), read, settled: false };
        highWaterMarks = entry;
        read.then(
          () => {
            entry.settled = true;
            entry.at = Date.now();
          },
          () => {
            if (highWaterMarks === entry) highWaterMarks = undefined;
          },
        );
      }
      const marks = await highWaterMarks.read;
      const lag = new Map<string, number>();
      for (const source of current.assigned) {
        const at = current.known.get(source);
        const mark = marks.get(source);
        lag.set(source, at === undefined || mark === undefined ? NaN : Math.max(0, Number(mark - BigInt(at))));
      }
      return lag;
    },
    async close() {
      closing = true;
      wake?.();
      await consumer?.disconnect().catch(() => {});
      await admin?.client.disconnect().catch(() => {});
    },
  };
}
