"""``kodo otlp smoke``: check OTLP trace export end to end (the probe, the run and the sink of ``kodo.otlp``)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from kodo.otlp import OtlpSink


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
    from kodo.cli.context import command_settings
    from kodo.main import launch_worker, prepare_database
    from kodo.otlp import OtlpSink, probe, smoke_run

    settings = command_settings()
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
