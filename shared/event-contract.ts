import { envelopeSchema, publicTypeOf } from './public-events.js';
import { userEventSchemas, type UserEventType } from './user-events.js';

/** Where the published JSON Schema of the Kafka message value lives in the repository. */
export const eventSchemaFile = 'docs/events/users.events.v1.schema.json';

const meaning: Record<UserEventType, string> = {
  UserRegistered: 'A user was registered.',
  UserRenamed: 'A user was renamed.',
  UserEmailChanged: "A user's email address changed; `previousEmail` is the address it replaced.",
  UserValidated: "A user's email address was validated.",
  UserDeactivated: 'A user was deactivated; it accepts no further changes and keeps its email address.',
  UserForgotten:
    "The person asked to be forgotten: the service has destroyed their personal data. Consumers must erase everything they keep of this user's name and email now. The same type stands in for any earlier event of the user that is published again after forgetting (a replay): its personal data is gone, so it says only that.",
};

/**
 * The JSON Schema (draft-07, AsyncAPI's default schema dialect) of a message value
 * on the users topic, built from the schemas the service itself checks: the v1
 * envelope, with `data` held to the schema of its `type`. `definitions` holds, per
 * public type, the envelope of that type (`user.registered.v1`) and its data
 * (`user.registered.v1.data`), for AsyncAPI messages to point at.
 */
export function eventContractSchema() {
  const { $id: _internalId, ...envelope } = envelopeSchema;
  const types = Object.entries(publicTypeOf) as [UserEventType, string][];
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'users.events.v1 message value',
    description:
      "A user event as published on Kafka, as JSON (content type `application/vnd.users.event+json; version=1`). The message key is `stream`. A change to an event's shape is a new `type` version, never an edit of v1.",
    ...envelope,
    allOf: types.map(([, type]) => ({
      if: { properties: { type: { const: type } }, required: ['type'] },
      then: { properties: { data: { $ref: `#/definitions/${type}.data` } } },
    })),
    definitions: Object.fromEntries(
      types.flatMap(([internal, type]): [string, object][] => [
        [type, { description: meaning[internal], allOf: [{ $ref: '#' }, { properties: { type: { const: type } } }] }],
        [`${type}.data`, { description: `The \`data\` of \`${type}\`.`, ...userEventSchemas[internal] }],
      ]),
    ),
  };
}

/** The file's text: the schema as indented JSON with a final newline. */
export const eventContractText = (): string => `${JSON.stringify(eventContractSchema(), null, 2)}\n`;
