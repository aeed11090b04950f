import { CorruptEventError } from '../shared/errors.js';
import type { ProjectedEvent } from '../shared/event-feed/port.js';
import { parseUserEvent, userIdFromStream, type UserEvent } from '../shared/user-events.js';

/** An event of this projection: one to apply, or a poison one to park. */
export type ClassifiedEvent =
  | { kind: 'event'; streamId: string; revision: number; userId: string; event: UserEvent; from: ProjectedEvent }
  | { kind: 'poison'; streamId: string; revision: number; error: string; from: ProjectedEvent };

/**
 * The projector's input boundary: undefined for events of other streams (email
 * reservations, the relay's lease...), else the user event checked against its
 * JSON Schema, or why it is poison (unknown type, invalid payload, wrong user).
 */
const poison = (e: ProjectedEvent, error: string): ClassifiedEvent => ({ kind: 'poison', streamId: e.streamId, revision: e.revision, error, from: e });

export function classify(e: ProjectedEvent): ClassifiedEvent | undefined {
  if (e.problem !== undefined) return poison(e, e.problem);
  const userId = userIdFromStream(e.streamId);
  if (userId === undefined) return undefined;
  try {
    return { kind: 'event', streamId: e.streamId, revision: e.revision, userId, event: parseUserEvent(e), from: e };
  } catch (error) {
    if (error instanceof CorruptEventError) return poison(e, error.reason);
    throw error;
  }
}

/** The user a classified event is about: the one its check found, or its stream's (a poison event may have no user). */
export const userIdOf = (c: ClassifiedEvent): string | undefined => (c.kind === 'event' ? c.userId : userIdFromStream(c.streamId));

/** The user event, if it is one; throws EVENT_INVALID for a poison event (for folds that must not meet one). */
export function toUserEvent(e: ProjectedEvent): UserEvent | undefined {
  const classified = classify(e);
  if (classified?.kind === 'poison') throw new CorruptEventError(e.streamId, e.revision, classified.error);
  return classified?.event;
}
