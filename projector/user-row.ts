import { toDbDate } from '../shared/read-db.js';
import type { UserEvent } from '../shared/user-events.js';

/** One row of `queries`.`USER_DATA`: a user as of stream revision VERSION. */
export interface UserRow {
  ID_USER_DATA: string;
  NAME: string;
  EMAIL: string;
  STATUS: 'registered' | 'validated' | 'deactivated';
  DATE_REGISTER: string;
  DATE_VALIDATED: string | null;
  DATE_DEACTIVATED: string | null;
  DATE_UPDATED: string;
  VERSION: number;
}

/**
 * Pure: the row after applying the event at `revision` of the user's stream.
 * An event at or below the row's VERSION was applied already and changes nothing,
 * which makes duplicates and replays harmless. Returns undefined when there is
 * no row and the event cannot create one.
 */
export function userRowFrom(row: UserRow | undefined, event: UserEvent, revision: number): UserRow | undefined {
  if (row && revision <= row.VERSION) return row;
  const at = toDbDate(event.data.occurredAt);
  if (event.type === 'UserRegistered') {
    const { userId, name, email } = event.data;
    return {
      ID_USER_DATA: userId,
      NAME: name,
      EMAIL: email,
      STATUS: 'registered',
      DATE_REGISTER: at,
      DATE_VALIDATED: null,
      DATE_DEACTIVATED: null,
      DATE_UPDATED: at,
      VERSION: revision,
    };
  }
  if (!row) return undefined;
  const next = { ...row, DATE_UPDATED: at, VERSION: revision };
  switch (event.type) {
    case 'UserRenamed':
      return { ...next, NAME: event.data.name };
    case 'UserEmailChanged':
      return { ...next, EMAIL: event.data.email };
    case 'UserValidated':
      return { ...next, STATUS: row.STATUS === 'deactivated' ? 'deactivated' : 'validated', DATE_VALIDATED: at };
    case 'UserDeactivated':
      return { ...next, STATUS: 'deactivated', DATE_DEACTIVATED: at };
    default: {
      const _exhaustive: never = event;
      return row;
    }
  }
}
