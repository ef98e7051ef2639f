"""``kodo otlp smoke`` and the small OTLP/HTTP sink it (and the tests) listen with.

The sink is a loopback HTTP server that decodes OTLP/HTTP protobuf trace exports into plain dicts. The
smoke checks the exporter path end to end: a probe span must be accepted by the endpoint (hard failure
when nothing answers), then one real run (replay agent, mock sandbox, plan auto-approved) must leave
trace and span ids on every step row, and — when the sink is kodo's own — its spans must have arrived
in one trace. The run goes out under an application version of the smoke's own, so only the smoke's
worker dequeues it even when other kodo workers share the database.
"""

from __future__ import annotations

import gzip
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click
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


# --- the command ---------------------------------------------------------------------------------


@click.group()
def otlp() -> None:
    """Traces: check OTLP export end to end."""


@otlp.command("smoke")
@click.option("--sink/--no-sink", default=None, help="Start a loopback OTLP sink (default: when no endpoint is set).")
@click.option("--port", default=4318, show_default=True, help="The sink's port on 127.0.0.1 (0: any free port).")
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, help="Seconds to wait for the run.")
def smoke(sink: bool | None, port: int, timeout_s: float) -> None:
    """Probe the traces endpoint (exit 1 when nothing accepts a span), then run one auto-approved replay/mock
    run in this process's own worker and check that every step recorded trace and span ids — and, with the
    sink, that its spans arrived as one trace."""
    import os
    import secrets

    from kodo import logs, telemetry
    from kodo.errors import KodoError
    from kodo.main import launch_worker, prepare_database
    from kodo.settings import load_settings

    try:
        settings = load_settings()
    except KodoError as error:
        raise click.ClickException(error.message) from error
    logs.configure(settings.log_level)
    receiver = OtlpSink(port=port).start() if sink or (sink is None and not settings.otlp_traces_endpoints) else None
    overrides: dict[str, Any] = {
        "dbos_enable_otlp": True,
        "oc_mode": "replay",
        "sbx_mode": "mock",
        "scheduled_tick_cron": "off",
        "executor_id": f"otlp-smoke-{os.getpid()}",
        # Its own application version: another kodo worker on this database (without OTLP) dequeues only
        # its own version, so it cannot take the smoke's run off the shared queue and fail the check.
        "app_version": f"otlp-smoke-{os.getpid()}-{secrets.token_hex(4)}",
    }
    if receiver is not None:
        overrides["otel_exporter_otlp_traces_endpoint"] = receiver.traces_endpoint
    settings = settings.model_copy(update=overrides)
    try:
        for endpoint in settings.otlp_traces_endpoints:
            if not probe(endpoint):
                click.echo(f"probe: FAIL {endpoint} did not accept a span (is a collector listening?)")
                sys.exit(1)
            click.echo(f"probe: OK {endpoint} accepted a span")
        telemetry.configure(settings)
        url, engine = prepare_database(settings)
        worker = launch_worker(settings, url, engine, "worker")
        try:
            result = smoke_run(settings, engine, timeout_s)
        finally:
            worker.stop()
            engine.dispose()
        sys.exit(_verdict(result, receiver))
    finally:
        if receiver is not None:
            receiver.stop()


def _verdict(result: dict[str, Any], receiver: OtlpSink | None) -> int:
    steps = result["steps"]
    traced = [s for s in steps if s["traceId"] and s["spanId"]]
    one_trace = {s["traceId"] for s in traced} == {result["traceId"]}
    good = result["status"] == "succeeded" and len(steps) == 4 and len(traced) == 4 and one_trace
    click.echo(
        f"run: {result['runId']} {result['status']} trace {result['traceId']} "
        f"({len(steps)} steps, {len(traced)} with trace and span ids{', one trace' if one_trace else ''}) "
        f"{'OK' if good else 'FAIL'}"
    )
    if receiver is None or not good:
        return 0 if good else 1
    deadline = time.monotonic() + 10
    spans = receiver.trace(result["traceId"])
    wanted = {s["spanId"] for s in traced}
    while not wanted <= {s["spanId"] for s in spans} and time.monotonic() < deadline:
        time.sleep(0.2)
        spans = receiver.trace(result["traceId"])
    arrived = wanted <= {s["spanId"] for s in spans}
    roots = sorted(s["name"] for s in spans if s["parentSpanId"] is None)
    click.echo(f"sink: {len(spans)} spans in trace {result['traceId']}, roots {roots} {'OK' if arrived else 'FAIL'}")
    return 0 if arrived and roots == ["kodo otlp smoke"] else 1
