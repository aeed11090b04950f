import type { FromSchema } from 'json-schema-to-ts';
import { ServiceError } from './errors.js';
import type { RecordedEvent } from './event-store/port.js';
import { fieldProblems, ajv } from './schema-validation.js';
import { isUserEventType, type UserEventType } from './user-events.js';

/**
 * What leaves the service on Kafka: a versioned public contract, kept apart from
 * the internal event names. Consumers outside the service depend on it, so a
 * change is a new `type` version (`user.renamed.v2`), never an edit of v1.
 */
export const publicTypeOf: Record<UserEventType, string> = {
  UserRegistered: 'user.registered.v1',
  UserRenamed: 'user.renamed.v1',
  UserEmailChanged: 'user.email-changed.v1',
  UserValidated: 'user.validated.v1',
  UserDeactivated: 'user.deactivated.v1',
  UserForgotten: 'user.forgotten.v1',
};
const internalTypeOf = new Map(Object.entries(publicTypeOf).map(([internal, wire]) => [wire, internal as UserEventType]));

export const envelopeSchema = {
  $id: 'users.event-envelope.v1',
  type: 'object',
  additionalProperties: false,
  properties: {
    specVersion: { const: '1', description: 'The envelope version.' },
    eventId: { type: 'string', minLength: 1, maxLength: 64, description: 'Unique per event; the same on every redelivery, so consumers can drop duplicates.' },
    type: { type: 'string', enum: Object.values(publicTypeOf), description: 'What happened, versioned: `data` follows the schema of this type.' },
    stream: { type: 'string', minLength: 1, maxLength: 200, description: 'The user\'s stream, `user-<user id>`; also the message key.' },
    revision: { type: 'integer', minimum: 0, description: 'The event\'s position in its stream, from 0; per stream, messages arrive in this order (at least once).' },
    logPosition: { type: 'string', pattern: '^\\d{1,20}$', description: 'The event\'s position in the store\'s global log, as a decimal string (it may exceed 2^53).' },
    occurredAt: { type: 'string', format: 'date-time', description: 'When the service decided it (UTC).' },
    correlationId: { type: 'string', maxLength: 128, description: 'The request that caused it (its `X-Request-Id`).' },
    causationId: { type: 'string', maxLength: 128, description: 'What directly caused it: for an event a request wrote, that request (its `X-Request-Id`) as well.' },
    data: { type: 'object', description: 'The event itself; its schema depends on `type`.' },
  },
  required: ['specVersion', 'eventId', 'type', 'stream', 'revision', 'logPosition', 'occurredAt', 'data'],
} as const;
export type EventEnvelope = FromSchema<typeof envelopeSchema>;

export const envelopeContentType = 'application/vnd.users.event+json; version=1';

/** The envelope of a stored user event; undefined for events that are not published. */
export function envelopeOf(event: RecordedEvent): EventEnvelope | undefined {
  if (!isUserEventType(event.type)) return undefined;
  const data = event.data as { occurredAt?: string };
  const { correlationId, causationId } = event.metadata;
  return {
    specVersion: '1',
    eventId: event.id,
    type: publicTypeOf[event.type],
    stream: event.streamId,
    revision: event.revision,
    logPosition: event.position.toString(),
    occurredAt: data.occurredAt ?? event.recordedAt.toISOString(),
    ...(typeof correlationId === 'string' ? { correlationId } : {}),
    ...(typeof causationId === 'string' ? { causationId } : {}),
    data: event.data as Record<string, unknown>,
  };
}

const checkEnvelope = ajv.compile(envelopeSchema);

/** Reads a message value back into what the projector needs; throws EVENT_INVALID on a broken one. */
export function fromEnvelope(value: Buffer | null): { streamId: string; revision: number; type: string; data: unknown } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value?.toString('utf8') ?? 'null');
  } catch (error) {
    throw new ServiceError('EVENT_INVALID', 'message is not JSON', false, { cause: error });
  }
  if (!checkEnvelope(parsed)) {
    const problems = fieldProblems(checkEnvelope.errors).map((p) => `${p.field} ${p.message}`);
    throw new ServiceError('EVENT_INVALID', `message is not a v1 envelope: ${problems.join('; ')}`);
  }
  const envelope = parsed as EventEnvelope;
  const type = internalTypeOf.get(envelope.type)!;
  return { streamId: envelope.stream, revision: envelope.revision, type, data: envelope.data };
}
