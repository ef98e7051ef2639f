"""``kodo otlp smoke`` (own sink, and a dead endpoint) and the start-up refusals of issue #9: OTLP enabled
without an endpoint, a non-loopback host without tokens, a broken token table."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from kodo.cli import cli
from processes import KodoProcess, clean_env, run_cli

pytestmark = pytest.mark.slow


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_otlp_smoke_with_its_own_sink(database_url: str, tmp_path: Path) -> None:
    """With --sink the smoke probes it, runs one run whose four steps share its trace, and sees the spans."""
    env = clean_env(DATABASE_URL=database_url, KODO_HOME=str(tmp_path / "home"))
    done = run_cli(["otlp", "smoke", "--sink", "--port", "0"], env, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "probe: OK http://127.0.0.1:" in done.stdout
    assert "(4 steps, 4 with trace and span ids, one trace) OK" in done.stdout
    assert "roots ['kodo otlp smoke'] OK" in done.stdout


def test_otlp_smoke_fails_hard_without_a_collector(tmp_path: Path) -> None:
    """A traces endpoint nobody listens on: exit 1 and a FAIL line, before any database work."""
    endpoint = f"http://127.0.0.1:{closed_port()}/v1/traces"
    env = clean_env(KODO_HOME=str(tmp_path / "home"), OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint)
    done = run_cli(["otlp", "smoke"], env, timeout=60)
    assert done.returncode == 1
    assert f"probe: FAIL {endpoint} did not accept a span" in done.stdout
    assert not (tmp_path / "home" / "pg").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DBOS_ENABLE_OTLP": "true"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: DBOS_ENABLE_OTLP=true needs"),
        (
            {"DBOS_ENABLE_OTLP": "true", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://127.0.0.1:4317"},
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: not an http(s) URL: grpc://127.0.0.1:4317",
        ),
        ({"KODO_HOST": "0.0.0.0"}, "KODO_HOST=0.0.0.0 is not a loopback address: set KODO_API_TOKENS"),
        ({"KODO_API_TOKENS": "{not json"}, "KODO_API_TOKENS: not valid JSON"),
        ({"KODO_API_TOKENS": "/no/such/tokens.json"}, "KODO_API_TOKENS: cannot read token file /no/such/tokens.json"),
        ({"KODO_API_TOKENS": '[{"token": "short", "subject": "s", "tenant": "t", "role": "viewer"}]'}, "token entry 0"),
        ({"KODO_API_TOKENS": '[{"token": "0123456789abcdef", "subject": "s", "tenant": "t", "role": "root"}]'}, "role"),
    ],
    ids=[
        "otlp-no-endpoint",
        "otlp-not-http",
        "exposed-without-tokens",
        "tokens-bad-json",
        "tokens-no-file",
        "token-too-short",
        "unknown-role",
    ],
)
def test_bad_exposure_or_telemetry_settings_stop_start_up(
    env: dict[str, str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kodo api refuses to start, naming the variable, before it touches a database."""
    for key in list(os.environ):
        if key.startswith(("KODO_", "DBOS_", "OTEL_", "DATABASE_URL")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KODO_HOME", str(tmp_path / "home"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    done = CliRunner().invoke(cli, ["api"])
    assert done.exit_code == 1, done.output
    assert message in done.output
    assert not (tmp_path / "home" / "pg").exists()


def test_tokens_allow_serving_beyond_loopback() -> None:
    """With KODO_API_TOKENS set, a non-loopback KODO_HOST passes the exposure check."""
    from kodo.main import check_exposure
    from kodo.settings import load_settings

    spec = '{"tokens": [{"sha256": "' + "a" * 64 + '", "subject": "s", "tenant": "*", "role": "admin"}]}'
    check_exposure(load_settings({"KODO_HOST": "0.0.0.0", "KODO_API_TOKENS": spec}))
    check_exposure(load_settings({"KODO_HOST": "::1"}))


def test_otlp_smoke_runs_its_workflows_itself_beside_another_worker(
    spawn: Callable[..., KodoProcess], database_url: str, tmp_path: Path
) -> None:
    """Another kodo worker (no OTLP) on the same database takes none of the smoke's workflows: no false FAIL."""
    spawn("worker")
    env = clean_env(DATABASE_URL=database_url, KODO_HOME=str(tmp_path / "home"))
    done = run_cli(["otlp", "smoke", "--sink", "--port", "0"], env, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    with psycopg.connect(database_url) as conn:
        (wid,) = conn.execute("SELECT workflow_id FROM app.runs r JOIN app.intents i ON i.id = r.intent_id").fetchone()
        owners = conn.execute(
            "SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid = %s OR parent_workflow_id = %s",
            (wid, wid),
        ).fetchall()
    assert len(owners) >= 2 and all(owner.startswith("otlp-smoke-") for (owner,) in owners), owners
