"""OpenTelemetry set-up and W3C trace-context propagation.

``traceparent``/``tracestate`` ride as NATS headers and as gRPC metadata; the same
two helpers serve both, since both carriers are plain string mappings.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

_provider: TracerProvider | None = None


def setup_telemetry(
    service: str,
    otlp_endpoint: str | None = None,
    *,
    exporter: SpanExporter | None = None,
    export_delay_ms: int = 500,
) -> TracerProvider:
    """Installs the global tracer provider for this process.

    Spans go to ``exporter`` when given, else over OTLP/gRPC to ``otlp_endpoint``
    when that is set, else nowhere (spans still exist, so trace ids still
    propagate and show in logs).
    """
    global _provider
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is None and otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=export_delay_ms))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_telemetry() -> None:
    """Flushes and stops the exporter, so no span is lost at shutdown."""
    if _provider is not None:
        _provider.force_flush(5_000)
        _provider.shutdown()


def inject_context(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Writes the current trace context (``traceparent``, ``tracestate``) into ``carrier``."""
    inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """Reads a trace context from ``carrier``; an empty context when it has none."""
    return extract(dict(carrier or {}))


def current_trace_id() -> str:
    """The current trace id as 32 hex digits, or an empty string outside any span."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
