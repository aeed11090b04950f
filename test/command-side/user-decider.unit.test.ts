import t from 'tap';
import { decide, evolve, initialState, type UserCommand } from '../../command-side/user-decider.js';
import type { UserEvent } from '../../shared/user-events.js';
import { deciderSpecification } from '../support/decider-specification.js';

const spec = deciderSpecification<UserCommand, UserEvent, ReturnType<typeof initialState>>({ decide, evolve, initialState });
const userId = '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11';
const now = new Date('2026-01-02T03:04:05.678Z');
const occurredAt = now.toISOString();
const registered: UserEvent = { type: 'UserRegistered', data: { userId, name: 'Ada', email: 'ada@example.org', occurredAt } };
const validated: UserEvent = { type: 'UserValidated', data: { userId, occurredAt } };
const deactivated: UserEvent = { type: 'UserDeactivated', data: { userId, occurredAt } };

void t.test('RegisterUser', async (t) => {
  spec(t)
    .given([])
    .when({ type: 'RegisterUser', data: { userId, name: '  Ada ', email: ' Ada@Example.ORG ', now } })
    .then([registered]);
  spec(t)
    .given([registered])
    .when({ type: 'RegisterUser', data: { userId, name: 'Ada', email: 'ada@example.org', now } })
    .thenThrows({ code: 'USER_ALREADY_EXISTS' });
  spec(t)
    .given([])
    .when({ type: 'RegisterUser', data: { userId, name: '   ', email: 'ada@example.org', now } })
    .thenThrows({ code: 'VALIDATION_FAILED' });
  spec(t)
    .given([])
    .when({ type: 'RegisterUser', data: { userId, name: 'x'.repeat(256), email: 'ada@example.org', now } })
    .thenThrows({ code: 'VALIDATION_FAILED' });
  spec(t)
    .given([])
    .when({ type: 'RegisterUser', data: { userId, name: 'a\u0000b', email: 'ada@example.org', now } })
    .thenThrows({ code: 'VALIDATION_FAILED' });
  spec(t)
    .given([])
    .when({ type: 'RegisterUser', data: { userId, name: 'Ada', email: 'not-an-email', now } })
    .thenThrows({ code: 'VALIDATION_FAILED' });
  // 255 characters counted as code points, not UTF-16 units.
  const longName = '😀'.repeat(255);
  spec(t)
    .given([])
    .when({ type: 'RegisterUser', data: { userId, name: longName, email: 'ada@example.org', now } })
    .then([{ type: 'UserRegistered', data: { userId, name: longName, email: 'ada@example.org', occurredAt } }]);
});

void t.test('RenameUser', async (t) => {
  spec(t)
    .given([registered])
    .when({ type: 'RenameUser', data: { userId, name: ' Ada Lovelace ', now } })
    .then([{ type: 'UserRenamed', data: { userId, name: 'Ada Lovelace', occurredAt } }]);
  spec(t).given([registered]).when({ type: 'RenameUser', data: { userId, name: ' Ada', now } }).then([]);
  spec(t)
    .given([])
    .when({ type: 'RenameUser', data: { userId, name: 'Ada', now } })
    .thenThrows({ code: 'USER_NOT_FOUND' });
  spec(t)
    .given([registered, deactivated])
    .when({ type: 'RenameUser', data: { userId, name: 'Other', now } })
    .thenThrows({ code: 'USER_DEACTIVATED' });
  spec(t)
    .given([registered])
    .when({ type: 'RenameUser', data: { userId, name: '', now } })
    .thenThrows({ code: 'VALIDATION_FAILED' });
});

void t.test('ChangeEmail', async (t) => {
  spec(t)
    .given([registered])
    .when({ type: 'ChangeEmail', data: { userId, email: 'Ada@Lovelace.dev', now } })
    .then([
      {
        type: 'UserEmailChanged',
        data: { userId, email: 'ada@lovelace.dev', previousEmail: 'ada@example.org', occurredAt },
      },
    ]);
  spec(t).given([registered]).when({ type: 'ChangeEmail', data: { userId, email: 'ADA@example.org', now } }).then([]);
  spec(t)
    .given([])
    .when({ type: 'ChangeEmail', data: { userId, email: 'a@b.org', now } })
    .thenThrows({ code: 'USER_NOT_FOUND' });
  spec(t)
    .given([registered, deactivated])
    .when({ type: 'ChangeEmail', data: { userId, email: 'a@b.org', now } })
    .thenThrows({ code: 'USER_DEACTIVATED' });
  spec(t)
    .given([registered])
    .when({ type: 'ChangeEmail', data: { userId, email: 'a@@b', now } })
    .thenThrows({ code: 'VALIDATION_FAILED' });
});

void t.test('ValidateUser', async (t) => {
  spec(t).given([registered]).when({ type: 'ValidateUser', data: { userId, now } }).then([validated]);
  spec(t).given([registered, validated]).when({ type: 'ValidateUser', data: { userId, now } }).then([]);
  spec(t).given([]).when({ type: 'ValidateUser', data: { userId, now } }).thenThrows({ code: 'USER_NOT_FOUND' });
  spec(t)
    .given([registered, deactivated])
    .when({ type: 'ValidateUser', data: { userId, now } })
    .thenThrows({ code: 'USER_DEACTIVATED' });
});

void t.test('DeactivateUser', async (t) => {
  spec(t).given([registered]).when({ type: 'DeactivateUser', data: { userId, now } }).then([deactivated]);
  spec(t).given([registered, validated]).when({ type: 'DeactivateUser', data: { userId, now } }).then([deactivated]);
  spec(t).given([registered, deactivated]).when({ type: 'DeactivateUser', data: { userId, now } }).then([]);
  spec(t).given([]).when({ type: 'DeactivateUser', data: { userId, now } }).thenThrows({ code: 'USER_NOT_FOUND' });
});

void t.test('ForgetUser: decided on the stream as stored, not on the state its events fold to', async (t) => {
  const forgotten: UserEvent = { type: 'UserForgotten', data: { userId, occurredAt } };
  const forget = (stored: { exists: boolean; forgetRecorded: boolean }): UserCommand => ({ type: 'ForgetUser', data: { userId, now, stored } });
  spec(t).given([registered]).when(forget({ exists: true, forgetRecorded: false })).then([forgotten]);
  spec(t).given([registered, validated, deactivated]).when(forget({ exists: true, forgetRecorded: false })).then([forgotten]);
  // A retry after a forget that was appended: nothing more to append (the caller finishes the job).
  spec(t).given([registered, forgotten]).when(forget({ exists: true, forgetRecorded: true })).then([]);
  // The user's keys are missing: the registration reads as UserForgotten, yet no forget was ever stored.
  spec(t).given([forgotten]).when(forget({ exists: true, forgetRecorded: false })).then([forgotten]);
  // A stream whose events do not parse folds to nothing; it exists all the same.
  spec(t).given([]).when(forget({ exists: true, forgetRecorded: false })).then([forgotten]);
  spec(t).given([]).when(forget({ exists: false, forgetRecorded: false })).thenThrows({ code: 'USER_NOT_FOUND' });
  // Any other change to a user whose keys are missing meets a forgotten user: what it would change is gone.
  spec(t).given([forgotten]).when({ type: 'RenameUser', data: { userId, name: 'Ada', now } }).thenThrows({ code: 'USER_FORGOTTEN' });
  spec(t).given([forgotten]).when({ type: 'DeactivateUser', data: { userId, now } }).thenThrows({ code: 'USER_FORGOTTEN' });
});

void t.test('evolve folds a history into the current state', async (t) => {
  const state = [registered, validated, deactivated].reduce(evolve, initialState());
  t.same(state, { exists: true, userId, name: 'Ada', email: 'ada@example.org', status: 'deactivated', validated: true });
});
