"""Lanes and partitions on intentQ: interactive before queued batch, per-partition concurrency held."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from helpers import make_settings, wait_status, wait_until
from kodo.settings import Settings

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Per-partition intentQ limits from INTENT_QUEUE_*; every sandbox task takes CHAOS_SLEEP_EXECUTE ms."""
    slots, sleep = request.param
    return make_settings(
        database_url,
        tmp_path / "home",
        INTENT_QUEUE_WORKER_CONCURRENCY=str(slots),
        INTENT_QUEUE_CONCURRENCY=str(slots),
        CHAOS_SLEEP_EXECUTE=str(sleep),
    )


def start(client: TestClient, goal: str, partition: str, **opts: Any) -> str:
    payload = {
        "recipeRef": {"id": "compile-default", "v": "v1"},
        "formData": {"goal": goal},
        "opts": {"queuePartitionKey": partition, "autoApprove": True, **opts},
    }
    response = client.post("/api/run", json=payload)
    assert response.status_code == 201, response.text
    return str(response.json()["workflowID"])


def spans(engine: sa.Engine, wids: list[str]) -> dict[str, tuple[int, int, str, int]]:
    """workflow id → (dequeued at, finished at, partition, priority), from DBOS's own rows."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT workflow_uuid, started_at_epoch_ms, updated_at, queue_partition_key, priority "
                "FROM dbos.workflow_status WHERE workflow_uuid = ANY(:w)"
            ),
            {"w": wids},
        ).all()
    return {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}


def peak(intervals: list[tuple[int, int]]) -> int:
    edges = sorted([(start, 1) for start, _end in intervals] + [(end, -1) for _start, end in intervals])
    running = highest = 0
    for _at, change in edges:
        running += change
        highest = max(highest, running)
    return highest


@pytest.mark.parametrize("settings", [(1, 1000)], indirect=True)
def test_interactive_is_dequeued_before_queued_batch(client: TestClient, engine: sa.Engine) -> None:
    """With the partition's one slot busy, an interactive run enqueued after two batch runs starts first."""
    blocker = start(client, "blocker", "lanes", lane="batch")
    wait_until(lambda: spans(engine, [blocker]).get(blocker, (None,))[0], what="blocker dequeued")
    batch = [start(client, f"batch {n}", "lanes", lane="batch") for n in range(2)]
    interactive = start(client, "interactive", "lanes", lane="interactive")
    for wid in [blocker, *batch, interactive]:
        assert wait_status(client, wid, TERMINAL, timeout=60)["status"] == "SUCCESS"
    seen = spans(engine, [blocker, *batch, interactive])
    assert seen[interactive][3] == 1 and {seen[w][3] for w in batch} == {1000}
    order = sorted(seen, key=lambda wid: seen[wid][0])
    assert order == [blocker, interactive, *batch], order


@pytest.mark.parametrize("settings", [(2, 600)], indirect=True)
def test_partition_concurrency_is_held_and_partitions_run_side_by_side(client: TestClient, engine: sa.Engine) -> None:
    """INTENT_QUEUE_CONCURRENCY=2: never more than 2 running parents per partition, both partitions at once."""
    wids = [start(client, f"load {p} {n}", p) for p in ("team-a", "team-b") for n in range(4)]
    for wid in wids:
        assert wait_status(client, wid, TERMINAL, timeout=60)["status"] == "SUCCESS"
    seen = spans(engine, wids)
    by_partition: dict[str, list[tuple[int, int]]] = {}
    for dequeued, finished, partition, _priority in seen.values():
        by_partition.setdefault(partition, []).append((dequeued, finished))
    assert sorted(by_partition) == ["team-a", "team-b"]
    assert all(peak(intervals) <= 2 for intervals in by_partition.values()), by_partition
    assert peak([i for intervals in by_partition.values() for i in intervals]) >= 3
