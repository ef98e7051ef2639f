"""Traces: OTLP/HTTP export set up once per process, the current span's ids, spans of our own and trace links.

With ``DBOS_ENABLE_OTLP=true`` kodo makes sure the process has an SDK tracer provider (an existing one is
kept and used; otherwise one is created with ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``) and adds
one batch exporter per traces endpoint. DBOS's own spans (workflows, steps, transactions) go through the
same provider, so kodo hands DBOS no endpoints of its own (it would add a second exporter). Spans leave
the process in batches: :func:`flush` pushes them out, and every process calls it on its way down
(``DBOS.destroy`` does not).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from kodo.database import redacted_url
from kodo.settings import Settings

log = structlog.get_logger("kodo.telemetry")
TRACER = "kodo"
# (id of the provider, endpoint) pairs that already have an exporter: set-up is idempotent per process.
_EXPORTING: set[tuple[int, str]] = set()


def _resource_attributes(settings: Settings) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in (settings.otel_resource_attributes or "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            found[key.strip()] = value.strip()
    found["service.name"] = settings.otel_service_name or found.get("service.name") or settings.app_name
    return found


def configure(settings: Settings) -> bool:
    """Start exporting spans when ``DBOS_ENABLE_OTLP`` is on; returns whether tracing is on."""
    if not settings.dbos_enable_otlp:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        provider = TracerProvider(resource=Resource.create(_resource_attributes(settings)))
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
    add = getattr(provider, "add_span_processor", None)
    if add is None:
        log.warning("tracer provider is not an SDK provider: export is left to it", provider=type(provider).__name__)
        return True
    for endpoint in settings.otlp_traces_endpoints:
        key = (id(provider), endpoint)
        if key not in _EXPORTING:
            add(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=1000))
            _EXPORTING.add(key)
    log.info("exporting traces", endpoints=[redacted_url(url) for url in settings.otlp_traces_endpoints])
    return True


def flush(timeout_ms: int = 5000) -> bool:
    """Push every finished span out now (a no-op without an SDK provider)."""
    force = getattr(trace.get_tracer_provider(), "force_flush", None)
    return bool(force(timeout_ms)) if callable(force) else True


def ids(span: Span | None = None) -> tuple[str | None, str | None]:
    """(trace id, span id) of ``span`` (default: the current one) as hex, or (None, None) outside a trace."""
    context = (span or trace.get_current_span()).get_span_context()
    if not context.is_valid:
        return None, None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def annotate(**attributes: Any) -> None:
    """Set attributes on the current span (skipped when nothing records)."""
    span = trace.get_current_span()
    if span.is_recording():
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)


@contextmanager
def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Iterator[Span]:
    """A span of kodo's own (an external call, an HTTP request) under the current one."""
    tracer = trace.get_tracer(TRACER)
    clean = {key: value for key, value in attributes.items() if value is not None}
    with tracer.start_as_current_span(name, kind=kind, attributes=clean) as current:
        yield current


def current_context() -> otel_context.Context | None:
    """The current context when it holds a valid span (what a child workflow should join), else None."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    return otel_context.get_current()


def context_from_traceparent(traceparent: str | None) -> otel_context.Context | None:
    """A context whose parent is the W3C ``traceparent`` given (e.g. a run's stored one), or None."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id inside a W3C ``traceparent`` (``00-<trace>-<span>-<flags>``)."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def trace_link(template: str | None, trace_id: str | None, span_id: str | None = None) -> str | None:
    """``TRACE_BASE_URL`` made concrete: ``{traceId}``/``{spanId}`` replaced (URL-encoded, a missing span id is
    empty), else ``<base>/<traceId>``. No template or no trace id: no link."""
    if not template or not trace_id:
        return None
    if "{traceId}" in template or "{spanId}" in template:
        link = template.replace("{traceId}", quote(trace_id, safe=""))
        return link.replace("{spanId}", quote(span_id or "", safe=""))
    return f"{template.rstrip('/')}/{quote(trace_id, safe='')}"
