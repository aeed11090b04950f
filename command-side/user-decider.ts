import { DomainError } from '../shared/errors.js';
import type { UserEvent } from '../shared/user-events.js';
import { normaliseEmail, normaliseName } from './user-values.js';

/**
 * The user aggregate as a pure decider: `decide(command, state)` returns the events
 * a command produces, `evolve(state, event)` folds them. No I/O and no clock: the
 * time arrives in the command as `now`.
 */
export type UserCommand =
  | { type: 'RegisterUser'; data: { userId: string; name: string; email: string; now: Date } }
  | { type: 'RenameUser'; data: { userId: string; name: string; now: Date } }
  | { type: 'ChangeEmail'; data: { userId: string; email: string; now: Date } }
  | { type: 'ValidateUser'; data: { userId: string; now: Date } }
  | { type: 'DeactivateUser'; data: { userId: string; now: Date } }
  | { type: 'ForgetUser'; data: { userId: string; now: Date; stored: StoredStream } };

/**
 * What a forget is decided on: the user's stream as stored, not the state its
 * events fold to. An event whose key is gone folds as UserForgotten though no
 * forget was ever recorded (a key store restored from a backup older than the
 * user, lost, or the wrong one), and an event that does not parse folds to
 * nothing; neither may stop a forget, which needs nothing its events say.
 */
export interface StoredStream {
  /** The stream holds events. */
  exists: boolean;
  /** A UserForgotten is stored in it (appended by a forget, not read from an event whose key is gone). */
  forgetRecorded: boolean;
}

/** `forgotten`: the person's data is erased (name and email are empty); nothing changes the user again. */
export type UserStatus = 'registered' | 'validated' | 'deactivated' | 'forgotten';

export type UserState =
  | { exists: false }
  | { exists: true; userId: string; name: string; email: string; status: UserStatus; validated: boolean };

export const initialState = (): UserState => ({ exists: false });

export function evolve(state: UserState, event: UserEvent): UserState {
  switch (event.type) {
    case 'UserRegistered': {
      const { userId, name, email } = event.data;
      return { exists: true, userId, name, email, status: 'registered', validated: false };
    }
    case 'UserRenamed':
      return state.exists ? { ...state, name: event.data.name } : state;
    case 'UserEmailChanged':
      return state.exists ? { ...state, email: event.data.email } : state;
    case 'UserValidated':
      return state.exists ? { ...state, status: 'validated', validated: true } : state;
    case 'UserDeactivated':
      return state.exists ? { ...state, status: 'deactivated' } : state;
    case 'UserForgotten':
      // Also what an event reads as once its key is gone, so it may come first.
      return { exists: true, userId: event.data.userId, name: '', email: '', status: 'forgotten', validated: state.exists && state.validated };
    default: {
      const _exhaustive: never = event;
      return state;
    }
  }
}

function existing(state: UserState, userId: string) {
  if (!state.exists) throw new DomainError('USER_NOT_FOUND', `user ${userId} does not exist`);
  if (state.status === 'forgotten') throw new DomainError('USER_FORGOTTEN', `user ${userId} was forgotten: their personal data is erased`);
  return state;
}

function existingActive(state: UserState, userId: string) {
  const user = existing(state, userId);
  if (user.status === 'deactivated') {
    throw new DomainError('USER_DEACTIVATED', `user ${userId} is deactivated and accepts no changes`);
  }
  return user;
}

export function decide(command: UserCommand, state: UserState): UserEvent[] {
  const occurredAt = command.data.now.toISOString();
  const { userId } = command.data;
  switch (command.type) {
    case 'RegisterUser': {
      if (state.exists) throw new DomainError('USER_ALREADY_EXISTS', `user ${userId} already exists`);
      const name = normaliseName(command.data.name);
      const email = normaliseEmail(command.data.email);
      return [{ type: 'UserRegistered', data: { userId, name, email, occurredAt } }];
    }
    case 'RenameUser': {
      const user = existingActive(state, userId);
      const name = normaliseName(command.data.name);
      return name === user.name ? [] : [{ type: 'UserRenamed', data: { userId, name, occurredAt } }];
    }
    case 'ChangeEmail': {
      const user = existingActive(state, userId);
      const email = normaliseEmail(command.data.email);
      return email === user.email
        ? []
        : [{ type: 'UserEmailChanged', data: { userId, email, previousEmail: user.email, occurredAt } }];
    }
    case 'ValidateUser': {
      const user = existingActive(state, userId);
      return user.validated ? [] : [{ type: 'UserValidated', data: { userId, occurredAt } }];
    }
    case 'DeactivateUser': {
      const user = existing(state, userId);
      // Deactivating twice is a no-op, so a retried DELETE succeeds.
      return user.status === 'deactivated' ? [] : [{ type: 'UserDeactivated', data: { userId, occurredAt } }];
    }
    case 'ForgetUser': {
      // On the stream as stored (see StoredStream): a user whose keys are gone but whom no forget recorded is forgotten now.
      const { stored } = command.data;
      if (!stored.exists) throw new DomainError('USER_NOT_FOUND', `user ${userId} does not exist`);
      // Forgetting twice is a no-op, so a retried request succeeds (and destroys any key left).
      return stored.forgetRecorded ? [] : [{ type: 'UserForgotten', data: { userId, occurredAt } }];
    }
    default: {
      const _exhaustive: never = command;
      throw new Error(`unknown command ${JSON.stringify(_exhaustive)}`);
    }
  }
}

export const foldUser = (events: readonly UserEvent[]): UserState => events.reduce(evolve, initialState());
