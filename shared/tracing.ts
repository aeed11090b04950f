import {
  ROOT_CONTEXT,
  SpanStatusCode,
  createTraceState,
  trace,
  type Attributes,
  type Link,
  type Span,
  type SpanContext,
  type SpanKind,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';
import { ConfigError } from './errors.js';

/**
 * W3C trace context as it travels with the work: the `traceparent` and
 * `tracestate` HTTP headers of a write, the metadata of its events, the headers
 * of their Kafka messages.
 */
export interface TraceContext {
  traceparent: string;
  tracestate?: string;
}

// version-traceid-parentid-flags, lower-case hex; version ff is invalid (W3C Trace Context, level 1).
const traceparentFormat = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const zeroTraceId = '0'.repeat(32);
const zeroSpanId = '0'.repeat(16);
// At most 512 printable characters: what W3C asks every vendor to pass on.
const tracestateFormat = /^[\x20-\x7e]{1,512}$/;

/** The trace context of a well-formed `traceparent` (and `tracestate`, if it is sane); undefined otherwise. */
export function traceContextOf(traceparent: unknown, tracestate?: unknown): TraceContext | undefined {
  if (typeof traceparent !== 'string') return undefined;
  const parts = traceparentFormat.exec(traceparent);
  if (!parts || parts[1] === 'ff' || parts[2] === zeroTraceId || parts[3] === zeroSpanId) return undefined;
  return typeof tracestate === 'string' && tracestateFormat.test(tracestate) && tracestate.trim() !== ''
    ? { traceparent, tracestate }
    : { traceparent };
}

let provider: (TracerProvider & { shutdown?(): Promise<void> }) | undefined;
let tracer: Tracer | undefined;

/**
 * Whether spans are recorded. Off (no exporter configured) every instrumented
 * path checks this one flag and does nothing else.
 */
export const tracingOn = (): boolean => tracer !== undefined;

/** Records spans through `provider` from now on (`startTracing` does this with the OTLP exporter). */
export function useTracerProvider(tracerProvider: TracerProvider & { shutdown?(): Promise<void> }): void {
  provider = tracerProvider;
  tracer = tracerProvider.getTracer('users-service');
}

/** Exports the spans still buffered and turns tracing off; never rejects, waits at most `timeoutMs`. */
export async function stopTracing(timeoutMs = 5000): Promise<void> {
  const stopping = provider;
  provider = undefined;
  tracer = undefined;
  trace.disable();
  if (!stopping?.shutdown) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    stopping.shutdown().catch(() => {}),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs).unref())),
  ]);
  clearTimeout(timer);
}

/**
 * Starts the OpenTelemetry SDK for a role when an OTLP endpoint is configured
 * (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, not
 * `OTEL_SDK_DISABLED=true`). Otherwise the SDK is not even loaded and tracing
 * stays off. The service name defaults to `users-<role>` (`OTEL_SERVICE_NAME`
 * overrides it); the other standard `OTEL_*` variables reach the SDK as usual.
 */
export async function startTracing(role: string): Promise<void> {
  const { env } = process;
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!endpoint || env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return;
  if (!/^https?:\/\//i.test(endpoint) || !URL.canParse(endpoint)) {
    const field = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ? 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT' : 'OTEL_EXPORTER_OTLP_ENDPOINT';
    throw new ConfigError([{ field, message: 'must be an http(s) URL, e.g. http://127.0.0.1:4318' }]);
  }
  const { otlpTracerProvider } = await import('./tracing-sdk.js');
  useTracerProvider(otlpTracerProvider(`users-${role}`));
}

function spanContextOf(context: TraceContext): SpanContext {
  const [, traceId, spanId, flags] = context.traceparent.split('-') as [string, string, string, string];
  return {
    traceId,
    spanId,
    traceFlags: Number.parseInt(flags, 16),
    isRemote: true,
    ...(context.tracestate ? { traceState: createTraceState(context.tracestate) } : {}),
  };
}

/** The context a span hands on: its own `traceparent`, and the `tracestate` it carries. */
export function traceContextOfSpan(span: Span): TraceContext {
  const { traceId, spanId, traceFlags, traceState } = span.spanContext();
  const traceparent = `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, '0')}`;
  const tracestate = traceState?.serialize();
  return tracestate ? { traceparent, tracestate } : { traceparent };
}

/**
 * Starts a span; call it only when `tracingOn()`. A child of `parent` when one
 * is given, else a new trace (never of whatever happens to be active). `links`
 * are the contexts of the messages a batch span handles, each linked once.
 */
export function startSpan(
  name: string,
  options: { kind: SpanKind; parent?: TraceContext | undefined; links?: Iterable<TraceContext | undefined>; attributes?: Attributes },
): Span {
  if (!tracer) throw new Error('startSpan called with tracing off');
  const links: Link[] = [];
  if (options.links) {
    const seen = new Set<string>();
    for (const link of options.links) {
      if (!link || seen.has(link.traceparent)) continue;
      seen.add(link.traceparent);
      links.push({ context: spanContextOf(link) });
    }
  }
  const parent = options.parent ? trace.setSpanContext(ROOT_CONTEXT, spanContextOf(options.parent)) : ROOT_CONTEXT;
  return tracer.startSpan(name, { kind: options.kind, links, ...(options.attributes ? { attributes: options.attributes } : {}) }, parent);
}

/** Marks a span failed with the error that ended its work. */
export function failSpan(span: Span, error: unknown): void {
  const failure = error instanceof Error ? error : new Error(String(error));
  span.recordException(failure);
  span.setStatus({ code: SpanStatusCode.ERROR, message: failure.message });
  span.setAttribute('error.type', failure.name);
}

/** `work`, ending `span` when it settles (failed, if it rejects); `work` itself when there is no span. */
export function endingSpan<T>(span: Span | undefined, work: Promise<T>): Promise<T> {
  if (!span) return work;
  return work.then(
    (value) => {
      span.end();
      return value;
    },
    (error: unknown) => {
      failSpan(span, error);
      span.end();
      throw error;
    },
  );
}
