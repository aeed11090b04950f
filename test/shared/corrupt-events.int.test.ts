import { testEmailStreamId, testKeyStore, testVault } from '../support/vault.js';
import { pino } from 'pino';
import t from 'tap';
import { buildCommandApp } from '../../command-side/app.js';
import { emailReservations } from '../../command-side/email-reservations.js';
import { eventRelay } from '../../command-side/relay/relay.js';
import { relayLease, relayStreamId } from '../../command-side/relay/relay-lease.js';
import { applyBatch } from '../../projector/apply-batch.js';
import { userDataRebuild } from '../../projector/rebuild.js';
import { CorruptEventError } from '../../shared/errors.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { listParked } from '../../shared/read-model/dead-letters.js';
import { projectionName } from '../../shared/read-model/user-row.js';
import { parseUserEvent, userStreamId } from '../../shared/user-events.js';
import { readDbsUnderTest } from '../support/read-dbs.js';
import { commandsOver } from '../support/seed.js';

/**
 * One boundary where stored events become typed ones (`parseUserEvent`), so a
 * corrupt event fails the same way wherever it is read: the same EVENT_INVALID
 * with the same words on the command side (a 500), in the relay (reported, and
 * published as stored so consumers park it), in the live projector and in the
 * rebuild (parked, its reason in the quarantine).
 */
const silent = pino({ level: 'silent' });

async function storeWithCorruptEvent() {
  const store = inMemoryEventStore();
  const { id } = await commandsOver(store).register({ name: 'Ada', email: 'ada@example.org' });
  // Written by a buggy or older writer: a name that is not a string.
  await store.appendToStream(userStreamId(id), [{ type: 'UserRenamed', data: { userId: id, name: 42, occurredAt: new Date().toISOString() } }], {
    expectedRevision: 0,
  });
  const [, corrupt] = await store.readStream(userStreamId(id));
  let expected: CorruptEventError | undefined;
  try {
    parseUserEvent(corrupt!);
  } catch (error) {
    expected = error as CorruptEventError;
  }
  return { store, id, expected: expected! };
}

void t.test('the boundary: what it accepts, and why it refuses', async (t) => {
  const { expected, id } = await storeWithCorruptEvent();
  t.type(expected, CorruptEventError);
  t.match(expected, { code: 'EVENT_INVALID', streamId: userStreamId(id), revision: 1, reason: /^UserRenamed does not match its schema: name must be string/ });
  t.equal(expected.message, `${userStreamId(id)}@1: ${expected.reason}`);
  const at = new Date().toISOString();
  const stored = (type: string, data: unknown) => ({ streamId: userStreamId(id), revision: 0, type, data });
  t.same(parseUserEvent(stored('UserValidated', { userId: id, occurredAt: at })), { type: 'UserValidated', data: { userId: id, occurredAt: at } });
  t.throws(() => parseUserEvent(stored('UserExploded', {})), { name: 'CorruptEventError', message: /@0: unknown event type "UserExploded"$/ });
  t.throws(() => parseUserEvent(stored('UserValidated', { userId: '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11', occurredAt: at })), {
    name: 'CorruptEventError',
    message: /names user 0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11, not the stream's user/,
  });
});

void t.test('the command side: the command fails with EVENT_INVALID, a 500 over HTTP', async (t) => {
  const { store, id, expected } = await storeWithCorruptEvent();
  await t.rejects(commandsOver(store).rename(id, 'Ada L.'), { name: 'CorruptEventError', code: 'EVENT_INVALID', message: expected.message });
  const app = buildCommandApp({ commands: commandsOver(store), store });
  t.teardown(() => app.close());
  const response = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'Ada L.' } });
  t.equal(response.statusCode, 500);
  t.match(response.json(), { code: 'EVENT_INVALID', message: expected.message });
  t.equal((await store.readStream(userStreamId(id))).length, 2, 'nothing appended');
});

/** A sealed text with one character changed in its middle: it no longer authenticates. */
const tampered = (sealed: string) => {
  const at = Math.floor(sealed.length / 2);
  return `${sealed.slice(0, at)}${sealed[at] === 'A' ? 'B' : 'A'}${sealed.slice(at + 1)}`;
};

/** A copy of the log of `store` in a new store, the sealed text of `streamId`@`revision` damaged on the way. */
async function copyDamaging(store: EventStore, streamId: string, revision: number): Promise<EventStore> {
  const copy = inMemoryEventStore();
  for (const e of await store.readAll({ maxCount: 1000 })) {
    const damaged = e.streamId === streamId && e.revision === revision;
    const data = damaged ? { ...(e.data as object), sealed: tampered((e.data as { sealed: string }).sealed) } : e.data;
    await copy.appendToStream(e.streamId, [{ type: e.type, data, metadata: e.metadata }], { expectedRevision: 'any' });
  }
  return copy;
}

/** A user, renamed once, whose sealed event at `revision` no longer authenticates. */
async function storeWithDamagedSealedEvent(revision: number) {
  const store = inMemoryEventStore();
  const commands = commandsOver(store);
  const { id } = await commands.register({ name: 'Ada', email: 'ada@example.org' });
  await commands.rename(id, 'Ada L.');
  return { store: await copyDamaging(store, userStreamId(id), revision), id };
}

void t.test('forgetting needs nothing a corrupt event held: UserForgotten appended at the stream\'s revision, every key destroyed', async (t) => {
  // Each stream holds two events; the damaged one is either.
  const cases: [string, () => Promise<{ store: EventStore; id: string }>, { addressReleased: boolean }][] = [
    ['a payload that fails its schema', storeWithCorruptEvent, { addressReleased: true }],
    ['a sealed payload that no longer authenticates', () => storeWithDamagedSealedEvent(1), { addressReleased: true }],
    ['a registration that no longer authenticates', () => storeWithDamagedSealedEvent(0), { addressReleased: false }],
  ];
  for (const [what, make, { addressReleased }] of cases) {
    await t.test(what, async (t) => {
      const { store, id } = await make();
      const commands = commandsOver(store);
      const keyIds = testVault.keyIdsOf(await store.readStream(userStreamId(id)));
      t.equal(keyIds.length, 1);
      await t.rejects(commands.rename(id, 'Ada L.'), { code: 'EVENT_INVALID' }, 'other commands still refuse the stream');
      await t.rejects(commands.forget(id, { expectedRevision: 0 }), { name: 'ConcurrencyError' }, 'a stale If-Match is a conflict');

      const result = await commands.forget(id);
      t.same(result, { id, revision: 2 }, 'appended at the stream\'s real revision');
      const stored = await store.readStream(userStreamId(id));
      t.equal(stored.length, 3);
      t.equal(stored.at(-1)?.type, 'UserForgotten', 'UserForgotten is stored');
      t.same((stored.at(-1)?.data as { keyIds?: string[] }).keyIds, keyIds, 'naming the keys');
      t.equal((await testKeyStore.get(keyIds)).size, 0, 'every key of the stream is destroyed');
      t.same(await commands.forget(id), { id, revision: 2 }, 'forgetting again writes nothing');
      // Released when the events that still open say which address it was; else its claim lapses as a forgotten holder's.
      const other = commands.register({ name: 'Another Ada', email: 'ada@example.org' });
      if (addressReleased) await t.resolves(other, 'the address is free again at once');
      else await t.rejects(other, { code: 'EMAIL_TAKEN' }, 'the address nobody can read stays claimed until the grace period ends');
    });
  }
});

void t.test('the relay: reports the same error and publishes the event as stored, so consumers park it', async (t) => {
  const { store, id, expected } = await storeWithCorruptEvent();
  const logged: { err?: { message?: string; code?: string }; msg: string }[] = [];
  const logger = pino({ level: 'error' }, { write: (line: string) => void logged.push(JSON.parse(line) as (typeof logged)[number]) });
  const published: string[] = [];
  const relay = eventRelay({
    store,
    vault: testVault,
    publisher: { publish: (messages) => Promise.resolve(void published.push(...messages.map((m) => m.value))), close: () => Promise.resolve() },
    topic: 'users.events.v1',
    logger,
    leaseMs: 60_000,
    batchSize: 10,
  });
  void relay.start();
  t.teardown(() => relay.stop());
  const userEvents = (await store.readAll({ maxCount: 100 })).filter((e) => e.streamId === userStreamId(id));
  for (let i = 0; i < 200 && relay.status().position !== userEvents.at(-1)!.position.toString(); i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(published.length, 2, 'both events published, in order');
  t.match(JSON.parse(published[1]!), { stream: userStreamId(id), revision: 1, data: { name: 42 } });
  t.match(logged, [{ err: { code: 'EVENT_INVALID', message: expected.message } }]);
});

void t.test('the projector and the rebuild: the event is parked with the same reason', async (t) => {
  const { store, expected } = await storeWithCorruptEvent();
  const sqlite = readDbsUnderTest.find((d) => d.name === 'sqlite')!;
  const live = (await sqlite.open(t)).db;
  await applyBatch(live, await testVault.open(await store.readAll({ maxCount: 100 })), new Map());
  const parkedLive = await listParked(live, projectionName);
  t.match(parkedLive, [{ STREAM_ID: expected.streamId, REVISION: 1, STATE: 'failed', ERROR: expected.reason }]);

  const rebuilt = (await sqlite.open(t)).db;
  await userDataRebuild({ vault: testVault, store, db: rebuilt, logger: silent }).run();
  const parkedRebuild = await listParked(rebuilt, projectionName);
  t.match(parkedRebuild, [{ STREAM_ID: expected.streamId, REVISION: 1, STATE: 'failed', ERROR: expected.reason }]);
});

void t.test('reservation and lease payloads are checked too', async (t) => {
  const store = inMemoryEventStore();
  const stream = testEmailStreamId('bad@example.org');
  await store.appendToStream(stream, [{ type: 'EmailReserved', data: { email: 'bad@example.org' } }], { expectedRevision: 'no_stream' });
  const emails = emailReservations({ store, emailHash: testVault.emailHash, graceMs: 60_000, currentEmailOf: () => Promise.resolve(undefined) });
  await t.rejects(emails.reserve('bad@example.org', 'u-1', new Date(), {}), {
    name: 'CorruptEventError',
    message: `${stream}@0: EmailReserved does not match its schema: userId must have required property 'userId'; occurredAt must have required property 'occurredAt'`,
  });
  await store.appendToStream(relayStreamId('t'), [{ type: 'RelayCheckpointed', data: { owner: 'a', leaseUntil: 'soon' } }], { expectedRevision: 'no_stream' });
  await t.rejects(relayLease({ store, streamId: relayStreamId('t'), owner: 'b', leaseMs: 1000 }).tryAcquire(), {
    name: 'CorruptEventError',
    message: /relay-t@0: RelayCheckpointed does not match its schema: leaseUntil must match format "date-time"/,
  });
});
