"""What ``kodo otlp smoke`` (``kodo.cli.otlp``) runs, and the small OTLP/HTTP sink it (and the tests) listen with.

The sink is a loopback HTTP server that decodes OTLP/HTTP protobuf trace exports into plain dicts. The
smoke checks the exporter path end to end: a probe span must be accepted by the endpoint (hard failure
when nothing answers), then one real run (replay agent, mock sandbox, plan auto-approved) must leave
trace and span ids on every step row, and — when the sink is kodo's own — its spans must have arrived
in one trace. The run goes out under an application version of the smoke's own, so only the smoke's
worker dequeues it even when other kodo workers share the database.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sqlalchemy as sa

from kodo.settings import Settings


def _hex(raw: bytes) -> str:
    return raw.hex()


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


@dataclass
class OtlpSink:
    """An OTLP/HTTP receiver on 127.0.0.1 that keeps every span it is sent (``spans``, newest last)."""

    port: int = 0
    spans: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_endpoint(self) -> str:
        return f"{self.url}/v1/traces"

    def start(self) -> OtlpSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if 0 < length <= 64 * 1024 * 1024 else b""
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path.rstrip("/").endswith("/v1/traces"):
                    sink._receive(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="otlp-sink", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _receive(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        {
                            "name": span.name,
                            "traceId": _hex(span.trace_id),
                            "spanId": _hex(span.span_id),
                            "parentSpanId": _hex(span.parent_span_id) or None,
                            "kind": span.kind,
                            "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                            "scope": scope_spans.scope.name,
                            "service": resource.get("service.name"),
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                        }
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(found)

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.spans if s["traceId"] == trace_id]


def probe(endpoint: str) -> bool:
    """Export one span synchronously to ``endpoint``; False when it is not accepted (nothing listening…)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    outcome: list[SpanExportResult] = []

    class Recording(SpanExporter):
        def __init__(self) -> None:
            self.inner = OTLPSpanExporter(endpoint=endpoint, timeout=5)

        def export(self, spans: Any) -> SpanExportResult:
            result = self.inner.export(spans)
            outcome.append(result)
            return result

        def shutdown(self) -> None:
            self.inner.shutdown()  # type: ignore[no-untyped-call]

    provider = TracerProvider()  # private: the probe must not touch the process's own provider
    provider.add_span_processor(SimpleSpanProcessor(Recording()))
    with provider.get_tracer("kodo.otlp.smoke").start_as_current_span("kodo.otlp.probe"):
        pass
    provider.shutdown()
    return bool(outcome) and outcome[0] == SpanExportResult.SUCCESS


def smoke_run(settings: Settings, engine: sa.Engine, timeout_s: float = 60.0) -> dict[str, Any]:
    """Start one auto-approved run under a root span, wait for it, flush; returns what the steps recorded."""
    from kodo import telemetry
    from kodo.identity import new_intent_id
    from kodo.main import dbos_client
    from kodo.models import Intent
    from kodo.store import intents, runs, steps
    from kodo.workflows.queue_policy import admit
    from kodo.workflows.runs import start_run

    client = dbos_client(settings, engine)
    try:
        with telemetry.span("kodo otlp smoke") as root, engine.begin() as conn:
            intent = Intent(id=new_intent_id(), goal="otlp smoke", inputs={}, constraints={}, connectors=None)
            intents.create(conn, intent)
            start = admit(conn, settings, intent.id, {"queuePartitionKey": "otlp-smoke", "autoApprove": True})
            run, _replay = start_run(conn, client, settings, start)
        trace_id, _span_id = telemetry.ids(root)
        deadline = time.monotonic() + timeout_s
        status: str = run.status
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                current = runs.get(conn, run.id)
            status = current.status if current else "missing"
            if status in {"succeeded", "failed", "canceled", "retries_exceeded"}:
                break
            time.sleep(0.1)
        with engine.connect() as conn:
            rows = [
                {"stepId": s.step_id, "attempt": s.attempt, "traceId": s.trace_id, "spanId": s.span_id}
                for s in steps.list_for_run(conn, run.id)
            ]
    finally:
        client.destroy()
    telemetry.flush()
    return {"runId": run.id, "workflowID": run.workflow_id, "status": status, "traceId": trace_id, "steps": rows}
