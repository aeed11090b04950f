import { SpanKind, SpanStatusCode, type Span } from '@opentelemetry/api';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { startSpan, traceContextOf, traceContextOfSpan, tracingOn, type TraceContext } from './tracing.js';

const serverSpans = new WeakMap<object, Span>();

/**
 * Every answer names its request (`x-request-id`: the caller's own id when it
 * sent a sane one, see `genReqId`). With tracing on, each request is a server
 * span, a child of the caller's `traceparent` when it sent a well-formed one
 * (a malformed one is ignored, never refused). Tracing is decided when the app
 * is built: off, the only work per request is the header.
 */
export function addRequestContext(app: FastifyInstance): void {
  app.addHook('onRequest', (request, reply, done) => {
    void reply.header('x-request-id', request.id);
    done();
  });
  if (!tracingOn()) return;
  app.addHook('onRequest', (request, _reply, done) => {
    if (!isProbe(request.routeOptions.url)) serverSpans.set(request, serverSpanOf(request));
    done();
  });
  app.addHook('onResponse', (request, reply, done) => {
    endServerSpan(request, reply);
    done();
  });
  app.addHook('onRequestAbort', (request, done) => {
    const span = serverSpans.get(request);
    span?.setAttribute('error.type', 'aborted');
    endServerSpan(request, undefined);
    done();
  });
}

/** Probes and scrapes come every few seconds and say nothing about the work: they are not traced. */
const isProbe = (route: string | undefined) => route !== undefined && (route === '/metrics' || route === '/health' || route.startsWith('/health/'));

function serverSpanOf(request: FastifyRequest): Span {
  const route = request.routeOptions.url;
  const path = request.url.split('?', 1)[0]!;
  return startSpan(route ? `${request.method} ${route}` : request.method, {
    kind: SpanKind.SERVER,
    parent: traceContextOf(request.headers.traceparent, request.headers.tracestate),
    attributes: {
      'http.request.method': request.method,
      'url.path': path,
      'url.scheme': request.protocol,
      'users.request.id': request.id,
      ...(route ? { 'http.route': route } : {}),
    },
  });
}

function endServerSpan(request: FastifyRequest, reply: FastifyReply | undefined): void {
  const span = serverSpans.get(request);
  if (!span) return;
  serverSpans.delete(request);
  if (reply) {
    span.setAttribute('http.response.status_code', reply.statusCode);
    // A 4xx is the caller's mistake, not a failure of the server (OpenTelemetry HTTP conventions).
    if (reply.statusCode >= 500) {
      span.setAttribute('error.type', String(reply.statusCode));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
  }
  span.end();
}

/**
 * The trace context a request hands on to the work it causes (the events of a
 * write): its server span when tracing is on, else the caller's well-formed
 * `traceparent` and `tracestate`, passed through unchanged.
 */
export function requestTraceContext(request: { headers: { [name: string]: unknown } }): TraceContext | undefined {
  const span = serverSpans.get(request);
  return span ? traceContextOfSpan(span) : traceContextOf(request.headers.traceparent, request.headers.tracestate);
}
