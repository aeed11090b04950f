import { testEmailStreamId, testVault } from '../support/vault.js';
import t, { type Test } from 'tap';
import { v5 as uuidv5 } from 'uuid';
import type { InjectOptions } from 'fastify';
import { buildCommandApp } from '../../command-side/app.js';
import { userCommands } from '../../command-side/user-commands.js';
import { emailReservations } from '../../command-side/email-reservations.js';
import type { AppendResult, EventStore } from '../../shared/event-store/port.js';
import { StoreUnavailableError } from '../../shared/errors.js';
import { eventStoreKinds } from '../support/event-stores.js';
import { startEsdbTestServer } from '../support/esdb-test-server.js';
import { esdbEventStore } from '../../shared/event-store/esdb-event-store.js';

/** The write API's behaviour, the same on every event store backend. */
function writeApiSuite(t: Test, openStore: (t: Test) => Promise<EventStore>) {
  async function setUp(t: Test, options: { tokens?: string[]; clock?: () => Date; store?: EventStore } = {}) {
    const store = options.store ?? (await openStore(t));
    const commands = userCommands({ store, vault: testVault, emailGraceMs: 60_000, ...(options.clock ? { clock: options.clock } : {}) });
    const app = buildCommandApp({ commands, store, writeApiTokens: options.tokens ?? [] });
    t.teardown(() => app.close());
    const logSize = async () => (await store.readAll({ maxCount: 1_000_000 })).length;
    const register = async (name: string, email: string, headers: Record<string, string> = {}) =>
      app.inject({ method: 'POST', url: '/users', payload: { name, email }, headers });
    return { store, app, logSize, register };
  }

  void t.test('POST /users registers: 201 with id, revision and a consistency token', async (t) => {
    const { app, register, store } = await setUp(t);
    const response = await register('  Ada  ', 'Ada@Example.org');
    t.equal(response.statusCode, 201);
    const body = response.json();
    t.match(body, { id: /^[0-9a-f-]{36}$/, revision: 0 });
    t.equal(body.consistencyToken, `user-${body.id}@0`);
    t.equal(response.headers.location, `/users/${body.id}`);
    const [stored] = await store.readStream(`user-${body.id}`);
    t.notOk(JSON.stringify(stored?.data).includes('Ada'), 'stored with the name sealed');
    const [event] = await testVault.open(stored ? [stored] : []);
    t.same(event?.data, { userId: body.id, name: 'Ada', email: 'ada@example.org', occurredAt: (event?.data as { occurredAt: string }).occurredAt });
    t.ok(event?.metadata.correlationId, 'events carry the request id as correlation id');
    t.equal((await app.inject({ url: '/health' })).json().status, 'ok');
  });

  void t.test('every change route answers 200 with the new revision', async (t) => {
    const { app, register } = await setUp(t);
    const { id } = (await register('Ada', 'ada@example.org')).json();
    const steps = [
      { method: 'PUT' as const, url: `/users/${id}/name`, payload: { name: 'Ada L.' } },
      { method: 'PUT' as const, url: `/users/${id}/email`, payload: { email: 'ada@lovelace.dev' } },
      { method: 'POST' as const, url: `/users/${id}/validation` },
      { method: 'DELETE' as const, url: `/users/${id}` },
    ];
    for (const [i, step] of steps.entries()) {
      const response = await app.inject(step);
      t.equal(response.statusCode, 200, `${step.method} ${step.url}`);
      t.same(response.json(), { id, revision: i + 1, consistencyToken: `user-${id}@${i + 1}` });
    }
    const again = await app.inject({ method: 'DELETE', url: `/users/${id}` });
    t.equal(again.statusCode, 200, 'deactivating twice is a no-op');
    t.equal(again.json().revision, 4);
    const renameDeactivated = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'X' } });
    t.equal(renameDeactivated.statusCode, 422);
    t.equal(renameDeactivated.json().code, 'USER_DEACTIVATED');
  });

  void t.test('unchanged name or email appends nothing', async (t) => {
    const { app, register, logSize } = await setUp(t);
    const { id } = (await register('Ada', 'ada@example.org')).json();
    const before = await logSize();
    t.equal((await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: ' Ada ' } })).json().revision, 0);
    t.equal((await app.inject({ method: 'PUT', url: `/users/${id}/email`, payload: { email: 'ADA@example.org' } })).json().revision, 0);
    t.equal(await logSize(), before);
  });

  void t.test('If-Match: a stale revision is 409 with the current revision; the right one succeeds', async (t) => {
    const { app, register, logSize } = await setUp(t);
    const { id } = (await register('Ada', 'ada@example.org')).json();
    await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'B' } });
    const before = await logSize();
    const stale = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'C' }, headers: { 'if-match': '"0"' } });
    t.equal(stale.statusCode, 409);
    t.match(stale.json(), { code: 'REVISION_CONFLICT', currentRevision: 1 });
    t.equal(await logSize(), before, 'nothing appended');
    const fresh = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'C' }, headers: { 'if-match': '"1"' } });
    t.equal(fresh.statusCode, 200);
    const malformed = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name: 'D' }, headers: { 'if-match': 'yesterday' } });
    t.equal(malformed.statusCode, 400);
  });

  void t.test('If-Match on a user that does not exist is 404, as without it, never a conflict with revision -1', async (t) => {
    const { app, logSize } = await setUp(t);
    const missing = '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0000';
    const changes = [
      { method: 'PUT' as const, url: `/users/${missing}/name`, payload: { name: 'C' } },
      { method: 'PUT' as const, url: `/users/${missing}/email`, payload: { email: 'c@example.org' } },
      { method: 'POST' as const, url: `/users/${missing}/validation` },
      { method: 'DELETE' as const, url: `/users/${missing}` },
      { method: 'DELETE' as const, url: `/users/${missing}/personal-data` },
    ];
    for (const change of changes) {
      for (const ifMatch of ['"0"', '"3"', undefined]) {
        const response = await app.inject({ ...change, headers: ifMatch === undefined ? {} : { 'if-match': ifMatch } });
        t.equal(response.statusCode, 404, `${change.method} ${change.url} If-Match ${ifMatch ?? 'none'}: ${response.body}`);
        t.equal(response.json().code, 'USER_NOT_FOUND');
      }
    }
    t.equal(await logSize(), 0, 'nothing appended');
  });

  void t.test('without If-Match, concurrent changes to one user all succeed (server-side retry)', async (t) => {
    const { app, register, store } = await setUp(t);
    const { id } = (await register('Ada', 'ada@example.org')).json();
    const results = await Promise.all(
      ['A', 'B', 'C'].map((name) => app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: { name } })),
    );
    t.same(results.map((r) => r.statusCode), [200, 200, 200]);
    t.equal((await store.readStream(`user-${id}`)).length, 4);
  });

  void t.test('email is unique across users, case-insensitively; changing email releases the old one', async (t) => {
    const { app, register, logSize } = await setUp(t);
    const ada = (await register('Ada', 'ada@example.org')).json();
    const before = await logSize();
    const taken = await register('Impostor', ' ADA@example.org ');
    t.equal(taken.statusCode, 409);
    t.equal(taken.json().code, 'EMAIL_TAKEN');
    t.equal(await logSize(), before, 'a refused registration appends nothing');

    const grace = (await register('Grace', 'grace@example.org')).json();
    const clash = await app.inject({ method: 'PUT', url: `/users/${grace.id}/email`, payload: { email: 'ada@example.org' } });
    t.equal(clash.statusCode, 409);

    await app.inject({ method: 'PUT', url: `/users/${ada.id}/email`, payload: { email: 'ada@lovelace.dev' } });
    const reuse = await register('New owner', 'ada@example.org');
    t.equal(reuse.statusCode, 201, 'the released address can be taken again');
  });

  void t.test('concurrent registrations of one email: exactly one wins', async (t) => {
    const { register } = await setUp(t);
    const results = await Promise.all([1, 2, 3, 4, 5].map((i) => register(`U${i}`, 'same@example.org')));
    t.same(results.map((r) => r.statusCode).sort(), [201, 409, 409, 409, 409]);
  });

  void t.test('a new claim and the user\'s events: one transaction where the store offers it, two appends elsewhere', async (t) => {
    const store = await openStore(t);
    const emails = emailReservations({ store, emailHash: testVault.emailHash, graceMs: 60_000, currentEmailOf: () => Promise.resolve(undefined) });
    const userEvents = (userId: string, expectedRevision: 'no_stream' | number) => ({
      streamId: `user-${userId}`,
      events: [{ type: 'UserRegistered', data: { userId } }],
      expectedRevision,
    });
    const together = await emails.reserve('pair@example.org', 'u-1', new Date(), {}, userEvents('u-1', 'no_stream'));
    t.equal(together.newlyClaimed, true);
    const [claim] = await store.readStream(testEmailStreamId('pair@example.org'));
    if (store.appendToStreams) {
      const [user] = await store.readStream('user-u-1');
      t.equal(together.appendedAlongside?.position, user?.position, 'the user\'s events were appended with the claim');
      t.ok(claim && user && claim.position < user.position, 'claim first');
      // The user's stream is not where the command expected: neither is written.
      await t.rejects(emails.reserve('lone@example.org', 'u-1', new Date(), {}, userEvents('u-1', 'no_stream')), {
        name: 'ConcurrencyError',
        streamId: 'user-u-1',
      });
      t.same(await store.readStream(testEmailStreamId('lone@example.org')), [], 'no claim is left behind');
    } else {
      t.equal(together.appendedAlongside, undefined, 'the caller appends the user\'s events itself');
      t.ok(claim, 'the claim is written');
    }
  });

  void t.test('a claim left by a crash before the user was written is taken over after the grace period', async (t) => {
    const store = await openStore(t);
    // The service's clock runs ahead on demand, past the 60 s grace period.
    let ahead = 0;
    const { register } = await setUp(t, { store, clock: () => new Date(Date.now() + ahead) });
    await store.appendToStream(
      testEmailStreamId('orphan@example.org'),
      [{ type: 'EmailReserved', data: { email: 'orphan@example.org', userId: '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11', occurredAt: new Date().toISOString() } }],
      { expectedRevision: 'no_stream' },
    );
    t.equal((await register('Too soon', 'orphan@example.org')).statusCode, 409, 'still held during the grace period');
    ahead = 61_000;
    t.equal((await register('Later', 'orphan@example.org')).statusCode, 201, 'taken over once orphaned');
  });

  /**
   * The store as EventStoreDB offers it (each stream appended alone), its `user-*`
   * appends passed through `userAppend` (which may hold one, or fail it after it committed).
   */
  const twoAppends = (inner: EventStore, userAppend: (append: () => Promise<AppendResult>, nth: number) => Promise<AppendResult>): EventStore => {
    let userAppends = 0;
    return {
      ...inner,
      appendToStreams: undefined,
      appendToStream: (streamId, events, options) =>
        streamId.startsWith('user-') ? userAppend(() => inner.appendToStream(streamId, events, options), userAppends++) : inner.appendToStream(streamId, events, options),
    };
  };
  /** `twoAppends` with the first user append held until `letGo()`; `held` resolves once it is. */
  const holdingFirstUserAppend = (inner: EventStore) => {
    let blocked!: () => void;
    const held = new Promise<void>((resolve) => (blocked = resolve));
    let letGo!: () => void;
    const gate = new Promise<void>((resolve) => (letGo = resolve));
    const store = twoAppends(inner, async (append, nth) => {
      if (nth === 0) {
        blocked();
        await gate;
      }
      return append();
    });
    return { store, held, letGo };
  };
  const lastReservation = async (store: EventStore, email: string) => {
    const [last] = (await store.readStream(testEmailStreamId(email))).slice(-1);
    return { type: last?.type, userId: (last?.data as { userId?: string } | undefined)?.userId };
  };

  void t.test('a registration whose append failed but may have committed keeps its claim: no second user takes the address', async (t) => {
    // An EventStoreDB append that times out answers 503 and may still commit.
    const store = twoAppends(await openStore(t), async (append, nth) => {
      const result = await append();
      if (nth === 0) throw new StoreUnavailableError('the append timed out (and committed)');
      return result;
    });
    const { register } = await setUp(t, { store });
    const first = await register('Ada', 'kept@example.org');
    t.equal(first.statusCode, 503);
    t.equal((await lastReservation(store, 'kept@example.org')).type, 'EmailReserved', 'the claim is not released on an unknown outcome');
    const second = await register('Eve', 'kept@example.org');
    t.equal(second.statusCode, 409, 'the address is taken (by the user the 503 did write)');
    t.equal(second.json().code, 'EMAIL_TAKEN');
  });

  void t.test('two requests with one Idempotency-Key, the first losing the race after it claimed: the address stays claimed', async (t) => {
    const { store, held: firstBlocked, letGo } = holdingFirstUserAppend(await openStore(t));
    const { register } = await setUp(t, { store });
    const headers = { 'idempotency-key': 'k-race' };
    const first = register('Ada', 'raced@example.org', headers);
    await firstBlocked;
    // The second finds the first's claim (its own user's), writes the user and answers.
    const second = await register('Ada', 'raced@example.org', headers);
    t.equal(second.statusCode, 201);
    letGo();
    // The first's user append conflicts: it must not release the address the user now has.
    const answered = await first;
    t.equal(answered.statusCode, 201);
    t.same(answered.json(), second.json(), 'the first answers as the second did');
    t.same(await lastReservation(store, 'raced@example.org'), { type: 'EmailReserved', userId: second.json().id });
    t.equal((await register('Eve', 'raced@example.org')).statusCode, 409, 'nobody else can register it');
  });

  void t.test("a retry with its key long after its claim was orphaned renews the claim: another user's takeover meanwhile conflicts", async (t) => {
    const { store: inner, held: retryBlocked, letGo } = holdingFirstUserAppend(await openStore(t));
    const orphanStream = testEmailStreamId('stale@example.org');
    // The first attempt with the key claimed the address and died before writing its user, two minutes ago
    // (the claim's recording time read back that much earlier; every later claim is as recent as it is).
    const store: EventStore = {
      ...inner,
      readStream: async (streamId, options) =>
        (await inner.readStream(streamId, options)).map((e) =>
          streamId === orphanStream && e.revision === 0 ? { ...e, recordedAt: new Date(e.recordedAt.getTime() - 120_000) } : e,
        ),
    };
    const { register } = await setUp(t, { store });
    // The id the key names (`user-commands.ts`: a UUIDv5 of the key in the service's namespace).
    const userId = uuidv5('k-stale', '6f0c1a52-3a1e-4f4b-9d3c-52a8b0c3e2d1');
    await store.appendToStream(orphanStream, [{ type: 'EmailReserved', data: { userId, occurredAt: new Date().toISOString() } }], { expectedRevision: 'no_stream' });
    // Its retry, past the grace period, and someone else registering the address at the same moment.
    const retry = register('Ada', 'stale@example.org', { 'idempotency-key': 'k-stale' });
    await retryBlocked;
    const other = await register('Eve', 'stale@example.org');
    letGo();
    const answered = await retry;
    t.same([answered.statusCode, other.statusCode], [201, 409], 'the retry, which renewed its claim first, gets the address; the other does not');
    t.equal(other.json().code, 'EMAIL_TAKEN');
    t.same(await lastReservation(store, 'stale@example.org'), { type: 'EmailReserved', userId });
    t.equal((await register('Mallory', 'stale@example.org')).statusCode, 409, 'and it stays taken');
  });

  void t.test('a release looks at the user before and after: it never leaves free an address the user took meanwhile', async (t) => {
    const store = await openStore(t);
    let emailsOfUser: Array<string | undefined> = [];
    const emails = emailReservations({
      store,
      emailHash: testVault.emailHash,
      graceMs: 60_000,
      currentEmailOf: () => Promise.resolve(emailsOfUser.shift()),
    });
    await emails.reserve('a@example.org', 'u-1', new Date(), {});
    // The user has the address: nothing is released.
    emailsOfUser = ['a@example.org'];
    await emails.release('a@example.org', 'u-1', new Date(), {});
    t.same(await lastReservation(store, 'a@example.org'), { type: 'EmailReserved', userId: 'u-1' }, 'kept while the user has it');
    // The user moved to b, then (a concurrent request on the same claim) back to a while the release was written.
    emailsOfUser = ['b@example.org', 'a@example.org'];
    await emails.release('a@example.org', 'u-1', new Date(), {});
    const types = (await store.readStream(testEmailStreamId('a@example.org'))).map((event) => event.type);
    t.same(types, ['EmailReserved', 'EmailReleased', 'EmailReserved'], 'released, then claimed again for the user');
    // Released for good when the user does not take it back.
    emailsOfUser = ['b@example.org', 'b@example.org'];
    await emails.release('a@example.org', 'u-1', new Date(), {});
    t.same(await lastReservation(store, 'a@example.org'), { type: 'EmailReleased', userId: 'u-1' });
    // `confirm` takes a released address again for its user, and leaves one another user holds.
    t.equal(await emails.confirm('a@example.org', 'u-1', new Date(), {}), true);
    t.same(await lastReservation(store, 'a@example.org'), { type: 'EmailReserved', userId: 'u-1' });
    await emails.reserve('c@example.org', 'u-2', new Date(), {});
    t.equal(await emails.confirm('c@example.org', 'u-1', new Date(), {}), false, 'held by another user');
    t.same(await lastReservation(store, 'c@example.org'), { type: 'EmailReserved', userId: 'u-2' });
  });

  void t.test('Idempotency-Key: a retry returns the original result and appends nothing', async (t) => {
    const { register, logSize } = await setUp(t);
    const first = await register('Ada', 'ada@example.org', { 'idempotency-key': 'k-123' });
    t.equal(first.statusCode, 201);
    const size = await logSize();
    const retry = await register('Ada', 'ada@example.org', { 'idempotency-key': 'k-123' });
    t.equal(retry.statusCode, 201);
    t.same(retry.json(), first.json());
    t.equal(await logSize(), size);
    const concurrent = await Promise.all([1, 2, 3].map(() => register('Bob', 'bob@example.org', { 'idempotency-key': 'k-456' })));
    t.same(concurrent.map((r) => r.statusCode), [201, 201, 201]);
    t.equal(new Set(concurrent.map((r) => r.json().id)).size, 1, 'one user for one key');
    const reused = await register('Eve', 'eve@example.org', { 'idempotency-key': 'k-123' });
    t.equal(reused.statusCode, 422);
    t.equal(reused.json().code, 'IDEMPOTENCY_KEY_REUSED');
  });

  void t.test('bad input: 400 naming the fields, nothing appended, never 5xx', async (t) => {
    const { app, register, logSize } = await setUp(t);
    const { id } = (await register('Ada', 'ada@example.org')).json();
    const before = await logSize();
    const cases: Array<{ request: InjectOptions & { url: string }; fields: string[] }> = [
      { request: { method: 'POST', url: '/users', payload: {} }, fields: ['email', 'name'] },
      { request: { method: 'POST', url: '/users', payload: { name: 1, email: 'a@b.org' } }, fields: ['name'] },
      { request: { method: 'POST', url: '/users', payload: { name: 'A', email: 'nope' } }, fields: ['email'] },
      { request: { method: 'POST', url: '/users', payload: { name: '   ', email: 'a@b.org' } }, fields: ['name'] },
      { request: { method: 'POST', url: '/users', payload: { name: 'A', email: 'a@b.org', admin: true } }, fields: ['admin'] },
      { request: { method: 'PUT', url: `/users/${id}/name`, payload: { name: 'x'.repeat(256) } }, fields: ['name'] },
      { request: { method: 'PUT', url: '/users/123/name', payload: { name: 'A' } }, fields: ['id'] },
      { request: { method: 'PUT', url: `/users/urn:uuid:${id}/name`, payload: { name: 'A' } }, fields: ['id'] },
      { request: { method: 'PUT', url: `/users/${id}/email`, payload: { email: ['a@b.org'] } }, fields: ['email'] },
    ];
    for (const { request, fields } of cases) {
      const response = await app.inject(request);
      t.equal(response.statusCode, 400, `${request.method} ${request.url} ${JSON.stringify(request.payload)}`);
      t.same(response.json().problems.map((p: { field: string }) => p.field).sort(), fields);
    }
    const brokenJson = await app.inject({ method: 'POST', url: '/users', payload: '{"name":', headers: { 'content-type': 'application/json' } });
    t.equal(brokenJson.statusCode, 400);
    // A lone surrogate, sent as a pure-ASCII JSON escape (so the UTF-8 check of the bytes passes it).
    for (const name of ['A\\ud800', '\\udc00B']) {
      const lone = await app.inject({ method: 'POST', url: '/users', payload: `{"name":"${name}","email":"lone@b.org"}`, headers: { 'content-type': 'application/json' } });
      t.equal(lone.statusCode, 400, `a name with a lone surrogate (${name})`);
      t.same(lone.json().problems.map((p: { field: string }) => p.field), ['name']);
    }
    const paired = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: '{"name":"Ada \\ud83d\\ude00"}', headers: { 'content-type': 'application/json' } });
    t.equal(paired.statusCode, 200, 'a surrogate pair (one emoji) is a character like any other');
    const proto = await app.inject({
      method: 'POST',
      url: '/users',
      payload: '{"name":"A","email":"a@b.org","__proto__":{"admin":true}}',
      headers: { 'content-type': 'application/json' },
    });
    t.equal(proto.statusCode, 400);
    const wrongType = await app.inject({ method: 'POST', url: '/users', payload: 'name=A', headers: { 'content-type': 'text/plain' } });
    t.equal(wrongType.statusCode, 415);
    const huge = await app.inject({ method: 'POST', url: '/users', payload: { name: 'A'.repeat(100_000), email: 'a@b.org' } });
    t.equal(huge.statusCode, 413);
    const unknown = await app.inject({ method: 'PUT', url: '/users/0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0000/name', payload: { name: 'A' } });
    t.equal(unknown.statusCode, 404);
    t.equal(unknown.json().code, 'USER_NOT_FOUND');
    t.equal(await logSize(), before + 1, 'nothing reached the event store but the rename with the emoji');
  });

  void t.test('a body that is not JSON is 415 and says application/json is expected; an empty body is no body', async (t) => {
    const { app, register, logSize } = await setUp(t);
    const { id } = (await register('Ada', 'ada@example.org')).json();
    const before = await logSize();
    const notJson = [
      { headers: { 'content-type': 'text/plain' }, got: /got content-type "text\/plain"$/ },
      { headers: { 'content-type': 'application/x-www-form-urlencoded' }, got: /got content-type "application\/x-www-form-urlencoded"$/ },
      { headers: {}, got: /got no content-type$/ },
    ];
    for (const { headers, got } of notJson) {
      const response = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: '{"name":"Ada L."}', headers });
      t.equal(response.statusCode, 415, JSON.stringify(headers));
      t.same(Object.keys(response.json()).sort(), ['code', 'error', 'message', 'statusCode'], 'the usual error shape');
      t.match(response.json(), { statusCode: 415, error: 'Unsupported Media Type', message: /^expected a body with content-type application\/json; / });
      t.match(response.json().message, got);
    }
    t.equal(await logSize(), before, 'nothing appended');

    // What `curl -X POST -H 'content-type: application/json'` without -d sends.
    const validated = await app.inject({ method: 'POST', url: `/users/${id}/validation`, headers: { 'content-type': 'application/json' } });
    t.equal(validated.statusCode, 200, validated.body);
    t.equal(validated.json().revision, 1);
    const emptyForm = await app.inject({ method: 'POST', url: `/users/${id}/validation`, headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': '0' } });
    t.equal(emptyForm.statusCode, 200, `an empty body of another type: ${emptyForm.body}`);
    const deactivated = await app.inject({ method: 'DELETE', url: `/users/${id}`, headers: { 'content-type': 'application/json; charset=utf-8' } });
    t.equal(deactivated.statusCode, 200, deactivated.body);
    t.equal(deactivated.json().revision, 2);
    const noName = await app.inject({ method: 'PUT', url: `/users/${id}/name`, headers: { 'content-type': 'application/json' } });
    t.equal(noName.statusCode, 400, 'a change that needs a body says so');
    t.match(noName.json(), { code: 'VALIDATION_FAILED', problems: [{ field: '(root)', in: 'body' }] });
    const fresh = await register('Bob', 'bob@example.org', { 'content-type': 'application/json' });
    t.equal(fresh.statusCode, 201, 'a JSON body with its content type still registers');
  });

  void t.test('JSON bodies are UTF-8: another declared charset is 415, bytes that are not UTF-8 are 400; neither writes', async (t) => {
    const { app, register, logSize } = await setUp(t);
    const { id } = (await register('Ada', 'ada@example.org')).json();
    const before = await logSize();
    // "José" in Latin-1: 0xE9 alone is no UTF-8 sequence.
    const latin1 = Buffer.concat([Buffer.from('{"name":"Jos'), Buffer.from([0xe9]), Buffer.from('"}')]);
    const declared = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: latin1, headers: { 'content-type': 'application/json; charset=iso-8859-1' } });
    t.equal(declared.statusCode, 415, declared.body);
    t.match(declared.json(), { code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', message: /UTF-8.*got charset "iso-8859-1"/ });
    const quoted = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: '{"name":"Ada L."}', headers: { 'content-type': 'application/json; charset="UTF-16"' } });
    t.equal(quoted.statusCode, 415, 'a quoted charset is read too');
    for (const contentType of ['application/json', 'application/json; charset=utf-8']) {
      const broken = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: latin1, headers: { 'content-type': contentType } });
      t.equal(broken.statusCode, 400, `${contentType}: ${broken.body}`);
      t.match(broken.json(), { statusCode: 400, code: 'BODY_NOT_UTF8', error: 'Bad Request', message: /not valid UTF-8/ });
    }
    const registered = await app.inject({ method: 'POST', url: '/users', payload: latin1.toString('latin1').replace('"name"', '"email":"jose@example.org","name"'), headers: { 'content-type': 'application/json' } });
    t.equal(registered.statusCode, 201, 'the same name sent as UTF-8 (what a string payload is) registers');
    const bytes = Buffer.from('{"name":"José Ñandú 李"}', 'utf8');
    for (const contentType of ['application/json; charset=UTF-8', 'application/json;charset="utf8"']) {
      const renamed = await app.inject({ method: 'PUT', url: `/users/${id}/name`, payload: bytes, headers: { 'content-type': contentType } });
      t.equal(renamed.statusCode, 200, `${contentType}: ${renamed.body}`);
    }
    t.equal(await logSize(), before + 3, 'only the UTF-8 bodies wrote: one registration and two renames');
  });

  void t.test('a known path asked with another method is 405 with Allow; an unknown path stays 404', async (t) => {
    const { app, logSize } = await setUp(t);
    const id = '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0000';
    const wrongMethods = [
      { method: 'GET' as const, url: '/users', allow: 'POST' },
      { method: 'PATCH' as const, url: `/users/${id}`, allow: 'DELETE' },
      { method: 'GET' as const, url: `/users/${id}/name`, allow: 'PUT' },
      { method: 'POST' as const, url: `/users/${id}/email?x=1`, allow: 'PUT' },
      { method: 'DELETE' as const, url: `/users/${id}/validation`, allow: 'POST' },
      { method: 'POST' as const, url: '/health', allow: 'GET, HEAD' },
    ];
    for (const { method, url, allow } of wrongMethods) {
      const response = await app.inject({ method, url, payload: method === 'GET' ? undefined : { name: 'A' } });
      t.equal(response.statusCode, 405, `${method} ${url}`);
      t.equal(response.headers.allow, allow, `${method} ${url}: Allow`);
      t.same(response.json(), {
        statusCode: 405,
        code: 'METHOD_NOT_ALLOWED',
        error: 'Method Not Allowed',
        message: `${method} is not allowed on ${url.split('?')[0]}; allowed: ${allow}`,
      });
    }
    for (const url of ['/nowhere', `/users/${id}/nickname`, `/users/${id}/name/extra`, '/users/', '//users']) {
      const response = await app.inject({ method: 'GET', url });
      t.equal(response.statusCode, 404, url);
      t.equal(response.json().code, 'ROUTE_NOT_FOUND', url);
      t.equal(response.headers.allow, undefined, url);
    }
    t.equal(await logSize(), 0, 'nothing appended');
  });

  void t.test('bearer tokens: writes need one when configured; health does not', async (t) => {
    const { app, register } = await setUp(t, { tokens: ['s3cret', 'other'] });
    const missing = await register('Ada', 'ada@example.org');
    t.equal(missing.statusCode, 401);
    t.equal(missing.headers['www-authenticate'], 'Bearer realm="users"', 'the 401 names the scheme it asks for');
    const wrong = await register('Ada', 'ada@example.org', { authorization: 'Bearer wrong' });
    t.equal(wrong.statusCode, 401);
    t.equal(wrong.headers['www-authenticate'], 'Bearer realm="users", error="invalid_token"');
    const ok = await register('Ada', 'ada@example.org', { authorization: 'Bearer other' });
    t.equal(ok.statusCode, 201);
    t.equal((await app.inject({ url: '/health' })).statusCode, 200);
  });

  void t.test('an unreachable event store is a 503 with Retry-After, not a 500', async (t) => {
    const failing: EventStore = {
      ...(await openStore(t)),
      readStream: () => Promise.reject(new StoreUnavailableError('event store down')),
      appendToStream: () => Promise.reject(new StoreUnavailableError('event store down')),
      appendToStreams: () => Promise.reject(new StoreUnavailableError('event store down')),
    };
    const { register } = await setUp(t, { store: failing });
    const response = await register('Ada', 'ada@example.org');
    t.equal(response.statusCode, 503);
    t.equal(response.headers['retry-after'], '1');
    t.equal(response.json().code, 'STORE_UNAVAILABLE');
  });
}

for (const kind of eventStoreKinds) {
  void t.test(kind.name, async (t) => writeApiSuite(t, (t) => kind.open(t)));
}

void t.test('EventStoreDB down: the write API answers 503 with Retry-After, quickly', async (t) => {
  const server = await startEsdbTestServer();
  const store = esdbEventStore({ connectionString: server.connectionString, operationTimeoutMs: 2000 });
  t.teardown(async () => {
    await store.close();
    await server.stop();
  });
  const app = buildCommandApp({ commands: userCommands({ store, vault: testVault, emailGraceMs: 60_000 }), store });
  t.teardown(() => app.close());
  const post = () => app.inject({ method: 'POST', url: '/users', payload: { name: 'Ada', email: 'ada@example.org' } });
  t.equal((await post()).statusCode, 201);
  await server.stop();
  const started = Date.now();
  const down = await post();
  t.equal(down.statusCode, 503);
  t.equal(down.headers['retry-after'], '1');
  t.equal(down.json().code, 'STORE_UNAVAILABLE');
  t.ok(Date.now() - started < 3000, `answered in ${Date.now() - started} ms`);
  t.equal((await app.inject({ url: '/health' })).statusCode, 503, 'health says so too');
  await server.restart();
  const back = await app.inject({ method: 'POST', url: '/users', payload: { name: 'Grace', email: 'grace@example.org' } });
  t.equal(back.statusCode, 201, 'recovers on its own once the server is back');
});
