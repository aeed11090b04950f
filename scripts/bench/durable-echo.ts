import Fastify from 'fastify';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sqliteEventStore } from '../../shared/event-store/sqlite-event-store.js';
import { serveBaseline } from './serve-baseline.js';

/**
 * The floor of a durable write on the embedded store, for `npm run bench:http`: a
 * bare Fastify JSON-echo POST that first appends the body as one event to a
 * stream of its own in the embedded event store (its group-commit writer thread,
 * synchronous=FULL), so the echo is sent only once the body is on disk. The
 * stream's id is random, so each append lands on a random leaf of the store's
 * stream index, as a registration's email claim does (a time-ordered id would
 * append at the index's end: a cheaper floor than any registration has). No
 * validation, domain, email claim, sealing or projection: what is left between
 * it and `POST /users` is the service's own. A fresh store in a temporary
 * directory, removed on SIGTERM (`serveBaseline`).
 */
const dir = mkdtempSync(join(tmpdir(), 'users-bench-durable-echo-'));
const store = sqliteEventStore({ file: join(dir, 'events.sqlite') });
const app = Fastify();
app.post('/echo', async (request) => {
  await store.appendToStream(`echo-${randomUUID()}`, [{ type: 'Echoed', data: request.body }], { expectedRevision: 'no_stream' });
  return request.body;
});
await serveBaseline(app, async () => {
  try {
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
