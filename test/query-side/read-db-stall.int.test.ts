import t, { type Test } from 'tap';
import { buildQueryApp } from '../../query-side/app.js';
import { mariadbBehindProxy } from '../support/mariadb-behind-proxy.js';

/**
 * MariaDB stops answering without closing the read API's connections (a dropped route, a
 * frozen host, a firewall that lost their state): a proxy in front of it stalls. Reads answer
 * 503 STORE_UNAVAILABLE within QUERY_TIMEOUT_MS and a second; once MariaDB can be reached
 * again, reads are served again within moments, by connections that answer, and the reads
 * whose callers were answered 503 meanwhile are not run then.
 */

const queryTimeoutMs = 300;
/** How long a read may take before the read API gives up on the server: QUERY_TIMEOUT_MS and a second. */
const patienceMs = queryTimeoutMs + 1000;
const list = '/users?status=registered';

/**
 * Counts the prepared statements a client runs (COM_STMT_EXECUTE): a MySQL packet is a 3-byte
 * length, a sequence id and the payload, whose first byte names the command when the sequence id
 * is 0. The read API's reads are the only statements run this way (knex sends text queries).
 */
function countExecutes(onExecute: () => void) {
  return () => {
    let pending: Buffer = Buffer.alloc(0);
    return (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 4 && pending.length >= 4 + pending.readUIntLE(0, 3)) {
        if (pending[3] === 0 && pending[4] === 0x17) onExecute();
        pending = pending.subarray(4 + pending.readUIntLE(0, 3));
      }
    };
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function readApiBehindStallingProxy(t: Test) {
  const proxied = await mariadbBehindProxy(t);
  if (!proxied) return undefined;
  const { proxy, db } = proxied;
  const rows = Array.from({ length: 5 }, (_, i) => ({
    ID_USER_DATA: `0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0d1${i}`,
    NAME: `Stalled ${i}`,
    EMAIL: `stalled${i}@example.org`,
    STATUS: 'registered',
    DATE_REGISTER: '2026-01-01 00:00:00.000',
    DATE_UPDATED: '2026-01-01 00:00:00.000',
    VERSION: 0,
  }));
  await db('USER_DATA').insert(rows);
  const executes = { count: 0 };
  proxy.observeClients(countExecutes(() => executes.count++));
  const query = buildQueryApp({ db, consistencyWaitMs: 500, queryTimeoutMs });
  t.teardown(() => query.close());
  // Teardowns run last first: the read API closes over a proxy that forwards again.
  t.teardown(() => proxy.restore());
  // Every connection of the read API's pool open, its statement prepared.
  const warm = await Promise.all(Array.from({ length: 30 }, () => query.inject({ url: list })));
  t.same([...new Set(warm.map((r) => r.statusCode))], [200], 'reads are served before the stall');
  t.equal(warm[0]!.json<{ items: unknown[] }>().items.length, rows.length, 'with the rows the test wrote');

  /** `count` reads at once while the server does not answer: each is 503 STORE_UNAVAILABLE, and soon. */
  const readsWhileStalled = async (count: number) => {
    const started = Date.now();
    const answers = await Promise.all(
      Array.from({ length: count }, () => query.inject({ url: list }).then((r) => ({ status: r.statusCode, code: r.json<{ code?: string }>().code, ms: Date.now() - started }))),
    );
    t.same([...new Set(answers.map((a) => `${a.status} ${a.code}`))], ['503 STORE_UNAVAILABLE'], `the ${count} reads while MariaDB does not answer are 503 STORE_UNAVAILABLE`);
    const slowest = Math.max(...answers.map((a) => a.ms));
    t.ok(slowest < patienceMs + 700, `each answered within QUERY_TIMEOUT_MS and a second (the slowest after ${slowest} ms)`);
  };
  /** A read served once the server answers again: 200, and promptly. */
  const servedPromptly = async (what: string) => {
    const started = Date.now();
    const answer = await query.inject({ url: list });
    const ms = Date.now() - started;
    t.equal(answer.statusCode, 200, `${what}: ${answer.statusCode} ${answer.statusCode === 200 ? '' : answer.body}`);
    t.ok(ms < 1000, `${what}: answered in ${ms} ms`);
  };
  return { proxy, query, executes, readsWhileStalled, servedPromptly };
}

void t.test('a MariaDB that stops answering and comes back: the next read is served at once, the abandoned ones are not run', async (t) => {
  const api = await readApiBehindStallingProxy(t);
  if (!api) return;
  const { proxy, executes, readsWhileStalled, servedPromptly } = api;

  proxy.stall();
  // Readiness asks the read path itself, within its patience: knex's own query to a stalled server never ends.
  const started = Date.now();
  const probe = await api.query.inject({ url: '/health/ready' });
  t.equal(probe.statusCode, 503, `not ready while MariaDB does not answer (answered in ${Date.now() - started} ms)`);
  await readsWhileStalled(200);
  const before = executes.count;
  proxy.restore();
  await servedPromptly('the first read after MariaDB answers again');
  // Long enough for any backlog the pool still held to reach the server.
  await sleep(1000);
  const ran = executes.count - before - 1;
  // At most the statements of the 10 reads that had a connection when the route dropped: their bytes were on the way.
  t.ok(ran <= 12, `${ran} statements of reads already answered 503 ran on MariaDB once it answered again`);
  await servedPromptly('a read a second later');
});

void t.test('the open connections stall while new ones are answered: reads are served again, by new connections, within QUERY_TIMEOUT_MS and a second', async (t) => {
  const api = await readApiBehindStallingProxy(t);
  if (!api) return;
  const { proxy, readsWhileStalled, servedPromptly } = api;

  proxy.stall({ newConnections: 'forward' });
  await readsWhileStalled(200);
  // The stalled connections stay stalled; only connections opened from here on are answered.
  await servedPromptly('the next read');
  await servedPromptly('and the one after');
});

void t.test('a MariaDB that does not answer keeps at most 1,000 reads waiting for a connection: those past them are answered 503 at once', async (t) => {
  const api = await readApiBehindStallingProxy(t);
  if (!api) return;
  const { proxy, query, servedPromptly } = api;

  proxy.stall();
  const started = Date.now();
  const answers = await Promise.all(Array.from({ length: 1100 }, () => query.inject({ url: list }).then((r) => ({ status: r.statusCode, ms: Date.now() - started }))));
  t.same([...new Set(answers.map((a) => a.status))], [503], 'every read is 503');
  // 10 on the pool's connections, 1,000 waiting for one: the other 90 need not wait.
  const atOnce = answers.filter((a) => a.ms < queryTimeoutMs).length;
  t.ok(atOnce >= 90, `${atOnce} answered within ${queryTimeoutMs} ms`);
  // The reads that waited were answered 503, but stay in the pool's queue until a connection is free: the
  // first statement to answer hands its connection through them at once. Until then reads are still refused.
  proxy.restore();
  const resumed = Date.now();
  let refused = 0;
  while ((await query.inject({ url: list })).statusCode !== 200 && Date.now() - resumed < 2000) {
    refused++;
    await sleep(10);
  }
  const ms = Date.now() - resumed;
  t.ok(ms < 1000, `reads are served again ${ms} ms after MariaDB answers again (${refused} refused before)`);
  await servedPromptly('the next read');
});

void t.test('a MariaDB that closes the connections (a cut) still makes reads 503, and they are served once it is back', async (t) => {
  const api = await readApiBehindStallingProxy(t);
  if (!api) return;
  const { proxy, query, servedPromptly } = api;

  proxy.cut();
  const answer = await query.inject({ url: list });
  t.equal(answer.statusCode, 503, 'a read while MariaDB is cut off is 503');
  t.equal(answer.json<{ code: string }>().code, 'STORE_UNAVAILABLE');
  t.equal(answer.headers['retry-after'], '1', 'with Retry-After');
  proxy.restore();
  await servedPromptly('the first read once MariaDB is back');
});
