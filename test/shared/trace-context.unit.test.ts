import t from 'tap';
import { startTracing, traceContextOf, tracingOn } from '../../shared/tracing.js';

const valid = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

void t.test('a well-formed traceparent is kept as it came, with a sane tracestate', async (t) => {
  t.same(traceContextOf(valid), { traceparent: valid });
  t.same(traceContextOf(valid, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7'), { traceparent: valid, tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7' });
  t.same(traceContextOf('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00'), { traceparent: '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00' }, 'a later version in the same shape');
});

void t.test('a malformed traceparent is no trace context at all', async (t) => {
  const malformed: unknown[] = [
    undefined,
    42,
    [valid],
    '',
    'garbage',
    valid.toUpperCase(),
    `${valid} `,
    `${valid}-extra`,
    `${valid}, ${valid}`, // the header sent twice
    'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', // version ff is invalid
    '00-00000000000000000000000000000000-00f067aa0ba902b7-01', // all-zero trace id
    '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', // all-zero parent id
    '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01', // 31 hex digits
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1',
    '00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01',
  ];
  for (const value of malformed) t.equal(traceContextOf(value, 'a=b'), undefined, JSON.stringify(value));
});

void t.test('a tracestate that is too long or not printable is dropped; the traceparent stays', async (t) => {
  for (const tracestate of ['x'.repeat(513), 'a=b\n', 'a=\u00e9', '   ', 42]) {
    t.same(traceContextOf(valid, tracestate), { traceparent: valid }, JSON.stringify(tracestate));
  }
});

void t.test('without an OTLP endpoint tracing stays off; a bad endpoint is a configuration error', async (t) => {
  const withEnv = async (env: Record<string, string>) => {
    const keys = ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_SDK_DISABLED'];
    const saved = Object.fromEntries(keys.map((key) => [key, process.env[key]]));
    for (const key of keys) delete process.env[key];
    Object.assign(process.env, env);
    try {
      await startTracing('command-side');
    } finally {
      for (const key of keys) {
        if (saved[key] === undefined) delete process.env[key];
        else process.env[key] = saved[key];
      }
    }
  };
  await withEnv({});
  await withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_SDK_DISABLED: 'true' });
  t.notOk(tracingOn());
  await t.rejects(withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'localhost:4318' }), {
    code: 'CONFIG_INVALID',
    message: /OTEL_EXPORTER_OTLP_ENDPOINT: must be an http\(s\) URL/,
  });
  t.notOk(tracingOn());
});
