import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';

/**
 * The SDK behind `startTracing`, loaded only when tracing is configured: spans
 * batched to an OTLP/HTTP endpoint. The exporter, sampler, limits and batching
 * read their standard `OTEL_*` variables; `OTEL_SERVICE_NAME` and
 * `OTEL_RESOURCE_ATTRIBUTES` take precedence over the role's default name.
 */
export function otlpTracerProvider(serviceName: string): NodeTracerProvider {
  const resource = defaultResource()
    .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }))
    .merge(detectResources({ detectors: [envDetector] }));
  const provider = new NodeTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())] });
  // The W3C propagator and an async context manager, for anything else that uses the global API.
  provider.register();
  return provider;
}
