import t from 'tap';
import { classify, toUserEvent, userIdOf } from '../../projector/classify.js';
import type { ProjectedEvent } from '../../shared/event-feed/port.js';
import { userStreamId } from '../../shared/user-events.js';

/**
 * The projector's input boundary, which the tests' "fold of the log" (`expectedRows`) shares with
 * the projector: what it takes for a user event, what it leaves to other projections, what it parks.
 */
const userId = '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11';
const otherUser = '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c22';
const occurredAt = '2026-01-05T09:30:00.000Z';
const event = (over: Partial<ProjectedEvent>): ProjectedEvent => ({
  streamId: userStreamId(userId),
  revision: 0,
  type: 'UserRegistered',
  data: { userId, name: 'Ada', email: 'ada@example.org', occurredAt },
  ...over,
});

void t.test('a user event of its own stream is taken, typed, with its user and revision', async (t) => {
  const taken = classify(event({ revision: 3, type: 'UserRenamed', data: { userId, name: 'Ada L.', occurredAt } }));
  t.match(taken, { kind: 'event', streamId: userStreamId(userId), revision: 3, userId, event: { type: 'UserRenamed', data: { userId, name: 'Ada L.' } } });
  t.equal(userIdOf(taken!), userId);
  t.same(toUserEvent(event({})), { type: 'UserRegistered', data: { userId, name: 'Ada', email: 'ada@example.org', occurredAt } });
});

void t.test('events of other streams are not this projection\'s: left alone, not parked', async (t) => {
  for (const streamId of ['email-3f2a', 'relay-users.events.v1', 'reservations-secret', `users-${userId}`, `User-${userId}`]) {
    t.equal(classify(event({ streamId })), undefined, streamId);
    t.equal(toUserEvent(event({ streamId })), undefined, `${streamId}: no user event, no error`);
  }
});

void t.test('what cannot be applied is poison, with the reason, kept for the quarantine', async (t) => {
  const cases: Array<[string, Partial<ProjectedEvent>, RegExp]> = [
    ['an unknown type', { type: 'UserPromoted' }, /unknown event type "UserPromoted"/],
    ['a payload that breaks its schema', { data: { userId, name: 42, email: 'ada@example.org', occurredAt } }, /UserRegistered does not match its schema: .*name/],
    ['another user named in the payload', { data: { userId: otherUser, name: 'Ada', email: 'ada@example.org', occurredAt } }, new RegExp(`names user ${otherUser}, not the stream's user ${userId}`)],
    ['a message the feed could not read', { problem: 'not a v1 envelope', revision: -1 }, /not a v1 envelope/],
  ];
  for (const [what, over, reason] of cases) {
    const parked = classify(event(over));
    t.match(parked, { kind: 'poison', streamId: userStreamId(userId), error: reason }, what);
    t.equal(userIdOf(parked!), userId, `${what}: held under its stream's user`);
    t.throws(() => toUserEvent(event(over)), { code: 'EVENT_INVALID' }, `${what}: a fold that must not meet one is told`);
  }
});
