import type { FromSchema } from 'json-schema-to-ts';
import { CorruptEventError } from './errors.js';
import { ajv, fieldProblems } from './schema-validation.js';

/**
 * The user events: what the service has decided, as stored in the event store and
 * read back by the command side, the relay, the projector and the rebuild. Each
 * has a JSON Schema; `parseUserEvent` is the one place where a stored event
 * becomes a typed one.
 */
const uuid = { type: 'string', format: 'uuid' } as const;
const name = { type: 'string', minLength: 1, maxLength: 255 } as const;
const email = { type: 'string', format: 'email', maxLength: 254 } as const;
const instant = { type: 'string', format: 'date-time' } as const;

function eventSchema<P extends Record<string, unknown>, R extends readonly string[]>(
  properties: P,
  required: R,
) {
  return { type: 'object', additionalProperties: false, properties, required } as const;
}

export const userEventSchemas = {
  UserRegistered: eventSchema(
    { userId: uuid, name, email, occurredAt: instant },
    ['userId', 'name', 'email', 'occurredAt'] as const,
  ),
  UserRenamed: eventSchema(
    { userId: uuid, name, occurredAt: instant },
    ['userId', 'name', 'occurredAt'] as const,
  ),
  UserEmailChanged: eventSchema(
    { userId: uuid, email, previousEmail: email, occurredAt: instant },
    ['userId', 'email', 'previousEmail', 'occurredAt'] as const,
  ),
  UserValidated: eventSchema({ userId: uuid, occurredAt: instant }, ['userId', 'occurredAt'] as const),
  UserDeactivated: eventSchema({ userId: uuid, occurredAt: instant }, ['userId', 'occurredAt'] as const),
  /**
   * The person asked to be forgotten: their data keys are destroyed, so every
   * earlier event's personal fields are noise from now on. Carries no personal
   * data itself. A stored event whose key is gone is read as this event too.
   */
  UserForgotten: eventSchema({ userId: uuid, occurredAt: instant }, ['userId', 'occurredAt'] as const),
} as const;

type Schemas = typeof userEventSchemas;
export type UserEventType = keyof Schemas;
export type UserEventOf<T extends UserEventType> = { type: T; data: FromSchema<Schemas[T]> };
export type UserRegistered = UserEventOf<'UserRegistered'>;
export type UserRenamed = UserEventOf<'UserRenamed'>;
export type UserEmailChanged = UserEventOf<'UserEmailChanged'>;
export type UserValidated = UserEventOf<'UserValidated'>;
export type UserDeactivated = UserEventOf<'UserDeactivated'>;
export type UserForgotten = UserEventOf<'UserForgotten'>;
export type UserEvent = UserRegistered | UserRenamed | UserEmailChanged | UserValidated | UserDeactivated | UserForgotten;

export const userEventTypes = Object.keys(userEventSchemas) as UserEventType[];

export function isUserEventType(type: string): type is UserEventType {
  return Object.hasOwn(userEventSchemas, type);
}

export const userStreamPrefix = 'user-';
export const userStreamId = (userId: string): string => `${userStreamPrefix}${userId}`;
export const userIdFromStream = (streamId: string): string | undefined =>
  streamId.startsWith(userStreamPrefix) ? streamId.slice(userStreamPrefix.length) : undefined;

/**
 * Upcasters, by stored type: from an older payload to the current one, applied
 * before the schema check. None yet: every stored user event is of its first
 * version. A later version of an event adds its upcaster here, and no reader
 * changes.
 */
const upcasters: Partial<Record<UserEventType, (data: unknown) => unknown>> = {};

const validators = Object.fromEntries(
  Object.entries(userEventSchemas).map(([type, schema]) => [type, ajv.compile(schema)]),
) as Record<UserEventType, ReturnType<typeof ajv.compile>>;

/** A stored event as `parseUserEvent` reads it, whatever the store. */
type StoredUserEvent = { streamId: string; revision: number; type: string; data: unknown };
/** Made only on failure: no closure per event on the hot path. */
const corruptEvent = (stored: StoredUserEvent, reason: string) => new CorruptEventError(stored.streamId, stored.revision, reason);

/**
 * A stored event of a user stream as the typed event it says it is: its type
 * known, its payload upcast and checked against its schema, and about the
 * stream's own user. Throws CorruptEventError (EVENT_INVALID) otherwise, with the
 * same message wherever it is read.
 */
export function parseUserEvent(stored: StoredUserEvent): UserEvent {
  if (!isUserEventType(stored.type)) throw corruptEvent(stored, `unknown event type ${JSON.stringify(stored.type).slice(0, 200)}`);
  const data = upcasters[stored.type]?.(stored.data) ?? stored.data;
  const validate = validators[stored.type];
  if (!validate(data)) {
    const problems = fieldProblems(validate.errors)
      .map((p) => `${p.field} ${p.message}`)
      .join('; ');
    throw corruptEvent(stored, `${stored.type} does not match its schema: ${problems}`);
  }
  // The schema was checked just above: the payload is this type's.
  const event = { type: stored.type, data } as UserEvent;
  const userId = userIdFromStream(stored.streamId);
  if (event.data.userId !== userId) throw corruptEvent(stored, `${stored.type} names user ${event.data.userId}, not the stream's user ${userId}`);
  return event;
}
