"""kill -9 between a live agent call's reservation and its settlement: recovery settles it, nothing stays held."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from helpers import oracle_violations, wait_until
from kodo.adapters.agent.fake_model import FakeModelServer
from processes import KodoProcess

BUDGET = {"maxFanout": 10, "maxSBXMinutes": 5, "maxArtifactsMB": 100, "maxRetriesPerStep": 1, "maxWallClockMS": 600_000}


@pytest.fixture
def fake_model() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


def holds(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT state, count(*) FROM app.spend_reservations GROUP BY state")).all()
    return {str(state): int(count) for state, count in rows}


def test_kill_9_between_reserve_and_settle_leaves_no_reservation_behind(
    spawn: Callable[..., KodoProcess], engine: sa.Engine, fake_model: FakeModelServer
) -> None:
    """The worker dies holding CompileST's reservation; after restart the call is made once, settled, and the
    run finishes within its maxCostUsd with the ledger's sum equal to the header's spend."""
    live = {
        "OC_MODE": "live",
        "OC_PROVIDER": "openai",
        "OC_STRICT_MODE": "true",
        "OPENAI_BASE_URL": fake_model.base_url,
        "OPENAI_MODEL": "kodo-fake",
    }
    up = spawn("up", KODO_FAULT_POINTS="spend.between_reserve_and_settle:kill", **live)
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    goal = {"goal": "crash kodo-fake: usage=1000x500", "inputs": {}, "constraints": {}}
    wid = httpx.post(f"{base}/api/intents", json=goal).json()["intentId"]
    body = {"intentId": wid, "queuePartitionKey": "crash", "autoApprove": True, "budget": {**BUDGET, "maxCostUsd": 1}}
    assert httpx.post(f"{base}/api/runs", json=body).status_code == 201
    up.wait_killed(60)  # the armed fault point killed it (SIGKILL)
    assert holds(engine) == {"reserved": 1}
    assert not fake_model.completions()  # died before the call
    up.restart_unarmed()
    wait_until(lambda: httpx.get(f"{base}/api/runs/{wid}").json()["status"] == "SUCCESS", timeout=60, what="SUCCESS")
    assert holds(engine) == {"settled": 2}
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT sum(cost_usd), count(*) FROM app.opencode_calls")).one()
        assert oracle_violations(conn) == {}
    assert total[1] == 2 and total[0] == Decimal("0.004")
    assert httpx.get(f"{base}/api/runs/{wid}").json()["spend"]["costUsd"] == float(total[0])
    assert len(fake_model.completions()) == 2  # each call made once
