import t from 'tap';
import { userRowFrom } from '../../projector/user-row.js';
import type { UserRow } from '../../shared/read-model/user-row.js';
import type { UserEvent } from '../../shared/user-events.js';

const userId = '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11';
const at = (s: number) => `2026-01-02T03:04:0${s}.000Z`;
const registered: UserEvent = { type: 'UserRegistered', data: { userId, name: 'Ada', email: 'ada@example.org', occurredAt: at(0) } };

/** Given events (with their revisions), then the row. */
const project = (events: Array<[UserEvent, number]>) =>
  events.reduce<UserRow | undefined>((row, [event, revision]) => userRowFrom(row, event, revision), undefined);

void t.test('UserRegistered creates the row at its revision', async (t) => {
  t.same(project([[registered, 0]]), {
    ID_USER_DATA: userId,
    NAME: 'Ada',
    EMAIL: 'ada@example.org',
    STATUS: 'registered',
    DATE_REGISTER: '2026-01-02 03:04:00.000',
    DATE_VALIDATED: null,
    DATE_DEACTIVATED: null,
    DATE_UPDATED: '2026-01-02 03:04:00.000',
    VERSION: 0,
  });
});

void t.test('each change event updates its columns, VERSION and DATE_UPDATED', async (t) => {
  const row = project([
    [registered, 0],
    [{ type: 'UserRenamed', data: { userId, name: 'Ada L.', occurredAt: at(1) } }, 1],
    [{ type: 'UserEmailChanged', data: { userId, email: 'ada@l.dev', previousEmail: 'ada@example.org', occurredAt: at(2) } }, 2],
    [{ type: 'UserValidated', data: { userId, occurredAt: at(3) } }, 3],
  ]);
  t.match(row, { NAME: 'Ada L.', EMAIL: 'ada@l.dev', STATUS: 'validated', DATE_VALIDATED: '2026-01-02 03:04:03.000', VERSION: 3 });
  const deactivated = userRowFrom(row, { type: 'UserDeactivated', data: { userId, occurredAt: at(4) } }, 4);
  t.match(deactivated, { STATUS: 'deactivated', DATE_DEACTIVATED: '2026-01-02 03:04:04.000', DATE_UPDATED: '2026-01-02 03:04:04.000', VERSION: 4 });
});

void t.test('an event at or below the row VERSION changes nothing (duplicates, replays)', async (t) => {
  const row = project([
    [registered, 0],
    [{ type: 'UserRenamed', data: { userId, name: 'Second', occurredAt: at(1) } }, 1],
  ]);
  const replayedRename = userRowFrom(row, { type: 'UserRenamed', data: { userId, name: 'Second', occurredAt: at(1) } }, 1);
  t.equal(replayedRename, row, 'same object: nothing to write');
  t.equal(userRowFrom(row, registered, 0), row);
});

void t.test('a change without a row yields no row', async (t) => {
  t.equal(userRowFrom(undefined, { type: 'UserValidated', data: { userId, occurredAt: at(1) } }, 1), undefined);
});
