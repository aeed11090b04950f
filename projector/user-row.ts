import { toDbDate } from '../shared/read-db.js';
import type { UserRow } from '../shared/read-model/user-row.js';
import type { UserEvent } from '../shared/user-events.js';

/**
 * Pure: the row after applying the event at `revision` of the user's stream.
 * An event at or below the row's VERSION was applied already and changes nothing,
 * which makes duplicates and replays harmless. Returns undefined when there is
 * no row and the event cannot create one.
 *
 * UserForgotten (appended when a person is forgotten, and also what any stored
 * event whose data key was destroyed reads back as) turns the row into an
 * anonymised tombstone, or creates one when there is no row yet: NAME and EMAIL
 * empty, STATUS 'forgotten', DATE_REGISTER kept, the validation and deactivation
 * dates cleared (so the live row equals what a rebuild from the keyless log gives). A forgotten row stays forgotten:
 * later events only move VERSION and DATE_UPDATED on.
 */
export function userRowFrom(row: UserRow | undefined, event: UserEvent, revision: number): UserRow | undefined {
  if (row && revision <= row.VERSION) return row;
  const at = toDbDate(event.data.occurredAt);
  if (row?.STATUS === 'forgotten') return { ...row, DATE_UPDATED: at, VERSION: revision };
  if (event.type === 'UserForgotten') {
    // The same tombstone however it is reached: a rebuild from a log whose keys are gone
    // starts forgotten at the registration and never sees what came between.
    return {
      ID_USER_DATA: event.data.userId,
      NAME: '',
      EMAIL: '',
      STATUS: 'forgotten',
      DATE_REGISTER: row?.DATE_REGISTER ?? at,
      DATE_VALIDATED: null,
      DATE_DEACTIVATED: null,
      DATE_UPDATED: at,
      VERSION: revision,
    };
  }
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
  // One object per event (a rebuild folds millions): the changed columns, DATE_UPDATED and VERSION.
  switch (event.type) {
    case 'UserRenamed':
      return { ...row, NAME: event.data.name, DATE_UPDATED: at, VERSION: revision };
    case 'UserEmailChanged':
      return { ...row, EMAIL: event.data.email, DATE_UPDATED: at, VERSION: revision };
    case 'UserValidated': {
      const STATUS = row.STATUS === 'deactivated' ? 'deactivated' : 'validated';
      return { ...row, STATUS, DATE_VALIDATED: at, DATE_UPDATED: at, VERSION: revision };
    }
    case 'UserDeactivated':
      return { ...row, STATUS: 'deactivated', DATE_DEACTIVATED: at, DATE_UPDATED: at, VERSION: revision };
    default: {
      const _exhaustive: never = event;
      return row;
    }
  }
}
