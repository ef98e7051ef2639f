"""Traces: one run's span tree as a local OTLP/HTTP sink receives it, step rows holding its ids, trace links."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, wait_status, wait_until
from kodo import telemetry
from kodo.otlp import OtlpSink
from kodo.settings import Settings

TEMPLATE = "https://trace.example/trace/{traceId}/span/{spanId}"


@pytest.fixture(scope="session")
def sink() -> Iterator[OtlpSink]:
    # One sink for the session: the process's tracer provider keeps one exporter per endpoint, and an exporter
    # whose endpoint is gone makes every later flush (each worker's stop) wait for its retries.
    server = OtlpSink().start()
    yield server
    server.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, sink: OtlpSink) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "home",
        DBOS_ENABLE_OTLP="true",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=sink.traces_endpoint,
        OTEL_SERVICE_NAME="kodo-test",
        TRACE_BASE_URL=TEMPLATE,
    )


def _start(client: TestClient, goal: str = "trace me") -> str:
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": {}}).json()["intentId"]
    body = {"intentId": intent, "queuePartitionKey": "p-trace", "autoApprove": True}
    started = client.post("/api/runs", json=body)
    assert started.status_code == 201, started.text
    return str(started.json()["workflowID"])


def _complete(sink: OtlpSink, trace_id: str, span_ids: list[str], sandbox_calls: int = 0) -> list[dict[str, Any]]:
    """The trace once every given span has arrived with its whole ancestry up to the request (workflow spans
    end after the run's status is written, so the test flushes until they are in)."""

    def check() -> list[dict[str, Any]] | None:
        telemetry.flush()
        spans = sink.trace(trace_id)
        by_id = {s["spanId"]: s for s in spans}
        wanted = [by_id.get(i) for i in span_ids] + [s for s in spans if s["name"] == "sandbox.run"]
        if any(s is None for s in wanted) or len(wanted) < len(span_ids) + sandbox_calls:
            return None
        chains = [_ancestors(s, by_id) for s in wanted if s is not None]
        return spans if all(c and c[-1].startswith("POST ") for c in chains) else None

    found: list[dict[str, Any]] = wait_until(check, timeout=20, interval=0.2, what=f"trace {trace_id}")
    return found


def _ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[str]:
    names = []
    while span.get("parentSpanId") in by_id:
        span = by_id[span["parentSpanId"]]
        names.append(span["name"])
    return names


def test_one_run_is_one_trace_from_request_to_sandbox(client: TestClient, engine: sa.Engine, sink: OtlpSink) -> None:
    """The start request's span roots the run's trace: workflow, every step (workflowID, step name, attempt)
    and each sandbox call hang under it, and app.run_steps holds the step spans' ids."""
    wid = _start(client)
    header = wait_status(client, wid, {"SUCCESS"})
    telemetry.flush()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT step_id, attempt, trace_id, span_id FROM app.run_steps WHERE run_id = :r"),
            {"r": header["runId"]},
        ).all()
        calls = conn.execute(sa.text("SELECT count(*) FROM app.sbx_runs WHERE run_id = :r"), {"r": header["runId"]})
        sandbox_calls = calls.scalar_one()
    assert {r.step_id for r in rows} == {"CompileST", "ApplyPatchST", "DecideST", "ExecuteST"}
    trace_ids = {r.trace_id for r in rows}
    assert len(trace_ids) == 1 and None not in trace_ids
    trace_id = trace_ids.pop()
    assert header["otelTraceId"] == trace_id
    spans = _complete(sink, trace_id, [r.span_id for r in rows], sandbox_calls)
    by_id = {s["spanId"]: s for s in spans}
    roots = [s for s in spans if s["parentSpanId"] is None]
    assert [r["name"] for r in roots] == ["POST /api/runs"]
    assert roots[0]["attributes"]["http.route"] == "/api/runs"
    assert roots[0]["service"] == "kodo-test"
    for row in rows:
        step_span = by_id[row.span_id]
        assert step_span["attributes"]["workflowID"] == wid
        assert step_span["attributes"]["step.name"] == row.step_id
        assert step_span["attributes"]["attempt"] == row.attempt
        assert "RunIntent" in _ancestors(step_span, by_id)
        assert _ancestors(step_span, by_id)[-1] == "POST /api/runs"
    sandbox = [s for s in spans if s["name"] == "sandbox.run"]
    assert len(sandbox) == sandbox_calls >= 1
    for call in sandbox:
        chain = _ancestors(call, by_id)
        assert chain[:2] == ["executeTask", "ExecuteTask"] and chain[-1] == "POST /api/runs"
        assert call["attributes"]["err_code"] == "NONE"
    assert header["traceUrl"] == f"https://trace.example/trace/{trace_id}/span/"


def test_step_rows_and_run_page_link_each_traced_step(client: TestClient) -> None:
    """GET /api/runs/{wid}/steps and the run page give every traced step a "View trace" link."""
    wid = _start(client, "link me")
    wait_status(client, wid, {"SUCCESS"})
    rows = client.get(f"/api/runs/{wid}/steps").json()
    assert rows and all(r["traceUrl"] == TEMPLATE.format(traceId=r["traceId"], spanId=r["spanId"]) for r in rows)
    page = client.get(f"/runs/{wid}/view").text
    assert page.count("View trace") == len(rows)
    assert f'href="{rows[0]["traceUrl"]}"' in page


def test_trace_links_follow_the_template_rules() -> None:
    """Placeholders are replaced URL-encoded (a missing span id is empty); a bare base gets /<traceId>."""
    assert telemetry.trace_link(TEMPLATE, "a/b", None) == "https://trace.example/trace/a%2Fb/span/"
    assert telemetry.trace_link("http://jaeger:16686/trace/", "abc", "def") == "http://jaeger:16686/trace/abc"
    assert telemetry.trace_link("http://x/{spanId}", "abc", "d e") == "http://x/d%20e"
    assert telemetry.trace_link(None, "abc") is None
    assert telemetry.trace_link(TEMPLATE, None) is None


def test_a_parked_runs_continuation_stays_on_its_trace(client: TestClient, engine: sa.Engine, sink: OtlpSink) -> None:
    """Approving the plan later (another request, another trace) resumes the run on the run's own trace."""
    intent = client.post("/api/intents", json={"goal": "park me", "inputs": {}, "constraints": {}}).json()
    started = client.post("/api/runs", json={"intentId": intent["intentId"], "queuePartitionKey": "p-trace"})
    wid = started.json()["workflowID"]
    wait_status(client, wid, {"WAITING_INPUT"})
    assert client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "me"}).status_code == 202
    header = wait_status(client, wid, {"SUCCESS"})
    telemetry.flush()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT step_id, trace_id, span_id FROM app.run_steps WHERE run_id = :r"), {"r": header["runId"]}
        ).all()
    assert {r.step_id for r in rows} == {"CompileST", "ApplyPatchST", "DecideST", "ExecuteST"}
    assert {r.trace_id for r in rows} == {header["otelTraceId"]}
    decide = next(r for r in rows if r.step_id == "DecideST")
    spans = _complete(sink, decide.trace_id, [r.span_id for r in rows])
    by_id = {s["spanId"]: s for s in spans}
    chain = _ancestors(by_id[decide.span_id], by_id)
    assert "ResumeRun" in chain and "RunIntent" in chain and chain[-1] == "POST /api/runs"


def test_an_existing_tracer_provider_is_kept(settings: Settings, sink: OtlpSink) -> None:
    """configure() never replaces a tracer provider the process already has; it adds its exporter once."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(TracerProvider())
    before = trace.get_tracer_provider()
    assert telemetry.configure(settings) and telemetry.configure(settings)
    assert trace.get_tracer_provider() is before
    processors = before._active_span_processor._span_processors  # type: ignore[attr-defined]
    endpoints = [getattr(getattr(p, "_exporter", None), "_endpoint", None) for p in processors]
    endpoints += [
        getattr(getattr(getattr(p, "_batch_processor", None), "_exporter", None), "_endpoint", None) for p in processors
    ]
    assert endpoints.count(sink.traces_endpoint) == 1


def test_an_agent_calls_span_carries_its_usage(client: TestClient, settings: Settings, sink: OtlpSink) -> None:
    """The agent call's span has the GenAI semantic-convention usage attributes (here: a replayed call's)."""
    import json

    from kodo.adapters.agent import PLAN_SCHEMA, AgentRequest, Usage
    from kodo.adapters.agent.replay import ReplayAgent
    from kodo.workflows.agents import compile_prompt

    goal = "trace my usage"
    prompt = compile_prompt({"goal": goal, "inputs": {}, "constraints": {}}, None)
    request = AgentRequest(run_id="-", step_id="CompileST", attempt=1, agent="plan", prompt=prompt, schema=PLAN_SCHEMA)
    sidecar = ReplayAgent(settings.home / "fixtures" / "agent").fixture_path(request).with_suffix(".usage.json")
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text(
        json.dumps(Usage(model="gpt-4o", input_tokens=1234, output_tokens=56, cached_tokens=7).as_json())
    )
    header = wait_status(client, _start(client, goal), {"SUCCESS"})

    def agent_span() -> dict[str, Any] | None:
        telemetry.flush()
        return next((s for s in sink.trace(header["otelTraceId"]) if s["name"] == "agent.plan"), None)

    span = wait_until(agent_span, timeout=20, interval=0.2, what="agent.plan span")
    attributes = span["attributes"]
    assert attributes["gen_ai.usage.input_tokens"] == 1234 and attributes["gen_ai.usage.output_tokens"] == 56
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 7
    assert attributes["gen_ai.response.model"] == "gpt-4o" and attributes["gen_ai.operation.name"] == "chat"
