import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { ProjectedEvent } from '../../shared/event-feed/port.js';
import { checkpointTable } from '../../shared/read-model/checkpoints.js';
import { deadLetterTable } from '../../shared/read-model/dead-letters.js';
import { userDataTable } from '../../shared/read-model/user-row.js';

/**
 * A random log of user events as a feed delivers them, for the suites that apply
 * the same log two ways and compare the read DBs: registrations, renames, email
 * changes, validations, deactivations, forgets, poison events (a payload its
 * schema refuses) and redeliveries of earlier events.
 */
export function randomLog(random: () => number, users: number): ProjectedEvent[] {
  const at = (n: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString();
  const streams = Array.from({ length: users }, () => ({ userId: randomUUID(), revision: 0, forgotten: false }));
  const log: ProjectedEvent[] = [];
  for (let n = 0; n < users * 6; n++) {
    const user = streams[Math.floor(random() * users)]!;
    if (user.forgotten) continue;
    const { userId } = user;
    const base = { userId, occurredAt: at(n) };
    const pick = random();
    const [type, data]: [string, unknown] =
      user.revision === 0
        ? ['UserRegistered', { ...base, name: `User ${n}`, email: `u${n}@example.org` }]
        : pick < 0.3
          ? ['UserRenamed', { ...base, name: `Renamed ${n}` }]
          : pick < 0.55
            ? ['UserEmailChanged', { ...base, email: `c${n}@example.org`, previousEmail: `u${n}@example.org` }]
            : pick < 0.7
              ? ['UserValidated', base]
              : pick < 0.8
                ? ['UserDeactivated', base]
                : pick < 0.85
                  ? ['UserForgotten', base]
                  : pick < 0.88
                    ? ['UserRenamed', { ...base, name: 42 }] // poison: a payload its schema refuses
                    : ['UserRenamed', { ...base, name: `Again ${n}` }];
    if (type === 'UserForgotten') user.forgotten = true;
    log.push({ streamId: `user-${userId}`, revision: user.revision++, type, data, position: BigInt(log.length + 1) });
    // Now and then an event comes again (a redelivery).
    if (random() < 0.1) log.push({ ...log[Math.floor(random() * log.length)]! });
  }
  return log;
}

/** Everything a batch may change in a read DB: rows, checkpoints, quarantine. */
export const everything = async (db: Knex) => ({
  rows: await db(userDataTable).select('*').orderBy('ID_USER_DATA'),
  checkpoints: await db(checkpointTable).select('PROJECTION', 'SOURCE', 'POSITION').orderBy('SOURCE'),
  parked: await db(deadLetterTable).select('STREAM_ID', 'REVISION', 'EVENT_TYPE', 'DATA', 'STATE', 'ERROR', 'ATTEMPTS', 'SOURCE', 'POSITION').orderBy(['STREAM_ID', 'REVISION']),
});
