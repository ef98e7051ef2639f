"""Run-change notifications: the ``app.runs`` trigger, the API's listener, and the header's long-poll on them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import table_counts, wait_status
from kodo.api.deps import ApiContext
from kodo.api.run_changes import CHANNEL, RunChanges
from kodo.database import libpq_url
from kodo.main import Worker, create_app, dbos_client
from kodo.settings import Settings

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}


def _start(client: TestClient, goal: str, **fields: object) -> str:
    intent = client.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": {}})
    assert intent.status_code == 201, intent.text
    wid = str(intent.json()["intentId"])
    started = client.post("/api/runs", json={"intentId": wid, "queuePartitionKey": "changes", **fields})
    assert started.status_code == 201, started.text
    return wid


def _notifications(url: str, statement: str, params: dict[str, object]) -> list[str]:
    """Run ``statement`` on its own connection and return the ``kodo_run_changed`` payloads it caused."""
    with psycopg.connect(libpq_url(url), autocommit=True) as listen, psycopg.connect(libpq_url(url)) as write:
        listen.execute(f"LISTEN {CHANNEL}")
        write.execute(statement, params)
        write.commit()
        return [note.payload for note in listen.notifies(timeout=1.0)]


def test_a_run_row_change_notifies_its_id_status_and_workflow_id(client: TestClient, settings: Settings) -> None:
    """A real change of a run row sends '<run id> <status> <workflow id>'; an UPDATE that changes nothing sends none."""
    assert settings.database_url is not None
    wid = _start(client, "notify me", autoApprove=True)
    run = wait_status(client, wid, TERMINAL)
    assert run["status"] == "SUCCESS"
    touch = "UPDATE app.runs SET updated_at = clock_timestamp() WHERE id = %(id)s"
    touched = _notifications(settings.database_url, touch, {"id": run["runId"]})
    assert touched == [f"{run['runId']} succeeded {wid}"]
    unchanged = _notifications(
        settings.database_url, "UPDATE app.runs SET status = status WHERE id = %(id)s", {"id": run["runId"]}
    )
    assert unchanged == []


def test_the_header_long_polls_to_the_gate_then_to_the_end(client: TestClient) -> None:
    """?until=input answers once the run waits for its plan approval; ?until=end once it has succeeded."""
    wid = _start(client, "long poll")
    waiting = client.get(f"/api/runs/{wid}", params={"until": "input", "timeoutS": "30"})
    assert waiting.status_code == 200
    assert waiting.json()["status"] == "WAITING_INPUT" and waiting.json()["nextAction"] == "APPROVE_PLAN"
    assert client.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    done = client.get(f"/api/runs/{wid}", params={"until": "end", "timeoutS": "30"})
    assert done.status_code == 200 and done.json()["status"] == "SUCCESS"
    again = client.get(f"/api/runs/{done.json()['runId']}", params={"until": "input"})  # ended: at once, by run id
    assert again.json()["status"] == "SUCCESS"


def test_a_long_poll_answers_at_its_timeout_with_the_header_as_it_is(client: TestClient) -> None:
    """A run parked at its gate, polled ?until=end&timeoutS=1, comes back WAITING_INPUT after a second."""
    wid = _start(client, "parked")
    wait_status(client, wid, {"WAITING_INPUT"})
    began = time.monotonic()
    parked = client.get(f"/api/runs/{wid}", params={"until": "end", "timeoutS": "1"})
    assert parked.status_code == 200 and parked.json()["status"] == "WAITING_INPUT"
    assert time.monotonic() - began >= 1.0
    immediate = client.get(f"/api/runs/{wid}", params={"until": "end", "timeoutS": "0"})
    assert immediate.json()["status"] == "WAITING_INPUT"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("timeoutS=5", "timeoutS needs until"),
        ("until=soon", "until must be one of: input, end"),
        ("until=end&timeoutS=31", "timeoutS must be an integer from 0 to 30"),
        ("until=end&timeoutS=-1", "timeoutS must be an integer from 0 to 30"),
        ("until=end&timeoutS=1.5", "timeoutS must be an integer from 0 to 30"),
        ("until=end&wait=1", "unknown query parameter(s): wait"),
        ("until=end&until=input", "repeated query parameter(s): until"),
    ],
)
def test_a_malformed_long_poll_is_a_400_that_writes_nothing(
    client: TestClient, engine: sa.Engine, query: str, message: str
) -> None:
    """Every bad until/timeoutS (or an unknown parameter) is a 400 naming the problem, with no row written."""
    with engine.connect() as conn:
        before = table_counts(conn)
    response = client.get(f"/api/runs/anything?{query}")
    assert response.status_code == 400 and message in response.json()["error"]
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_a_long_poll_on_an_unknown_run_is_a_404(client: TestClient) -> None:
    """An unknown run is a 404 at once, long-poll or not."""
    assert client.get("/api/runs/nope", params={"until": "end", "timeoutS": "30"}).status_code == 404


@pytest.fixture
def unwoken(settings: Settings, engine: sa.Engine, worker: Worker) -> Iterator[TestClient]:
    """The monolith's API with no run-change listener: its waits re-read on a timer."""
    dbos = dbos_client(settings, engine)
    app = create_app(ApiContext(settings=settings, engine=engine, client=dbos, role="monolith"))
    with TestClient(app, base_url="http://127.0.0.1") as http:
        yield http
    dbos.destroy()


def test_without_a_listener_a_long_poll_still_sees_the_run_get_there(unwoken: TestClient) -> None:
    """With no notifications, the long-poll falls back to re-reading and still answers at the gate and the end."""
    wid = _start(unwoken, "no listener")
    waiting = unwoken.get(f"/api/runs/{wid}", params={"until": "input", "timeoutS": "30"})
    assert waiting.json()["status"] == "WAITING_INPUT"
    assert unwoken.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    assert unwoken.get(f"/api/runs/{wid}", params={"until": "end", "timeoutS": "30"}).json()["status"] == "SUCCESS"


def test_a_watch_wakes_only_for_a_wanted_status_and_on_a_lost_connection(settings: Settings) -> None:
    """A notification for an unwanted status leaves the watch asleep, a wanted one wakes it, by run or workflow
    id; a killed LISTEN connection wakes every watch, and the listener reconnects."""
    assert settings.database_url is not None
    url = settings.database_url
    changes = RunChanges(url).start()

    def notify(payload: str) -> None:
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    async def scenario() -> None:
        with (
            changes.watch("run_1", lambda status: status == "succeeded") as by_run,
            changes.watch("wf-1") as by_workflow,
        ):
            assert changes.watching() == 2
            await asyncio.to_thread(notify, "run_1 running wf-1")
            assert await by_workflow.wait(5.0) is True  # no filter: any change
            assert await by_run.wait(0.3) is False  # running is not wanted
            await asyncio.to_thread(notify, "run_1 succeeded wf-1")
            assert await by_run.wait(5.0) is True
            await asyncio.to_thread(notify, "run_2 succeeded wf-2")
            assert await by_run.wait(0.3) is False  # someone else's run
            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (changes.listener.backend_pid,))
            assert await by_run.wait(5.0) is True and await by_workflow.wait(5.0) is True
        assert changes.watching() == 0

    try:
        assert changes.listener.listening
        asyncio.run(scenario())
        deadline = time.monotonic() + 10
        while not (changes.listener.listening and changes.listener.connections == 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert changes.listener.connections == 2 and changes.listener.listening
    finally:
        changes.stop()
    assert not changes.listener.listening
