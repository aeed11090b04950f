import { createHash } from 'node:crypto';
import type { FromSchema } from 'json-schema-to-ts';
import { ConcurrencyError, ConfigError, CorruptEventError, DomainError } from '../shared/errors.js';
import { onceUntilFailure } from '../shared/retry.js';
import { ajv, fieldProblems } from '../shared/schema-validation.js';
import type { AppendResult, EventMetadata, EventStore, RecordedEvent, StreamAppend } from '../shared/event-store/port.js';
import { userStreamPrefix } from '../shared/user-events.js';

/**
 * Email uniqueness, enforced in the event store: one stream per normalised
 * address whose last event says who holds it. Appending with the expected
 * revision makes two concurrent claims on one address conflict; exactly one wins.
 *
 * The stream is named by a keyed hash of the address (HMAC-SHA-256 with the
 * server secret, see `vault.emailHash`), and its events carry only the holder's
 * id: neither the id nor the payload gives the address back, and a dictionary
 * of addresses does not either without the secret. Reservations written before
 * the keyed hash (`email-<sha256>`, the address in clear in the payload) are
 * still honoured: a claim looks there first, a release releases there too.
 *
 * Where the store appends to several streams at once (the embedded store), a
 * new claim and the user's own events go in one transaction: one commit, and
 * nothing to clean up if either is refused. Elsewhere (EventStoreDB) they are
 * two appends, so a crash between them can leave a claim whose user never took
 * the address. Such a claim counts as held only while it is younger than a grace
 * period, or while its holder's stream really has that address; after that the
 * next claimant takes it over. A forgotten holder has no address, so its claims
 * lapse the same way.
 */
export const emailStreamPrefix = 'email-';
/** The reservation stream of an address, by its keyed hash (`vault.emailHash`). */
export const emailStreamIdOf = (emailHash: string) => `${emailStreamPrefix}${emailHash}`;
/** Where reservations were kept before the keyed hash: a plain SHA-256, which a dictionary reverses. */
export const legacyEmailStreamId = (email: string) =>
  `${emailStreamPrefix}${createHash('sha256').update(email).digest('hex')}`;

/** Where the command side records whether the store held anything before reservations were keyed. */
export const reservationsMarkerStream = 'reservations-keyed';
const markerSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { legacyBefore: { type: 'boolean' }, occurredAt: { type: 'string', format: 'date-time' } },
  required: ['legacyBefore', 'occurredAt'],
} as const;
const checkMarker = ajv.compile<FromSchema<typeof markerSchema>>(markerSchema);
function parseMarker(stored: RecordedEvent): boolean {
  if (stored.type !== 'ReservationsKeyed' || !checkMarker(stored.data)) {
    throw new CorruptEventError(stored.streamId, stored.revision, 'not a ReservationsKeyed marker');
  }
  return stored.data.legacyBefore;
}

/**
 * Where the command side records which secret names the reservations: a keyed hash
 * of a fixed text under it (which gives the secret back no more than a reservation's
 * name gives its address back). Written by the first command side that registers
 * anyone; every later one compares. Command sides with different secrets (one with
 * EMAIL_HASH_SECRET set, one without; a secret changed) would look for one address
 * under different names, and two users could register it.
 */
export const secretFingerprintStream = 'reservations-secret';
// Never a normalised address (no @), so never a reservation's name.
const fingerprintText = 'email-hash-secret-fingerprint:v1';
const fingerprintSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { fingerprint: { type: 'string', pattern: '^[0-9a-f]{64}$' }, occurredAt: { type: 'string', format: 'date-time' } },
  required: ['fingerprint', 'occurredAt'],
} as const;
const checkFingerprint = ajv.compile<FromSchema<typeof fingerprintSchema>>(fingerprintSchema);

/**
 * Resolves when the reservations in `store` are named with the secret behind `emailHash`
 * (recording it when none is recorded yet); a ConfigError for EMAIL_HASH_SECRET when
 * they were named with another; a store's error as it comes.
 */
export async function checkEmailHashSecret(
  store: EventStore,
  emailHash: (email: string) => string,
  options: { replace?: boolean } = {},
): Promise<void> {
  const fingerprint = emailHash(fingerprintText);
  for (;;) {
    const recorded = (await store.readStream(secretFingerprintStream)).at(-1);
    if (recorded) {
      if (recorded.type !== 'EmailHashSecretRecorded' || !checkFingerprint(recorded.data)) {
        throw new CorruptEventError(recorded.streamId, recorded.revision, 'not an EmailHashSecretRecorded event');
      }
      if (recorded.data.fingerprint === fingerprint) return;
      // Recorded after the one before only by the operator's call (EMAIL_HASH_SECRET_RECORD=replace): that secret is gone for good.
      if (!options.replace) {
        throw new ConfigError([
          {
            field: 'EMAIL_HASH_SECRET',
            message:
              'differs from the secret the event store\'s email reservations were made with (set it as on the other command sides, or unset it on all of them if none sets it): with another secret, an address already taken could be registered again. Only if that secret is lost for good (a key store lost without a backup), start once with EMAIL_HASH_SECRET_RECORD=replace',
          },
        ]);
      }
    }
    const data = { fingerprint, occurredAt: new Date().toISOString() };
    try {
      await store.appendToStream(secretFingerprintStream, [{ type: 'EmailHashSecretRecorded', data }], {
        expectedRevision: recorded ? recorded.revision : 'no_stream',
      });
      return;
    } catch (error) {
      if (!(error instanceof ConcurrencyError)) throw error;
    }
  }
}

/** The payload of EmailReserved and EmailReleased, checked where it is read back; `email` only in legacy ones. */
const reservationSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    email: { type: 'string', minLength: 1, maxLength: 254 },
    userId: { type: 'string', minLength: 1, maxLength: 64 },
    occurredAt: { type: 'string', format: 'date-time' },
  },
  required: ['userId', 'occurredAt'],
} as const;
type ReservationData = FromSchema<typeof reservationSchema>;
const checkReservation = ajv.compile<ReservationData>(reservationSchema);

/** A reservation stream's event as what it says; CorruptEventError (EVENT_INVALID) when it is not. */
export function parseReservation(stored: RecordedEvent): { type: 'EmailReserved' | 'EmailReleased'; data: ReservationData } {
  const corrupt = (reason: string) => new CorruptEventError(stored.streamId, stored.revision, reason);
  if (stored.type !== 'EmailReserved' && stored.type !== 'EmailReleased') {
    throw corrupt(`unknown event type ${JSON.stringify(stored.type).slice(0, 200)}`);
  }
  if (!checkReservation(stored.data)) {
    const problems = fieldProblems(checkReservation.errors).map((p) => `${p.field} ${p.message}`);
    throw corrupt(`${stored.type} does not match its schema: ${problems.join('; ')}`);
  }
  return { type: stored.type, data: stored.data };
}

export interface EmailReservationDeps {
  store: EventStore;
  /** The keyed hash of an address (`vault.emailHash`). */
  emailHash(email: string): string;
  /** The address the user's own stream holds now, or undefined (none, or forgotten). */
  currentEmailOf(userId: string): Promise<string | undefined>;
  graceMs: number;
}

/** The event that claims an address for `userId`, as `appendToStream` takes it. */
const claimEvents = (userId: string, now: Date, metadata: EventMetadata) => [
  { type: 'EmailReserved', data: { userId, occurredAt: now.toISOString() }, metadata },
];

/** The holder a stream's last event names, with that event; undefined when the address is free there. */
function lastClaimOf(events: readonly RecordedEvent[]): { holder: string; claim: RecordedEvent } | undefined {
  const last = events[events.length - 1];
  if (!last) return undefined;
  const parsed = parseReservation(last);
  return parsed.type === 'EmailReserved' ? { holder: parsed.data.userId, claim: last } : undefined;
}

/** The most events `holdsUsersAlready` looks through before it assumes the worst. */
const legacyScanLimit = 10_000;

/**
 * Whether the log already holds user or reservation events, i.e. was written by
 * an earlier version, which may have left reservations under the plain hash. Other
 * streams do not count: a relay's lease or another process's bookkeeping written
 * first in a fresh store (the relay starts beside the command side) says nothing of
 * older reservations, and counting it made every registration look for a legacy
 * reservation that cannot exist. Past `legacyScanLimit` events of other streams it
 * assumes the worst.
 */
async function holdsUsersAlready(store: EventStore): Promise<boolean> {
  const pageSize = 500;
  let after: bigint | undefined;
  for (let scanned = 0; scanned < legacyScanLimit; ) {
    const page = await store.readAll(after === undefined ? { maxCount: pageSize } : { after, maxCount: pageSize });
    if (page.some((event) => event.streamId.startsWith(userStreamPrefix) || event.streamId.startsWith(emailStreamPrefix))) return true;
    if (page.length < pageSize) return false;
    scanned += page.length;
    after = page[page.length - 1]!.position;
  }
  return true;
}

export function emailReservations(deps: EmailReservationDeps) {
  const { store } = deps;

  /** Whether `claim` on `email` still binds: young, or its holder really has the address. */
  async function isHeld(claim: RecordedEvent, holder: string, email: string, now: Date): Promise<boolean> {
    if (now.getTime() - claim.recordedAt.getTime() < deps.graceMs) return true;
    return (await deps.currentEmailOf(holder)) === email;
  }

  /**
   * Whether this store may hold reservations from before the keyed hash: told once
   * by the marker stream, which the first command side of this version writes (an
   * empty store then can hold none, and its claims skip the extra read for good).
   */
  const mayHoldLegacy = onceUntilFailure(async (): Promise<boolean> => {
    for (;;) {
      const [marker] = await store.readStream(reservationsMarkerStream);
      if (marker) return parseMarker(marker);
      const earlier = await holdsUsersAlready(store);
      const data = { legacyBefore: earlier, occurredAt: new Date().toISOString() };
      try {
        await store.appendToStream(reservationsMarkerStream, [{ type: 'ReservationsKeyed', data }], { expectedRevision: 'no_stream' });
        return earlier;
      } catch (error) {
        if (!(error instanceof ConcurrencyError)) throw error;
      }
    }
  });

  /** Told once per process (again after a failure): a claim under another secret's names is never made. */
  const sameSecret = onceUntilFailure(() => checkEmailHashSecret(store, (email) => deps.emailHash(email)));

  /** EMAIL_TAKEN when a reservation from before the keyed hash binds the address to someone else. */
  async function checkLegacy(email: string, userId: string, now: Date): Promise<void> {
    if (!(await mayHoldLegacy())) return;
    const legacy = lastClaimOf(await store.readStream(legacyEmailStreamId(email)));
    if (legacy && legacy.holder !== userId && (await isHeld(legacy.claim, legacy.holder, email, now))) {
      throw new DomainError('EMAIL_TAKEN', 'this email address is already taken');
    }
  }

  /**
   * Claims an address whose stream exists: 'ours' when its last claim already names
   * `userId` and still binds, 'claimed' when this appended the claim (the address was
   * free, its claim lapsed, or `userId`'s own claim lapsed: renewed, so that another
   * user's takeover of it conflicts instead of succeeding beside this request),
   * 'taken' when another user holds it.
   */
  async function claimFound(streamId: string, email: string, userId: string, now: Date, metadata: EventMetadata): Promise<'ours' | 'claimed' | 'taken'> {
    const claim = claimEvents(userId, now, metadata);
    for (let attempt = 0; ; attempt++) {
      const events = await store.readStream(streamId);
      const last = events[events.length - 1];
      const held = lastClaimOf(events);
      if (held) {
        const binds = await isHeld(held.claim, held.holder, email, now);
        // Our own claim, past the grace period and not yet on our stream (a retry of a registration
        // whose user append failed, long after): another user may take it over as lapsed right now.
        if (held.holder === userId && binds) return 'ours';
        if (held.holder !== userId && binds) return 'taken';
      }
      try {
        await store.appendToStream(streamId, claim, { expectedRevision: last ? last.revision : 'no_stream' });
        return 'claimed';
      } catch (error) {
        // Someone else claimed or released it meanwhile: look again.
        if (error instanceof ConcurrencyError && attempt < 3) continue;
        if (error instanceof ConcurrencyError) return 'taken';
        throw error;
      }
    }
  }

  /**
   * Makes sure the claim on `email` names `userId`, after the user's stream took the
   * address on a claim the request found rather than made (a retry's, or a concurrent
   * request's for the same user). A request for that user that failed, or that changed
   * the address away a moment before, may have released it in between; it is claimed
   * again. Resolves false when another user holds it by then (the rule's one gap: a
   * third party's claim between that release and this one).
   */
  async function confirm(email: string, userId: string, now: Date, metadata: EventMetadata): Promise<boolean> {
    return (await claimFound(emailStreamIdOf(deps.emailHash(email)), email, userId, now, metadata)) !== 'taken';
  }

  return {
    /**
     * Claims `email` for `userId`; EMAIL_TAKEN when another user holds it.
     * `alongside` (the user's own events) is appended in the same transaction
     * when the address was never claimed and the store can: then its result is
     * returned, and a conflict on its stream is thrown with nothing written.
     */
    async reserve(
      email: string,
      userId: string,
      now: Date,
      metadata: EventMetadata,
      alongside?: StreamAppend,
    ): Promise<{ newlyClaimed: boolean; appendedAlongside?: AppendResult; confirmAfter: boolean }> {
      await sameSecret();
      await checkLegacy(email, userId, now);
      const streamId = emailStreamIdOf(deps.emailHash(email));
      const claim = claimEvents(userId, now, metadata);
      // Most addresses were never claimed: claim first, and read only when the stream turns out to exist.
      try {
        if (alongside && store.appendToStreams) {
          const [, appendedAlongside] = await store.appendToStreams([{ streamId, events: claim, expectedRevision: 'no_stream' }, alongside]);
          return { newlyClaimed: true, appendedAlongside: appendedAlongside!, confirmAfter: false };
        }
        await store.appendToStream(streamId, claim, { expectedRevision: 'no_stream' });
        // A store that may hold reservations from before the keyed hash: a request for this user moving
        // the address away releases it under both names, and may read this new claim as the one to
        // release before this request's user append lands; the claim is looked at again after it.
        return { newlyClaimed: true, confirmAfter: await mayHoldLegacy() };
      } catch (error) {
        if (!(error instanceof ConcurrencyError) || error.streamId !== streamId) throw error;
      }
      const found = await claimFound(streamId, email, userId, now, metadata);
      if (found === 'taken') throw new DomainError('EMAIL_TAKEN', 'this email address is already taken');
      return { newlyClaimed: found === 'claimed', confirmAfter: found === 'ours' || (await mayHoldLegacy()) };
    },

    confirm,

    /**
     * Gives `email` up if `userId` holds it (under the keyed hash, and under the
     * plain hash of older reservations where the store may hold them) and the user's
     * stream does not have it: a request that failed or moved the address away must
     * not free it under a concurrent request for the same user that took it on the
     * same claim. Looked at before the release and again after it: that request
     * writes its events and then looks at the claim (`confirm`), this one releases
     * and then looks at the user, so one of the two sees the other and the claim is
     * taken again. Best effort: a lost release is healed by the takeover rule.
     */
    async release(email: string, userId: string, now: Date, metadata: EventMetadata): Promise<void> {
      if ((await deps.currentEmailOf(userId)) === email) return;
      const streams = [emailStreamIdOf(deps.emailHash(email))];
      if (await mayHoldLegacy()) streams.push(legacyEmailStreamId(email));
      let released = false;
      for (const streamId of streams) {
        const events = await store.readStream(streamId);
        const held = lastClaimOf(events);
        if (!held || held.holder !== userId) continue;
        try {
          await store.appendToStream(
            streamId,
            [{ type: 'EmailReleased', data: { userId, occurredAt: now.toISOString() }, metadata }],
            { expectedRevision: held.claim.revision },
          );
          released = true;
        } catch (error) {
          if (!(error instanceof ConcurrencyError)) throw error;
        }
      }
      if (released && (await deps.currentEmailOf(userId)) === email) await confirm(email, userId, now, metadata);
    },
  };
}
export type EmailReservations = ReturnType<typeof emailReservations>;
