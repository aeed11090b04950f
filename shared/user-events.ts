import type { FromSchema } from 'json-schema-to-ts';

/**
 * The user events: what the service has decided, as stored in the event store and
 * read back by the projector. Each has a JSON Schema, checked by `validateUserEvent`
 * whenever an event crosses a boundary (projector input, relay output).
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
} as const;

type Schemas = typeof userEventSchemas;
export type UserEventType = keyof Schemas;
export type UserEventOf<T extends UserEventType> = { type: T; data: FromSchema<Schemas[T]> };
export type UserRegistered = UserEventOf<'UserRegistered'>;
export type UserRenamed = UserEventOf<'UserRenamed'>;
export type UserEmailChanged = UserEventOf<'UserEmailChanged'>;
export type UserValidated = UserEventOf<'UserValidated'>;
export type UserDeactivated = UserEventOf<'UserDeactivated'>;
export type UserEvent = UserRegistered | UserRenamed | UserEmailChanged | UserValidated | UserDeactivated;

export const userEventTypes = Object.keys(userEventSchemas) as UserEventType[];

export function isUserEventType(type: string): type is UserEventType {
  return Object.hasOwn(userEventSchemas, type);
}

export const userStreamPrefix = 'user-';
export const userStreamId = (userId: string): string => `${userStreamPrefix}${userId}`;
export const userIdFromStream = (streamId: string): string | undefined =>
  streamId.startsWith(userStreamPrefix) ? streamId.slice(userStreamPrefix.length) : undefined;
