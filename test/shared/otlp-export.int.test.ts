import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { buildCommandApp } from '../../command-side/app.js';
import { inMemoryEventStore } from '../../shared/event-store/in-memory-event-store.js';
import { startTracing, stopTracing, tracingOn } from '../../shared/tracing.js';
import { commandsOver } from '../support/seed.js';

interface ExportedSpan {
  name: string;
  traceId: string;
  parentSpanId?: string;
}
interface TraceExport {
  resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: ExportedSpan[] }[] }[];
}

/** With OTEL_EXPORTER_OTLP_ENDPOINT set, a role's spans leave over OTLP/HTTP under its service name, flushed at shutdown. */
void t.test('spans are exported to the OTLP endpoint under the role\'s service name; stopping flushes them', async (t) => {
  const received: { url: string | undefined; body: TraceExport }[] = [];
  const collector = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      received.push({ url: request.url, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as TraceExport });
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => collector.close(() => resolve())));
  const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;

  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = endpoint;
  t.teardown(() => void delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT);
  await startTracing('command-side');
  t.ok(tracingOn());
  const store = inMemoryEventStore();
  const app = buildCommandApp({ commands: commandsOver(store), store });
  t.teardown(() => app.close());
  const answer = await app.inject({
    method: 'POST',
    url: '/users',
    payload: { name: 'Ada', email: 'ada@example.org' },
    headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
  });
  t.equal(answer.statusCode, 201);
  t.equal(received.length, 0, 'batched, not sent per span');

  await stopTracing();
  t.notOk(tracingOn());
  t.ok(received.length >= 1, 'flushed when tracing stops');
  t.ok(received.every((r) => r.url === '/v1/traces'), 'posted to <endpoint>/v1/traces');
  const resources = received.flatMap((r) => r.body.resourceSpans);
  const serviceNames = new Set(resources.map((r) => r.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue));
  t.same([...serviceNames], ['users-command-side']);
  const exported = resources.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans));
  t.same(exported.map((s) => s.name).sort(), ['POST /users', 'append']);
  t.ok(exported.every((s) => s.traceId === '4bf92f3577b34da6a3ce929d0e0e4736'), "all in the caller's trace");
});
