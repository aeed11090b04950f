import { createHash } from 'node:crypto';
import t, { type Test } from 'tap';
import { buildCommandApp } from '../../command-side/app.js';
import { legacyEmailStreamId, reservationsMarkerStream } from '../../command-side/email-reservations.js';
import { userCommands } from '../../command-side/user-commands.js';
import type { EventStore } from '../../shared/event-store/port.js';
import { inMemoryKeyStore } from '../../shared/personal-data/in-memory-key-store.js';
import { createVault } from '../../shared/personal-data/vault.js';
import { StoreUnavailableError } from '../../shared/errors.js';
import { eventStoreKinds } from '../support/event-stores.js';

/**
 * The write side of erasure and access: sealed personal fields, the export,
 * forgetting (idempotent, concurrent, releasing the address, destroying the
 * keys) and data written before sealing existed.
 */
async function setUp(t: Test, store: EventStore, options: { destroyFailsOnce?: boolean; keyCacheMs?: number; emailGraceMs?: number } = {}) {
  const keyStore = inMemoryKeyStore();
  if (options.destroyFailsOnce) {
    const destroy = keyStore.destroy.bind(keyStore);
    let failed = false;
    keyStore.destroy = (ids) => {
      if (failed) return destroy(ids);
      failed = true;
      return Promise.reject(new StoreUnavailableError('the key store went away'));
    };
  }
  const vault = createVault({
    keyStore,
    emailHashSecret: Buffer.from('a secret of the tests, long enough to use'),
    ...(options.keyCacheMs === undefined ? {} : { cacheMs: options.keyCacheMs }),
  });
  const commands = userCommands({ store, vault, emailGraceMs: options.emailGraceMs ?? 60_000 });
  const app = buildCommandApp({ commands, store });
  t.teardown(() => app.close());
  const register = (name: string, email: string) => app.inject({ method: 'POST', url: '/users', payload: { name, email } });
  const forget = (id: string, headers: Record<string, string> = {}) => app.inject({ method: 'DELETE', url: `/users/${id}/personal-data`, headers });
  const exportOf = (id: string) => app.inject({ url: `/users/${id}/personal-data` });
  const rawLog = async () => JSON.stringify((await store.readAll({ maxCount: 1_000_000 })).map((e) => [e.streamId, e.data]));
  return { keyStore, vault, commands, app, register, forget, exportOf, rawLog };
}

for (const kind of eventStoreKinds.filter((k) => !k.name.includes('worker'))) {
  void t.test(kind.name, async (t) => {
    void t.test('personal fields are stored sealed; the export gives back exactly what was written', async (t) => {
      const store = await kind.open(t);
      const { app, register, exportOf, rawLog, vault } = await setUp(t, store);
      const { id } = (await register('Grace Hopper', 'grace@navy.example')).json<{ id: string }>();
      t.equal((await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'Rear Admiral Hopper' } })).statusCode, 200);
      t.equal((await app.inject({ method: 'PUT', url: `/users/${id}/email`, payload: { email: 'amazing.grace@navy.example' } })).statusCode, 200);
      const log = await rawLog();
      for (const secret of ['Grace Hopper', 'Rear Admiral Hopper', 'grace@navy.example', 'amazing.grace@navy.example']) {
        t.notOk(log.includes(secret), `the log does not hold "${secret}" in clear`);
      }
      t.notOk(log.includes(createHash('sha256').update('grace@navy.example').digest('hex')), 'no reservation is named by a plain hash of the address');
      t.ok(log.includes(vault.emailHash('grace@navy.example')), 'reservations are named by the keyed hash');
      const [marker] = await store.readStream(reservationsMarkerStream);
      t.same(marker?.data, { legacyBefore: false, occurredAt: (marker?.data as { occurredAt: string }).occurredAt }, 'a store empty at the first claim can hold no older reservations: none are looked up');

      const exported = await exportOf(id);
      t.equal(exported.statusCode, 200);
      const body = exported.json<{ user: object; events: { type: string; data: Record<string, unknown> }[]; revision: number }>();
      t.same(body.user, { name: 'Rear Admiral Hopper', email: 'amazing.grace@navy.example', status: 'registered', validated: false });
      t.equal(body.revision, 2);
      t.same(
        body.events.map((e) => [e.type, e.data.name ?? e.data.email, e.data.previousEmail]),
        [
          ['UserRegistered', 'Grace Hopper', undefined],
          ['UserRenamed', 'Rear Admiral Hopper', undefined],
          ['UserEmailChanged', 'amazing.grace@navy.example', 'grace@navy.example'],
        ],
      );
      t.equal((await exportOf('0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001')).statusCode, 404, 'no such user: 404');
    });

    void t.test('forgetting: 200, idempotent, keys destroyed, every later change 410, the address free again', async (t) => {
      const store = await kind.open(t);
      const { app, register, forget, exportOf, keyStore, vault } = await setUp(t, store);
      const { id } = (await register('Alan Turing', 'alan@bletchley.example')).json<{ id: string }>();
      const keyIds = vault.keyIdsOf(await store.readStream(`user-${id}`));
      t.equal(keyIds.length, 1, 'one key per user');
      t.equal((await keyStore.get(keyIds)).size, 1, 'the key exists before forgetting');

      const first = await forget(id);
      t.equal(first.statusCode, 200);
      t.match(first.json(), { id, revision: 1, consistencyToken: `user-${id}@1` });
      t.equal((await keyStore.get(keyIds)).size, 0, 'the key is destroyed');
      const again = await forget(id);
      t.equal(again.statusCode, 200, 'forgetting again is fine');
      t.equal(again.json<{ revision: number }>().revision, 1, 'and writes nothing');

      t.equal((await exportOf(id)).statusCode, 410);
      t.equal((await exportOf(id)).json<{ code: string }>().code, 'USER_FORGOTTEN');
      for (const [method, url, payload] of [
        ['PUT', `/users/${id}/name`, { name: 'X' }],
        ['PUT', `/users/${id}/email`, { email: 'x@example.org' }],
        ['POST', `/users/${id}/validation`, undefined],
        ['DELETE', `/users/${id}`, undefined],
      ] as const) {
        const response = await app.inject({ method, url, ...(payload ? { payload } : {}) });
        t.equal(response.statusCode, 410, `${method} ${url}: 410`);
      }
      const opened = await vault.open(await store.readStream(`user-${id}`));
      t.same(opened.map((e) => e.type), ['UserForgotten', 'UserForgotten'], 'the registration now reads as forgotten');
      t.equal((await register('Someone Else', 'alan@bletchley.example')).statusCode, 201, 'the address can be registered again');
      t.equal((await forget('0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0001')).statusCode, 404, 'no such user: 404');
      t.equal((await app.inject({ method: 'DELETE', url: `/users/not-a-uuid/personal-data` })).statusCode, 400);
    });

    void t.test('forgetting during concurrent writes to the same user, twice at once', async (t) => {
      const store = await kind.open(t);
      const { app, register, forget, keyStore, vault } = await setUp(t, store);
      for (let round = 0; round < 5; round++) {
        const { id } = (await register(`Concurrent ${round}`, `concurrent${round}@example.org`)).json<{ id: string }>();
        const writes = Array.from({ length: 6 }, (_, i) =>
          i % 2 === 0
            ? app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: `Name ${round}-${i}` } })
            : app.inject({ method: 'PUT', url: `/users/${id}/email`, payload: { email: `c${round}-${i}@example.org` } }),
        );
        const [a, b, ...rest] = await Promise.all([forget(id), forget(id), ...writes]);
        t.equal(a.statusCode, 200);
        t.equal(b.statusCode, 200);
        for (const r of rest) t.ok([200, 409, 410].includes(r.statusCode), `a concurrent write answers ${r.statusCode}`);
        const stored = await store.readStream(`user-${id}`);
        const opened = await vault.open(stored);
        t.equal(stored.filter((e) => e.type === 'UserForgotten').length, 1, 'UserForgotten was appended exactly once');
        t.equal(stored.at(-1)!.type, 'UserForgotten', 'and nothing after it');
        t.ok(opened.every((e) => e.type === 'UserForgotten'), 'nothing of the person opens any more');
        t.equal((await keyStore.get(vault.keyIdsOf(stored))).size, 0, 'no key of theirs is left');
      }
    });

    void t.test('a forget cut short after UserForgotten is finished by a retry, or by the log\'s readers', async (t) => {
      const store = await kind.open(t);
      const { register, forget, keyStore, vault } = await setUp(t, store, { destroyFailsOnce: true });
      const { id } = (await register('Ada Byron', 'ada.byron@example.org')).json<{ id: string }>();
      const keyIds = vault.keyIdsOf(await store.readStream(`user-${id}`));
      const cut = await forget(id);
      t.equal(cut.statusCode, 503, 'the key store failing mid-way is an outage: retry');
      t.equal((await keyStore.get(keyIds)).size, 1, 'the key is still there');
      const [stored] = (await store.readStream(`user-${id}`)).slice(-1);
      t.equal(stored?.type, 'UserForgotten', 'but UserForgotten is in the log');
      t.same((stored?.data as { keyIds?: string[] }).keyIds, keyIds, 'naming the keys to destroy');

      // What the relay or the embedded projector does when it reads that event.
      await vault.open(await store.readAll({ maxCount: 1000 }), { finishForgets: true });
      t.equal((await keyStore.get(keyIds)).size, 0, 'a reader of the log destroyed the key');
      const opened = await vault.open(await store.readAll({ maxCount: 1000 }));
      t.same(opened.filter((e) => e.streamId === `user-${id}`).map((e) => [e.type, Object.keys(e.data as object).sort()]), [
        ['UserForgotten', ['occurredAt', 'userId']],
        ['UserForgotten', ['occurredAt', 'userId']],
      ], 'readers see no key ids, and no personal data');
      t.equal((await forget(id)).statusCode, 200, 'a retry answers 200');
    });

    void t.test('a user whose keys are missing is still forgotten: UserForgotten is stored, naming the keys', async (t) => {
      const store = await kind.open(t);
      // Every key read goes to the key store, as in a process started after the keys went missing.
      // Claims lapse at once unless their holder has the address.
      const { register, forget, keyStore, vault, app } = await setUp(t, store, { keyCacheMs: 0, emailGraceMs: 0 });
      const { id } = (await register('Kathleen Booth', 'kathleen@birkbeck.example')).json<{ id: string }>();
      t.equal((await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'Kathleen Britten' } })).statusCode, 200);
      const keyIds = vault.keyIdsOf(await store.readStream(`user-${id}`));
      // A key store restored from a backup older than the user: its key is not there.
      await keyStore.destroy(keyIds);
      t.same((await vault.open(await store.readStream(`user-${id}`))).map((e) => e.type), ['UserForgotten', 'UserForgotten'], 'the stream reads as forgotten');

      const first = await forget(id);
      t.equal(first.statusCode, 200);
      t.match(first.json(), { id, revision: 2, consistencyToken: `user-${id}@2` }, 'a forget was appended: the revision went up');
      const stored = await store.readStream(`user-${id}`);
      t.same(stored.map((e) => e.type), ['UserRegistered', 'UserRenamed', 'UserForgotten'], 'the stream ends with a stored UserForgotten');
      t.same((stored.at(-1)!.data as { keyIds?: string[] }).keyIds, keyIds, 'naming the keys the stream was sealed with');

      const again = await forget(id);
      t.equal(again.statusCode, 200, 'forgetting again is fine');
      t.equal(again.json<{ revision: number }>().revision, 2, 'and writes nothing');
      t.equal((await store.readStream(`user-${id}`)).length, 3);
      t.equal((await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'X' } })).statusCode, 410, 'other changes meet a forgotten user');
      // Nobody can open the address to release it; a forgotten holder has none, so its claim lapses and is taken over.
      t.equal((await register('Someone Else', 'kathleen@birkbeck.example')).statusCode, 201, 'the address can be registered again');
    });

    void t.test('a forget made through another key store holds once the right one is back, and the log\'s readers destroy the keys', async (t) => {
      const store = await kind.open(t);
      const right = await setUp(t, store);
      const { id } = (await right.register('Mary Kenneth Keller', 'mkk@wisconsin.example')).json<{ id: string }>();
      const keyIds = right.vault.keyIdsOf(await store.readStream(`user-${id}`));
      // The write API started against an empty key store: it finds no key of the user.
      const wrong = await setUp(t, store);
      t.equal((await wrong.forget(id)).statusCode, 200);
      t.equal((await store.readStream(`user-${id}`)).at(-1)?.type, 'UserForgotten', 'UserForgotten is stored');
      t.equal((await right.keyStore.get(keyIds)).size, 1, 'the key is still in the right key store');

      // Back on the right key store: the user stays forgotten, and a reader of the log destroys the key the event names.
      t.equal((await right.exportOf(id)).statusCode, 410, 'the user stays forgotten');
      await right.vault.open(await store.readAll({ maxCount: 1000 }), { finishForgets: true });
      t.equal((await right.keyStore.get(keyIds)).size, 0, 'the key is destroyed');
    });

    const relayLease = { streamId: 'relay-users', type: 'RelayCheckpointed', data: { owner: 'relay-a' } };
    const olderUserId = '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f00bb';
    const olderUser = {
      streamId: `user-${olderUserId}`,
      type: 'UserRegistered',
      data: { userId: olderUserId, name: 'Old Timer', email: 'older@example.org', occurredAt: '2026-01-01T00:00:00.000Z' },
    };
    for (const { name, before, legacyBefore, why } of [
      // The relay starts beside the command side and may write its lease first.
      { name: 'a fresh store whose log starts with other streams (a relay\'s lease) holds no older reservations', before: [relayLease], legacyBefore: false, why: 'no user or reservation event came before: none are looked up' },
      { name: 'a store that already holds users may hold older reservations', before: [relayLease, olderUser], legacyBefore: true, why: 'a user event came before: legacy reservations are looked up' },
    ]) {
      void t.test(name, async (t) => {
        const store = await kind.open(t);
        for (const { streamId, type, data } of before) await store.appendToStream(streamId, [{ type, data }], { expectedRevision: 'no_stream' });
        const { register } = await setUp(t, store);
        t.equal((await register('First Comer', 'first@example.org')).statusCode, 201);
        const [marker] = await store.readStream(reservationsMarkerStream);
        t.equal((marker?.data as { legacyBefore?: boolean }).legacyBefore, legacyBefore, why);
      });
    }

    void t.test('data written before sealing: read, honoured, sealed from then on, forgettable', async (t) => {
      const store = await kind.open(t);
      const { app, register, forget, exportOf } = await setUp(t, store);
      const id = '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f00aa';
      const occurredAt = '2026-01-01T00:00:00.000Z';
      // What the service wrote before: clear payloads, and a reservation named by a plain SHA-256 with the address inside.
      await store.appendToStream(`user-${id}`, [{ type: 'UserRegistered', data: { userId: id, name: 'Old Timer', email: 'old@example.org', occurredAt } }], { expectedRevision: 'no_stream' });
      await store.appendToStream(legacyEmailStreamId('old@example.org'), [{ type: 'EmailReserved', data: { email: 'old@example.org', userId: id, occurredAt } }], { expectedRevision: 'no_stream' });

      t.same((await exportOf(id)).json<{ user: object }>().user, { name: 'Old Timer', email: 'old@example.org', status: 'registered', validated: false });
      t.equal((await register('Newcomer', 'old@example.org')).statusCode, 409, 'the old reservation still holds the address');
      t.equal((await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'Old Hand' } })).statusCode, 200);
      const [, renamed] = await store.readStream(`user-${id}`);
      t.notOk(JSON.stringify(renamed?.data).includes('Old Hand'), 'a new event of an old user is sealed');
      t.equal((await exportOf(id)).json<{ user: { name: string } }>().user.name, 'Old Hand');

      t.equal((await forget(id)).statusCode, 200);
      t.equal((await register('Newcomer', 'old@example.org')).statusCode, 201, 'forgetting released the old reservation too');
      t.equal((await exportOf(id)).statusCode, 410);
    });
  });
}
