import type { AddressInfo } from 'node:net';
import http from 'node:http';
import t from 'tap';
import { buildQueryApp } from '../../query-side/app.js';
import { forEachReadDb } from '../support/read-dbs.js';

/**
 * A read waiting for its write (`Consistency-Token`) when the read API closes ends then, 503 SHUTTING_DOWN,
 * rather than hold the close for `CONSISTENCY_WAIT_MS` (up to 600 s; a container runtime kills a process
 * that has not stopped within 10 s).
 */
forEachReadDb(t, async (t, db) => {
  const id = '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c10';
  await db('USER_DATA').insert({ ID_USER_DATA: id, NAME: 'Waiting', EMAIL: 'waiting@example.org', STATUS: 'registered', DATE_REGISTER: '2026-01-01 00:00:00.000', DATE_UPDATED: '2026-01-01 00:00:00.000', VERSION: 0 });
  t.teardown(() => db('USER_DATA').where({ ID_USER_DATA: id }).delete());
  const app = buildQueryApp({ db, consistencyWaitMs: 60_000 });
  t.teardown(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;

  // A write the read model never applies: the read waits.
  const answer = fetch(`http://127.0.0.1:${port}/users/${id}`, { headers: { 'consistency-token': `user-${id}@5` } });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const started = Date.now();
  const closed = app.close();
  const bound = new Promise<'timed out'>((resolve) => setTimeout(() => resolve('timed out'), 10_000).unref());
  const response = await Promise.race([answer, bound]);
  if (response === 'timed out') {
    t.fail('the waiting read was not answered within 10 s of the close');
    return;
  }
  t.equal(response.status, 503, 'the waiting read is answered');
  t.equal(response.headers.get('retry-after'), '1');
  t.equal(response.headers.get('connection'), 'close', 'on a connection that closes: the retry reaches another instance');
  t.match(await response.json(), { statusCode: 503, code: 'SHUTTING_DOWN', message: /shutting down before the read model applied/ });
  t.equal(await Promise.race([closed.then(() => 'closed' as const), bound]), 'closed', 'and the app closed');
  t.ok(Date.now() - started < 10_000, `closed in ${Date.now() - started} ms, not after the wait's 60 s`);
});

/**
 * A caller that leaves while its read waits for a write (its own timeout, a closed tab) ends that
 * wait: it holds nothing (no timer, no listener, no look at the read model) for the rest of
 * `CONSISTENCY_WAIT_MS`. And a wait longer than the connection's idle timeout is answered, not cut.
 */
forEachReadDb(t, async (t, db) => {
  const id = '0190f2a4-6c1d-7cc2-9d6e-7d3b8a2f0c11';
  await db('USER_DATA').insert({ ID_USER_DATA: id, NAME: 'Leaving', EMAIL: 'leaving@example.org', STATUS: 'registered', DATE_REGISTER: '2026-01-01 00:00:00.000', DATE_UPDATED: '2026-01-01 00:00:00.000', VERSION: 0 });
  t.teardown(() => db('USER_DATA').where({ ID_USER_DATA: id }).delete());
  const app = buildQueryApp({ db, consistencyWaitMs: 20_000 });
  t.teardown(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
  const before = timers();

  // Twenty reads of a write the read model never applies, each on its own connection, abandoned after 300 ms.
  const requests = Array.from({ length: 20 }, () => {
    const request = http.get({ host: '127.0.0.1', port, path: `/users/${id}`, agent: false, headers: { 'consistency-token': `user-${id}@5` } });
    request.on('error', () => {});
    return request;
  });
  /** How many timers are active once `done` says so, or after `ms` (the machine may be slow to connect twenty callers). */
  const timersOnce = async (done: (count: number) => boolean, ms: number) => {
    const deadline = Date.now() + ms;
    while (!done(timers()) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    return timers();
  };
  const waiting = await timersOnce((count) => count >= before + 20, 10_000);
  t.ok(waiting >= before + 20, `the waiting reads hold timers (${before} before, ${waiting} while they wait)`);
  const left = Date.now();
  for (const request of requests) request.destroy();
  const after = await timersOnce((count) => count < before + 5, 5000);
  t.ok(after < before + 5, `their callers gone, the waits ended (${after} timers ${Date.now() - left} ms later, ${before} before; the wait is 20 s)`);

  // Node cuts a connection silent for longer than its timeout: the read API's covers the longest wait and the read after it.
  const patient = buildQueryApp({ db, consistencyWaitMs: 120_000, queryTimeoutMs: 5000 });
  t.teardown(() => patient.close());
  t.ok(patient.server.timeout > 120_000 + 2 * 5000, `a connection waits ${patient.server.timeout} ms before it is cut as idle, longer than CONSISTENCY_WAIT_MS and the read`);
});
