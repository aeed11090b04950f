import { testVault } from '../support/vault.js';
import t from 'tap';
import { buildCommandApp } from '../../command-side/app.js';
import { userCommands } from '../../command-side/user-commands.js';
import { applyBatch } from '../../projector/apply-batch.js';
import { buildQueryApp } from '../../query-side/app.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { forEachReadDb } from '../support/read-dbs.js';
import { hostileReads, hostileWrites } from '../support/hostile-requests.js';
import { tableRows } from '../support/seed.js';

/**
 * Thousands of malformed and adversarial requests: every answer must be a 4xx
 * with a JSON error body, nothing may reach the event store or the read model,
 * and the service must be healthy afterwards. FUZZ_SEED replays a run.
 */
const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
const count = Number(process.env.FUZZ_REQUESTS ?? 3000);

function histogram(codes: number[]) {
  const counts: Record<string, number> = {};
  for (const code of codes) counts[code] = (counts[code] ?? 0) + 1;
  return counts;
}

void t.test(`write API under ${count} hostile requests (FUZZ_SEED=${seed})`, async (t) => {
  const store = inMemoryEventStore();
  const commands = userCommands({ store, vault: testVault, emailGraceMs: 60_000 });
  const app = buildCommandApp({ commands, store, bodyLimitBytes: 16_384 });
  t.teardown(() => app.close());
  const { id } = await commands.register({ name: 'Target', email: 'target@example.org' });
  const logBefore = await store.readAll({ maxCount: 1_000_000 });

  const codes: number[] = [];
  const offenders: string[] = [];
  for (const request of hostileWrites(seed, count, id)) {
    const response = await app.inject(request);
    codes.push(response.statusCode);
    let body: { statusCode?: unknown; code?: unknown; message?: unknown } = {};
    try {
      body = response.json();
    } catch {
      // not JSON: reported below
    }
    const ok = response.statusCode >= 400 && response.statusCode < 500 && body.statusCode === response.statusCode && typeof body.code === 'string' && typeof body.message === 'string';
    if (!ok && offenders.length < 5) offenders.push(`${response.statusCode} ${JSON.stringify(request).slice(0, 200)} -> ${response.body.slice(0, 200)}`);
  }
  const statuses = histogram(codes);
  t.comment(`write API status histogram: ${JSON.stringify(statuses)}`);
  t.same(offenders, [], 'every answer is a 4xx with a JSON error body');
  t.equal(codes.filter((c) => c >= 500).length, 0, 'no 5xx');
  t.same(await store.readAll({ maxCount: 1_000_000 }), logBefore, 'nothing was appended');
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, 'still healthy');
  const again = await app.inject({ method: 'POST', url: '/users', payload: { name: 'After', email: 'after@example.org' } });
  t.equal(again.statusCode, 201, 'still serving writes');
});

forEachReadDb(t, async (t, db) => {
  const store = inMemoryEventStore();
  const commands = userCommands({ store, vault: testVault, emailGraceMs: 60_000 });
  for (let i = 0; i < 5; i++) await commands.register({ name: `Reader ${i}`, email: `reader${i}@example.org` });
  await applyBatch(db, await testVault.open(await store.readAll({ maxCount: 1000 })), new Map());
  const before = await tableRows(db);
  t.equal(before.length, 5, 'the read model holds the five users the hostile reads go at');
  const app = buildQueryApp({ db, consistencyWaitMs: 100 });
  t.teardown(() => app.close());

  const codes: number[] = [];
  const offenders: string[] = [];
  for (const request of hostileReads(seed, Math.ceil(count / 3))) {
    const response = await app.inject(request);
    codes.push(response.statusCode);
    const body = (() => {
      try {
        return response.json();
      } catch {
        return {};
      }
    })();
    const ok = response.statusCode >= 400 && response.statusCode < 500 && typeof body.code === 'string';
    if (!ok && offenders.length < 5) offenders.push(`${response.statusCode} ${JSON.stringify(request)} -> ${response.body.slice(0, 200)}`);
  }
  t.comment(`read API status histogram: ${JSON.stringify(histogram(codes))}`);
  t.same(offenders, [], 'every answer is a 4xx with a JSON error body');
  t.same(await tableRows(db), before, 'the read model is untouched');
  t.equal((await app.inject({ url: '/health' })).statusCode, 200, 'still healthy');
});
