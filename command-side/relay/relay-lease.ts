import type { FromSchema } from 'json-schema-to-ts';
import { ConcurrencyError, CorruptEventError } from '../../shared/errors.js';
import { ajv, fieldProblems } from '../../shared/schema-validation.js';
import type { EventStore, RecordedEvent } from '../../shared/event-store/port.js';
import type { PartitionCount } from './publisher.js';

/**
 * The relay's resume point and its single-publisher lease, kept together in one
 * event-store stream (`relay-<topic>`). Each append names the owner, how far it
 * has published and until when it holds the lease, and is made with the expected
 * revision, so:
 *  - a second relay sees a live lease and waits (standby) until it expires or is
 *    released (a relay that stops gracefully releases it);
 *  - a relay restarted with its predecessor's identity (RELAY_ID) takes the lease
 *    back at once: the predecessor is gone, or it would not be restarted;
 *  - a relay that lost its lease (it stalled, another took over) finds out at its
 *    next append, which conflicts, and stops publishing;
 *  - a holder that cannot renew stops publishing before its lease runs out
 *    (see `relay.ts`), so two relays never start a send at the same time as long
 *    as clocks drift by less than the safety margin. A send already under way is
 *    not called back: kafkajs retries it for up to about a minute, so a relay that
 *    stalled can still land its last batch after its successor's first ones. Those
 *    are late copies of events already delivered in order (the successor starts
 *    from the resume point, before that batch); consumers drop them by
 *    (stream, revision), as at-least-once delivery asks of them anyway.
 *
 * The stream gains an event per resume point and per renewal for as long as the service
 * runs (EventStoreDB keeps the last `keptLeaseEvents` of them, the embedded store all), so
 * taking the lease (at every start, takeover and standby look) reads its last event only,
 * never the stream: a read of the whole of it would grow with it, until it outlasted the
 * store's read timeout and no relay could start.
 */
const relayCheckpointSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    owner: { type: 'string', minLength: 1, maxLength: 200 },
    /** Log position of the last event the broker acknowledged; absent before the first. */
    position: { type: 'string', pattern: '^[0-9]{1,20}$' },
    leaseUntil: { type: 'string', format: 'date-time' },
  },
  required: ['owner', 'leaseUntil'],
} as const;
export type RelayCheckpoint = FromSchema<typeof relayCheckpointSchema>;
const checkRelayCheckpoint = ajv.compile<RelayCheckpoint>(relayCheckpointSchema);

/** The lease stream's event as what it says; CorruptEventError (EVENT_INVALID) when it is not. */
export function parseRelayCheckpoint(stored: RecordedEvent): RelayCheckpoint {
  const corrupt = (reason: string) => new CorruptEventError(stored.streamId, stored.revision, reason);
  if (stored.type !== 'RelayCheckpointed') throw corrupt(`unknown event type ${JSON.stringify(stored.type).slice(0, 200)}`);
  if (!checkRelayCheckpoint(stored.data)) {
    const problems = fieldProblems(checkRelayCheckpoint.errors).map((p) => `${p.field} ${p.message}`);
    throw corrupt(`${stored.type} does not match its schema: ${problems.join('; ')}`);
  }
  return stored.data;
}

/**
 * The partition count the keys are spread over (`relayPartitions`), kept in the events'
 * metadata rather than their data: a relay of an earlier release parses the data against a
 * closed schema and would stop on a field it does not know (a rolling deploy, a rollback),
 * while it passes metadata by. Once recorded, every append carries it (renewals and the
 * release included), so the last event holds it. Only an event of a release from before the
 * count carries none after one that did; that release spread the keys over the topic's
 * partitions as they were, and the count seen at the next send, recorded then, follows it.
 * A value that is not a count is read as none.
 */
const partitionsKey = 'relayPartitions';
function recordedPartitions(event: RecordedEvent | undefined): number | undefined {
  const value = event?.metadata?.[partitionsKey];
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 1_000_000 ? value : undefined;
}

/**
 * Lease events a store that can cap a stream keeps (EventStoreDB: `$maxCount`). The lease
 * needs the last one alone (resume point, owner, expiry and count all ride in each); the
 * rest show an operator the recent handovers and resume points.
 */
export const keptLeaseEvents = 1000;

export interface Lease {
  /** Whether the lease is still ours with `marginMs` to spare. */
  isHeld(marginMs: number): boolean;
  position(): bigint | undefined;
  /** Renews the lease, moving the resume point when `position` is given. Throws LeaseLostError. */
  renew(position?: bigint): Promise<void>;
  /** Gives the lease up (keeping the resume point), so another relay need not wait for it to expire. */
  release(): Promise<void>;
}

export class LeaseLostError extends Error {
  override readonly name = 'LeaseLostError';
}

export const relayStreamId = (topic: string) => `relay-${topic}`;

export function relayLease(deps: { store: EventStore; streamId: string; owner: string; leaseMs: number; clock?: () => number; partitions?: PartitionCount | undefined }) {
  const { store, streamId, owner, leaseMs } = deps;
  const now = deps.clock ?? Date.now;

  return {
    /**
     * Keeps the lease stream to its last `keptLeaseEvents` where the store can
     * (`EventStore.capStream`); a no-op elsewhere. Appends still name the real revision.
     */
    cap: (): Promise<void> => store.capStream?.(streamId, keptLeaseEvents) ?? Promise.resolve(),
    /**
     * Takes the lease if it is free or expired. Returns undefined with the time to
     * wait when another relay holds it.
     */
    async tryAcquire(): Promise<Lease | { waitMs: number }> {
      const [last] = await store.readStream(streamId, { backwards: true, maxCount: 1 });
      const held = last && parseRelayCheckpoint(last);
      if (held && held.owner !== owner) {
        const left = Date.parse(held.leaseUntil) - now();
        if (left > 0) return { waitMs: left };
      }
      let revision = last?.revision ?? -1;
      let position = held?.position;
      let partitions = recordedPartitions(last);
      if (partitions !== undefined) deps.partitions?.pin(partitions);
      let until = 0;
      const append = async (moveTo?: bigint, leaseUntil = now() + leaseMs) => {
        const nextPosition = moveTo === undefined ? position : moveTo.toString();
        // With a resume point: the count the keys went over until then, the first time; a
        // smaller one when the topic has fewer partitions now (made again), so that growing
        // it back later moves no key either.
        const seen = moveTo === undefined ? undefined : deps.partitions?.seen();
        const nextPartitions = seen !== undefined && (partitions === undefined || seen < partitions) ? seen : partitions;
        const data: RelayCheckpoint = {
          owner,
          ...(nextPosition === undefined ? {} : { position: nextPosition }),
          leaseUntil: new Date(leaseUntil).toISOString(),
        };
        try {
          const event = { type: 'RelayCheckpointed', data, ...(nextPartitions === undefined ? {} : { metadata: { [partitionsKey]: nextPartitions } }) };
          const result = await store.appendToStream(streamId, [event], {
            expectedRevision: revision === -1 ? 'no_stream' : revision,
          });
          revision = result.nextExpectedRevision;
          position = nextPosition;
          until = leaseUntil;
          if (nextPartitions !== partitions && nextPartitions !== undefined) {
            partitions = nextPartitions;
            deps.partitions?.pin(partitions);
          }
        } catch (error) {
          if (error instanceof ConcurrencyError) throw new LeaseLostError(`another relay took ${streamId}`, { cause: error });
          throw error;
        }
      };
      await append();
      return {
        isHeld: (marginMs) => now() < until - marginMs,
        position: () => (position === undefined ? undefined : BigInt(position)),
        renew: (moveTo) => append(moveTo),
        release: () => append(undefined, 0),
      };
    },
  };
}
