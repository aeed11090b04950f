import { randomUUID } from 'node:crypto';
import t from 'tap';
import { applyBatch } from '../../projector/apply-batch.js';
import { buildQueryApp } from '../../query-side/app.js';
import { encodeConsistencyToken } from '../../shared/consistency-token.js';
import type { ProjectedEvent } from '../../shared/event-feed/port.js';
import { userStreamId } from '../../shared/user-events.js';
import { forEachReadDb } from '../support/read-dbs.js';

/** The read API and a forgotten user: 410 by id, never in a list, and a forget's consistency token works. */

const at = () => new Date().toISOString();

function user(id = randomUUID()) {
  const streamId = userStreamId(id);
  const event = (revision: number, type: string, data: Record<string, unknown> = {}): ProjectedEvent => ({
    streamId,
    revision,
    type,
    data: { userId: id, occurredAt: at(), ...data },
  });
  return { id, streamId, event };
}

forEachReadDb(t, async (t, db) => {
  const app = buildQueryApp({ db, consistencyWaitMs: 2000 });
  t.teardown(() => app.close());

  const kept = user();
  const gone = user();
  const email = `forget.me.${gone.id.slice(0, 8)}@example.org`;
  await applyBatch(
    db,
    [
      kept.event(0, 'UserRegistered', { name: 'Forgetful Kept', email: 'kept.forget@example.org' }),
      gone.event(0, 'UserRegistered', { name: 'Forgetful Gone', email }),
      gone.event(1, 'UserValidated'),
    ],
    new Map(),
  );
  t.equal((await app.inject({ url: `/users/${gone.id}` })).statusCode, 200, 'before: found');
  t.equal((await app.inject({ url: `/users?email=${email}` })).json().items.length, 1, 'before: listed');

  await t.test('a consistency token of the forget is satisfied by the tombstone, then 410', async (t) => {
    const token = encodeConsistencyToken({ streamId: gone.streamId, revision: 2 });
    const reading = app.inject({ url: `/users/${gone.id}`, headers: { 'consistency-token': token } });
    // The forget is applied while the read waits for it.
    await new Promise((resolve) => setTimeout(resolve, 50));
    await applyBatch(db, [gone.event(2, 'UserForgotten')], new Map());
    const answer = await reading;
    t.equal(answer.statusCode, 410);
    t.match(answer.json(), { statusCode: 410, code: 'USER_FORGOTTEN', error: 'Gone', message: /was forgotten/ });
    t.notOk(answer.body.includes('Forgetful') || answer.body.includes(email), 'nothing personal in the answer');
  });

  await t.test('GET /users/:id: 410 for a forgotten user (any case of the id), 200 and 404 as before', async (t) => {
    const upper = await app.inject({ url: `/users/${gone.id.toUpperCase()}` });
    t.equal(upper.statusCode, 410);
    t.equal(upper.json().code, 'USER_FORGOTTEN');
    t.equal((await app.inject({ url: `/users/${kept.id}` })).statusCode, 200);
    t.equal((await app.inject({ url: `/users/${randomUUID()}` })).statusCode, 404);
    // Several lookups in one turn (one batched query): each gets its own answer.
    const answers = await Promise.all([gone.id, kept.id, gone.id].map((id) => app.inject({ url: `/users/${id}` })));
    t.same(answers.map((a) => a.statusCode), [410, 200, 410]);
  });

  await t.test('lists never show a forgotten user', async (t) => {
    const lists = [
      '/users',
      '/users?limit=100',
      `/users?email=${email}`,
      '/users?email=',
      '/users?name=Forgetful',
      '/users?status=validated',
      '/users?status=registered',
    ];
    for (const url of lists) {
      const answer = await app.inject({ url });
      if (url === '/users?email=') {
        t.equal(answer.statusCode, 400, 'an empty email is no way in');
        continue;
      }
      t.equal(answer.statusCode, 200, url);
      const ids = (answer.json().items as Array<{ id: string }>).map((u) => u.id);
      t.notOk(ids.includes(gone.id), `${url}: not listed`);
      t.notOk(answer.body.includes(email), `${url}: the email is nowhere`);
    }
    t.same((await app.inject({ url: '/users?name=Forgetful' })).json().items.map((u: { id: string }) => u.id), [kept.id], 'the others still are');
    // Lists by email alone arriving together are batched into one query: still left out.
    const together = await Promise.all([email, 'kept.forget@example.org'].map((e) => app.inject({ url: `/users?email=${e}` })));
    t.same(together.map((a) => a.json().items.length), [0, 1]);
    // No item of any list is a forgotten one.
    const all = (await app.inject({ url: '/users?limit=100' })).json().items as Array<{ status: string }>;
    t.notOk(all.some((u) => u.status === 'forgotten'));
  });

  await t.test("the status filter does not take 'forgotten'", async (t) => {
    const answer = await app.inject({ url: '/users?status=forgotten' });
    t.equal(answer.statusCode, 400);
    t.match(answer.json(), { code: 'VALIDATION_FAILED', problems: [{ field: 'status', in: 'querystring' }] });
  });

  await t.test('the OpenAPI document names the 410 on GET /users/{id}', async (t) => {
    const doc = (await app.inject({ url: '/openapi.json' })).json();
    t.match(doc.paths['/users/{id}'].get.responses['410'], { description: /USER_FORGOTTEN/ });
    t.same(doc.paths['/users'].get.parameters.find((p: { name: string }) => p.name === 'status').schema.enum, ['registered', 'validated', 'deactivated']);
  });
});
