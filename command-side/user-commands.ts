import { SpanKind, type Span } from '@opentelemetry/api';
import { v5 as uuidv5, v7 as uuidv7 } from 'uuid';
import { ConcurrencyError, CorruptEventError, DomainError } from '../shared/errors.js';
import type { EventMetadata, EventStore, RecordedEvent, StreamAppend } from '../shared/event-store/port.js';
import type { DataKey } from '../shared/personal-data/key-store.js';
import { personalFields, type Vault } from '../shared/personal-data/vault.js';
import { failSpan, startSpan, traceContextOfSpan, tracingOn, type TraceContext } from '../shared/tracing.js';
import { parseUserEvent, userStreamId, type UserEvent } from '../shared/user-events.js';
import { emailReservations } from './email-reservations.js';
import { decide, foldUser, initialState, type StoredStream, type UserCommand, type UserState, type UserStatus } from './user-decider.js';
import { normaliseEmail, normaliseName } from './user-values.js';

export interface CommandOptions {
  /** The revision the caller last saw (If-Match); a different current revision is a conflict. */
  expectedRevision?: number;
  correlationId?: string;
  /** The W3C trace context of the request; its events keep it in their metadata. */
  trace?: TraceContext;
}

export interface CommandResult {
  id: string;
  /** The user's stream revision after the command. */
  revision: number;
}

// Fixed namespace: ids derived from idempotency keys stay the same across releases.
const idempotencyNamespace = '6f0c1a52-3a1e-4f4b-9d3c-52a8b0c3e2d1';
const retriesOnConflict = 3;

/**
 * Runs user commands against the event store: load the stream, fold, decide,
 * append with the revision that was read. Without If-Match a conflicting
 * concurrent write is retried on fresh state; with it, it is the caller's 409.
 */
export function userCommands(deps: { store: EventStore; vault: Vault; clock?: () => Date; emailGraceMs: number }) {
  const { store, vault } = deps;
  const clock = deps.clock ?? (() => new Date());

  interface Loaded {
    state: UserState;
    revision: number;
    /** The stream as stored (personal fields sealed). */
    stored: RecordedEvent[];
    /** The same events, opened and typed (for a forget, those that parse: see `loadForForget`). */
    events: UserEvent[];
  }

  /**
   * A user's stream, opened: each event typed, its personal fields in clear (or read as
   * UserForgotten once its key is gone). With `leaveOutCorrupt` (see `loadForForget`), an
   * event that does not parse is left out instead of failing the read.
   */
  async function load(userId: string, leaveOutCorrupt = false): Promise<Loaded> {
    const stored = await store.readStream(userStreamId(userId));
    const opened = await vault.open(stored);
    const events = leaveOutCorrupt ? opened.flatMap(parsedOrNone) : opened.map(parseUserEvent);
    return { state: foldUser(events), revision: stored.length - 1, stored, events };
  }

  /**
   * A user's stream as a forget reads it: an event that does not parse (EVENT_INVALID,
   * e.g. a sealed payload that no longer authenticates) is left out. A forget needs
   * nothing such an event said: whether the stream exists and records a forget, and the
   * keys it was sealed with, are read from the stream as stored; the address to release,
   * from the events that parse. Every other command still fails on such a stream, and
   * the projector quarantines it.
   */
  const loadForForget = (userId: string): Promise<Loaded> => load(userId, true);

  /** The user's data key: the one its stream already uses while it exists, else a new one. */
  async function keyFor(stored: readonly RecordedEvent[]): Promise<DataKey> {
    const current = vault.keyIdsOf(stored).at(-1);
    return (current === undefined ? undefined : await vault.key(current)) ?? vault.newKey();
  }

  const emails = emailReservations({
    store,
    emailHash: vault.emailHash,
    graceMs: deps.emailGraceMs,
    currentEmailOf: async (userId) => {
      const stored = await store.readStream(userStreamId(userId));
      // Nothing changes a user after a forget: a forgotten holder has no address, whether or not its earlier events still parse.
      if (stored.some(isForget)) return undefined;
      const state = foldUser((await vault.open(stored)).map(parseUserEvent));
      return state.exists ? state.email : undefined;
    },
  });

  const metadataFor = (commandType: UserCommand['type'], options: CommandOptions): EventMetadata => ({
    commandType,
    ...(options.correlationId ? { correlationId: options.correlationId, causationId: options.correlationId } : {}),
    ...options.trace,
  });

  /**
   * The user's new events as stored: personal fields sealed under the user's key;
   * a UserForgotten names the keys to destroy (`sealedWith`), so that the log's
   * readers can finish a forget whose request died half-way.
   */
  const userAppend = (
    userId: string,
    events: UserEvent[],
    revision: number,
    metadata: EventMetadata,
    key: DataKey | undefined,
    sealedWith: string[],
  ): StreamAppend => {
    const streamId = userStreamId(userId);
    const stored = (event: UserEvent) => {
      if (event.type === 'UserForgotten') return { ...event.data, keyIds: sealedWith };
      return key ? vault.seal(streamId, event, key) : event.data;
    };
    return {
      streamId,
      events: events.map((event) => ({ type: event.type, data: stored(event), metadata })),
      expectedRevision: revision === -1 ? 'no_stream' : revision,
    };
  };

  /**
   * Runs one command; with tracing on, as an `append` span (a child of the
   * request's), whose context its events carry on.
   */
  async function execute(
    userId: string,
    commandAt: CommandAt,
    options: CommandOptions & DecideOptions,
  ): Promise<CommandResult> {
    if (!tracingOn()) return decideAndAppend(userId, commandAt, options);
    const span = startSpan('append', { kind: SpanKind.INTERNAL, parent: options.trace, attributes: { 'users.stream.id': userStreamId(userId) } });
    try {
      const result = await decideAndAppend(userId, commandAt, { ...options, trace: traceContextOfSpan(span), span });
      span.setAttribute('users.stream.revision', result.revision);
      return result;
    } catch (error) {
      failSpan(span, error);
      throw error;
    } finally {
      span.end();
    }
  }

  /** The command to decide, made at `now` on the user's stream as read (`stored`). */
  type CommandAt = (now: Date, stored: readonly RecordedEvent[]) => UserCommand;
  interface DecideOptions {
    /** A freshly generated id, whose stream cannot exist yet. */
    newStream?: boolean;
    /** How the stream is read (`load` unless told). */
    read?: (userId: string) => Promise<Loaded>;
  }

  /** Decides and appends one command, claiming and releasing email addresses around it. */
  async function decideAndAppend(
    userId: string,
    commandAt: CommandAt,
    options: CommandOptions & DecideOptions & { span?: Span },
  ): Promise<CommandResult> {
    const read = options.read ?? load;
    for (let attempt = 0; ; attempt++) {
      // A freshly generated id has no stream yet: skip the read (the append still says "no stream").
      const { state, revision, stored } =
        options.newStream && attempt === 0 ? { state: initialState(), revision: -1, stored: [] } : await read(userId);
      const now = clock();
      const command = commandAt(now, stored);
      // A user that does not exist is not found, whatever revision the caller expected (the decider says so below);
      // a forget tells by the stream as stored, as the decider does.
      const found = command.type === 'ForgetUser' ? command.data.stored.exists : state.exists;
      if (options.expectedRevision !== undefined && options.expectedRevision !== revision && found) {
        throw new ConcurrencyError(userStreamId(userId), String(options.expectedRevision), revision);
      }
      const events = decide(command, state);
      options.span?.setAttributes({ 'users.command': command.type, 'users.events.appended': events.length, 'users.append.attempts': attempt + 1 });
      if (events.length === 0) return { id: userId, revision };
      const metadata = metadataFor(command.type, options);
      const claimed = claimedEmail(events);
      const personal = events.some((event) => Object.hasOwn(personalFields, event.type));
      const ours = userAppend(userId, events, revision, metadata, personal ? await keyFor(stored) : undefined, vault.keyIdsOf(stored));
      let newlyClaimed = false;
      try {
        // A new claim and the user's events may go in one append (see `reserve`).
        const { newlyClaimed: claimedNow, appendedAlongside, confirmAfter } = claimed
          ? await emails.reserve(claimed, userId, now, metadata, ours)
          : { newlyClaimed: false, appendedAlongside: undefined, confirmAfter: false };
        newlyClaimed = claimedNow;
        const { streamId, events: toAppend, expectedRevision } = ours;
        const next = (appendedAlongside ?? (await store.appendToStream(streamId, toAppend, { expectedRevision }))).nextExpectedRevision;
        // A claim found rather than made may have been released by a failed request for this user meanwhile (see `release`).
        if (claimed && confirmAfter) await emails.confirm(claimed, userId, now, metadata).catch(() => {});
        const released = releasedEmail(events);
        if (released) await emails.release(released, userId, now, metadata).catch(() => {});
        return { id: userId, revision: next };
      } catch (error) {
        // Only a conflict says the user's events were not written. After any other failure they may
        // have been (an EventStoreDB append that timed out can still commit): the claim stays, and
        // the takeover rule frees it after the grace period if the user never took the address.
        if (claimed && newlyClaimed && error instanceof ConcurrencyError) await emails.release(claimed, userId, now, metadata).catch(() => {});
        const retry = error instanceof ConcurrencyError && options.expectedRevision === undefined && attempt < retriesOnConflict;
        if (!retry) throw error;
      }
    }
  }

  return {
    /**
     * Registers a user. With an idempotency key the user id is derived from the
     * key, so a retried request finds its own user and gets the original result.
     */
    async register(input: { name: string; email: string }, options: CommandOptions & { idempotencyKey?: string } = {}) {
      const key = options.idempotencyKey;
      if (key === undefined) {
        const userId = uuidv7();
        return execute(userId, (now) => ({ type: 'RegisterUser', data: { userId, ...input, now } }), {
          ...options,
          newStream: true,
        });
      }
      const userId = uuidv5(key, idempotencyNamespace);
      const earlier = await earlierRegistration(userId, input);
      if (earlier) return earlier;
      try {
        return await execute(userId, (now) => ({ type: 'RegisterUser', data: { userId, ...input, now } }), options);
      } catch (error) {
        // A concurrent request with the same key won the race: answer as it did.
        const raced = error instanceof DomainError && error.code === 'USER_ALREADY_EXISTS';
        if (raced) return (await earlierRegistration(userId, input)) ?? Promise.reject(error);
        throw error;
      }
    },
    rename: (userId: string, name: string, options: CommandOptions = {}) =>
      execute(userId, (now) => ({ type: 'RenameUser', data: { userId, name, now } }), options),
    changeEmail: (userId: string, email: string, options: CommandOptions = {}) =>
      execute(userId, (now) => ({ type: 'ChangeEmail', data: { userId, email, now } }), options),
    validate: (userId: string, options: CommandOptions = {}) =>
      execute(userId, (now) => ({ type: 'ValidateUser', data: { userId, now } }), options),
    deactivate: (userId: string, options: CommandOptions = {}) =>
      execute(userId, (now) => ({ type: 'DeactivateUser', data: { userId, now } }), options),

    /**
     * Forgets the person: appends UserForgotten (after which the decider takes no
     * other change), releases their address, then destroys every data key their
     * stream was sealed with. Idempotent: a retry after a crash anywhere in
     * between finishes the job.
     *
     * Decided on the stream as stored (see `StoredStream`), so a user whose keys
     * are missing is forgotten all the same: UserForgotten is appended, naming the
     * keys (a reader of the log holding them destroys them), and the user stays
     * forgotten if the keys come back. Their address cannot be opened then, so it
     * is not released here; a forgotten holder has no address, and its claim lapses
     * after EMAIL_RESERVATION_GRACE_MS, when the next claimant takes it over. An
     * event that does not parse does not stop a forget either (see `loadForForget`).
     */
    async forget(userId: string, options: CommandOptions = {}): Promise<CommandResult> {
      const forgetAt: CommandAt = (now, stored) => ({ type: 'ForgetUser', data: { userId, now, stored: asStored(stored) } });
      const result = await execute(userId, forgetAt, { ...options, read: loadForForget });
      const { stored, events } = await loadForForget(userId);
      const email = lastKnownEmail(events);
      if (email) await emails.release(email, userId, clock(), metadataFor('ForgetUser', options));
      await vault.destroy(vault.keyIdsOf(stored));
      return result;
    },

    /** Everything the service holds about the user, opened: their current state and every event with its time. */
    async personalData(userId: string): Promise<PersonalDataExport> {
      const { state, revision, stored, events } = await load(userId);
      if (!state.exists) throw new DomainError('USER_NOT_FOUND', `user ${userId} does not exist`);
      if (state.status === 'forgotten') throw new DomainError('USER_FORGOTTEN', `user ${userId} was forgotten: their personal data is erased`);
      return {
        id: userId,
        revision,
        user: { name: state.name, email: state.email, status: state.status, validated: state.validated },
        events: events.map((event, i) => ({
          revision: stored[i]!.revision,
          type: event.type,
          recordedAt: stored[i]!.recordedAt.toISOString(),
          data: event.data,
        })),
      };
    },
  };

  /** The result of an earlier registration with the same idempotency key, if there was one. */
  async function earlierRegistration(userId: string, input: { name: string; email: string }) {
    const { state, events } = await load(userId);
    const [registered] = events;
    if (!registered) return undefined;
    if (state.exists && state.status === 'forgotten') {
      throw new DomainError('USER_FORGOTTEN', `the user this Idempotency-Key registered was forgotten`);
    }
    const same =
      registered.type === 'UserRegistered' &&
      registered.data.name === normaliseName(input.name) &&
      registered.data.email === normaliseEmail(input.email);
    if (!same) {
      throw new DomainError('IDEMPOTENCY_KEY_REUSED', 'this Idempotency-Key was used for a different registration');
    }
    return { id: userId, revision: 0 };
  }
}
export type UserCommands = ReturnType<typeof userCommands>;

/** What `personalData` returns: the user as it stands and every event of theirs, in clear. */
export interface PersonalDataExport {
  id: string;
  revision: number;
  user: { name: string; email: string; status: Exclude<UserStatus, 'forgotten'>; validated: boolean };
  events: { revision: number; type: string; recordedAt: string; data: UserEvent['data'] }[];
}

const isForget = (event: RecordedEvent) => event.type === 'UserForgotten';

/** What a forget is decided on, from the stream as stored. */
const asStored = (stored: readonly RecordedEvent[]): StoredStream => ({ exists: stored.length > 0, forgetRecorded: stored.some(isForget) });

/** The event typed, or none when it does not parse (EVENT_INVALID). */
function parsedOrNone(event: RecordedEvent): UserEvent[] {
  try {
    return [parseUserEvent(event)];
  } catch (error) {
    if (error instanceof CorruptEventError) return [];
    throw error;
  }
}

/** The address the user held last before any UserForgotten, if their events still say. */
function lastKnownEmail(events: readonly UserEvent[]): string | undefined {
  let email: string | undefined;
  for (const event of events) {
    if (event.type === 'UserForgotten') break;
    if (event.type === 'UserRegistered' || event.type === 'UserEmailChanged') email = event.data.email;
  }
  return email;
}

function claimedEmail(events: UserEvent[]): string | undefined {
  for (const event of events) {
    if (event.type === 'UserRegistered' || event.type === 'UserEmailChanged') return event.data.email;
  }
  return undefined;
}

function releasedEmail(events: UserEvent[]): string | undefined {
  for (const event of events) if (event.type === 'UserEmailChanged') return event.data.previousEmail;
  return undefined;
}
