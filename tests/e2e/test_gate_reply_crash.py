"""kill -9 of the API inside a gate reply (fault point ``gate.reply_recorded``): the reply's transaction never
commits, the client's retry after the restart is ledgered once, and the run goes on."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import sqlalchemy as sa

from helpers import oracle_violations, wait_until
from processes import KodoProcess


def _interactions(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM app.human_interactions")).scalar_one())


def test_kill_inside_a_reply_loses_it_whole_and_the_retry_lands_once(
    spawn: Callable[..., KodoProcess], engine: sa.Engine
) -> None:
    """The killed reply wrote nothing; after restart the same approval is accepted, ledgered once, run SUCCESS."""
    up = spawn("up", KODO_FAULT_POINTS="gate.reply_recorded:kill")
    base = f"http://127.0.0.1:{up.port}"  # type: ignore[attr-defined]
    intent = httpx.post(f"{base}/api/intents", json={"goal": "gate", "inputs": {}, "constraints": {}}).json()
    wid = intent["intentId"]
    assert httpx.post(f"{base}/api/runs", json={"intentId": wid, "queuePartitionKey": "g"}).status_code == 201
    wait_until(lambda: httpx.get(f"{base}/api/runs/{wid}").json()["status"] == "WAITING_INPUT", what="parked")
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{base}/api/runs/{wid}/approve-plan", json={"approvedBy": "po"}, timeout=30)
    up.wait_killed(30)
    assert _interactions(engine) == 0
    up.restart_unarmed()
    assert httpx.post(f"{base}/api/runs/{wid}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    wait_until(lambda: httpx.get(f"{base}/api/runs/{wid}").json()["status"] == "SUCCESS", timeout=60, what="SUCCESS")
    assert _interactions(engine) == 1
    with engine.connect() as conn:
        assert oracle_violations(conn) == {}
