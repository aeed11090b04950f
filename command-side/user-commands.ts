import { SpanKind, type Span } from '@opentelemetry/api';
import { v5 as uuidv5, v7 as uuidv7 } from 'uuid';
import { ConcurrencyError, DomainError } from '../shared/errors.js';
import type { EventMetadata, EventStore, StreamAppend } from '../shared/event-store/port.js';
import { failSpan, startSpan, traceContextOfSpan, tracingOn, type TraceContext } from '../shared/tracing.js';
import { parseUserEvent, userStreamId, type UserEvent } from '../shared/user-events.js';
import { emailReservations } from './email-reservations.js';
import { decide, foldUser, initialState, type UserCommand, type UserState } from './user-decider.js';
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
export function userCommands(deps: { store: EventStore; clock?: () => Date; emailGraceMs: number }) {
  const { store } = deps;
  const clock = deps.clock ?? (() => new Date());

  async function load(userId: string): Promise<{ state: UserState; revision: number }> {
    const events = await store.readStream(userStreamId(userId));
    return { state: foldUser(events.map(parseUserEvent)), revision: events.length - 1 };
  }

  const emails = emailReservations({
    store,
    graceMs: deps.emailGraceMs,
    currentEmailOf: async (userId) => {
      const { state } = await load(userId);
      return state.exists ? state.email : undefined;
    },
  });

  const metadataFor = (command: UserCommand, options: CommandOptions): EventMetadata => ({
    commandType: command.type,
    ...(options.correlationId ? { correlationId: options.correlationId, causationId: options.correlationId } : {}),
    ...options.trace,
  });

  const userAppend = (userId: string, events: UserEvent[], revision: number, metadata: EventMetadata): StreamAppend => ({
    streamId: userStreamId(userId),
    events: events.map((event) => ({ ...event, metadata })),
    expectedRevision: revision === -1 ? 'no_stream' : revision,
  });

  /**
   * Runs one command; with tracing on, as an `append` span (a child of the
   * request's), whose context its events carry on.
   */
  async function execute(
    userId: string,
    commandAt: (now: Date) => UserCommand,
    options: CommandOptions & { newStream?: boolean },
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

  /** Decides and appends one command, claiming and releasing email addresses around it. */
  async function decideAndAppend(
    userId: string,
    commandAt: (now: Date) => UserCommand,
    options: CommandOptions & { newStream?: boolean; span?: Span },
  ): Promise<CommandResult> {
    for (let attempt = 0; ; attempt++) {
      // A freshly generated id has no stream yet: skip the read (the append still says "no stream").
      const { state, revision } =
        options.newStream && attempt === 0 ? { state: initialState(), revision: -1 } : await load(userId);
      if (options.expectedRevision !== undefined && options.expectedRevision !== revision) {
        throw new ConcurrencyError(userStreamId(userId), String(options.expectedRevision), revision);
      }
      const now = clock();
      const command = commandAt(now);
      const events = decide(command, state);
      options.span?.setAttributes({ 'users.command': command.type, 'users.events.appended': events.length, 'users.append.attempts': attempt + 1 });
      if (events.length === 0) return { id: userId, revision };
      const metadata = metadataFor(command, options);
      const claimed = claimedEmail(events);
      const ours = userAppend(userId, events, revision, metadata);
      let newlyClaimed = false;
      try {
        // A new claim and the user's events may go in one append (see `reserve`).
        const { newlyClaimed: claimedNow, appendedAlongside } = claimed
          ? await emails.reserve(claimed, userId, now, metadata, ours)
          : { newlyClaimed: false, appendedAlongside: undefined };
        newlyClaimed = claimedNow;
        const { streamId, events: toAppend, expectedRevision } = ours;
        const next = (appendedAlongside ?? (await store.appendToStream(streamId, toAppend, { expectedRevision }))).nextExpectedRevision;
        const released = releasedEmail(events);
        if (released) await emails.release(released, userId, now, metadata).catch(() => {});
        return { id: userId, revision: next };
      } catch (error) {
        if (claimed && newlyClaimed) await emails.release(claimed, userId, now, metadata).catch(() => {});
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
  };

  /** The result of an earlier registration with the same idempotency key, if there was one. */
  async function earlierRegistration(userId: string, input: { name: string; email: string }) {
    const [first] = await store.readStream(userStreamId(userId));
    if (!first) return undefined;
    const registered = parseUserEvent(first);
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
