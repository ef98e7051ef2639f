"""``kodo bench history`` at small scale: the seed is bounded and resumable, its clones are whole runs, queue
depth is counted by the trigger, and the hot reads answer through indexes (no sequential scan of the runs or
of DBOS's workflows). Timing is ``kodo bench history measure``'s job, not the suite's."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient

from helpers import statements_during, table_counts
from kodo.api.deps import ApiContext
from kodo.bench import history as bench
from kodo.cli.bench_history import history as history_command
from kodo.errors import InvalidInput
from kodo.settings import Settings
from kodo.store import history, oracles, queue_counts

BIG_TABLES = {"runs", "workflow_status"}


def _truth(conn: sa.Connection) -> list[tuple[str, str, int]]:
    rows = conn.execute(
        sa.text(
            "SELECT queue_name, status, count(*) FROM dbos.workflow_status "
            "WHERE queue_name IS NOT NULL AND status IN ('ENQUEUED', 'PENDING', 'DELAYED') "
            "GROUP BY queue_name, status ORDER BY queue_name, status"
        )
    )
    return [(row[0], row[1], int(row[2])) for row in rows]


def _counted(conn: sa.Connection) -> list[tuple[str, str, int]]:
    return [(row.queue_name, row.status, row.workflow_count) for row in queue_counts.counts(conn)]


def test_seed_is_bounded_and_resumable(client: TestClient, engine: sa.Engine) -> None:
    """A seed refuses sizes out of bounds writing nothing, adds only what is missing (again: nothing), and writes
    whole runs that the API reads like any other; queue depth's counts match a count of DBOS's rows."""
    with engine.connect() as conn:
        empty = table_counts(conn)
    for finished, parked in ((bench.MAX_FINISHED + 1, 0), (0, bench.MAX_PARKED + 1), (-1, 0)):
        with pytest.raises(InvalidInput):
            bench.seed(engine, client, finished=finished, parked=parked)
    with engine.connect() as conn:
        assert table_counts(conn) == empty

    first = bench.seed(engine, client, finished=300, parked=10, batch=128, starters=1)
    assert first["after"] == {"finished": 300, "parked": 10, "clones": 298}
    assert first["clonedRuns"] == 298 and first["startedParked"] == 10
    more = bench.seed(engine, client, finished=700, parked=25, batch=128, starters=1)
    assert more["before"] == first["after"]
    assert more["clonedRuns"] == 400 and more["startedParked"] == 15
    assert more["after"] == {"finished": 700, "parked": 25, "clones": 698}
    again = bench.seed(engine, client, finished=700, parked=25, batch=128, starters=1)
    assert again["clonedRuns"] == 0 and again["startedParked"] == 0 and again["after"] == more["after"]

    with engine.connect() as conn:
        shapes = conn.execute(
            sa.text(
                "SELECT r.queue_partition_key = :t AS template, count(DISTINCT r.id) AS runs, count(s.*) AS steps "
                "FROM app.runs r JOIN app.run_steps s ON s.run_id = r.id "
                "WHERE r.queue_partition_key = :t OR r.queue_partition_key = ANY(:clones) GROUP BY 1 ORDER BY 1"
            ),
            {"t": history.TEMPLATE_PARTITION, "clones": list(history.CLONE_PARTITIONS)},
        ).all()
        clone_wid = conn.execute(
            sa.text("SELECT workflow_id FROM app.runs WHERE queue_partition_key = 'hist-5' ORDER BY id LIMIT 1")
        ).scalar_one()
        assert oracles.violations(conn, dead_after_s=3600) == {}
        assert _counted(conn) == _truth(conn) and ("intentQ", "DELAYED", 25) in _counted(conn)
    # the two templates have 4 + 6 steps (auto-approved; parked, approved); each clone is one of them, in turn
    (clones, clone_runs, clone_steps), (template, template_runs, template_steps) = shapes
    assert not clones and template and (clone_runs, template_runs) == (698, 2)
    assert clone_steps == 349 * template_steps
    header = client.get(f"/api/runs/{clone_wid}").json()
    assert header["status"] == "SUCCESS" and header["queuePartitionKey"] == "hist-5"
    assert client.get(f"/api/runs/{clone_wid}/diagnosis").json()["code"] == "SUCCEEDED"
    with engine.begin() as conn:  # folding the rows of gone backends keeps every count
        queue_counts.compact(conn)
        assert _counted(conn) == _truth(conn)


def _plan(conn: sa.Connection, statement: str, parameters: Any, *, analyze: bool = False) -> dict[str, Any]:
    raw = conn.exec_driver_sql(
        f"EXPLAIN ({'ANALYZE, ' if analyze else ''}FORMAT JSON) {statement}", parameters
    ).scalar_one()
    return dict((raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"])


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _table(node: dict[str, Any]) -> str | None:
    """The big table a scan node reads (an index's table for an index scan), or None."""
    name = node.get("Relation Name") or ""
    index = node.get("Index Name") or ""
    if name in BIG_TABLES:
        return str(name)
    if index.startswith(("runs_", "workflow_status", "idx_workflow_status", "kodo_workflow_status")):
        return "workflow_status" if "workflow_status" in index else "runs"
    return None


def _examined(node: dict[str, Any]) -> float:
    """Rows a scan node read: the rows it returned and those its filter removed, over all its loops."""
    if node["Node Type"] not in {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"}:
        return 0.0
    loops = node.get("Actual Loops", 1)
    return float(node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops


def _captured(engine: sa.Engine, read: Callable[[], None], client: TestClient) -> list[tuple[str, Any]]:
    """The SELECTs over the runs or DBOS's workflows that ``read`` makes kodo run (on ``engine``, and on the
    API's event-loop connections, where the run header is read)."""
    context: ApiContext = client.app.state.kodo  # type: ignore[attr-defined]
    return [
        (statement, parameters)
        for statement, parameters in statements_during(engine, read, context.loop_reads)
        if statement.lstrip().upper().startswith(("SELECT", "WITH"))
        and ("app.runs" in statement or "dbos.workflow_status" in statement)
    ]


def test_hot_reads_use_indexes(client: TestClient, engine: sa.Engine) -> None:
    """Over a seeded history, each statement of the six hot reads reaches app.runs and dbos.workflow_status
    through an index that bounds what it reads (no sequential scan, and no walk of an index past rows its
    filter drops: at most 4 rows read per row answered, + 50). At this size the planner may still prefer a
    sequential scan, so it plans without one (a missing index shows all the same), with random reads priced
    as on an SSD. Queue depth reads no DELAYED workflow one by one; the inbox reads its gates' runs at once."""
    bench.seed(engine, client, finished=2000, parked=60, batch=1000, starters=1)
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE app.runs, app.human_gates, dbos.workflow_status"))
        wids = history.sample_workflows(conn)
    reads = bench.hot_reads(engine, wids)
    assert set(reads) == set(bench.READS)
    captured = {
        name: [s for k in range(3) for s in _captured(engine, partial(read, client, k), client)]
        for name, read in reads.items()
    }
    assert all(captured.values()), {name: len(found) for name, found in captured.items()}
    offenders = []
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        # random reads cost about what sequential ones do on a local SSD (and at 100,000 runs, where the
        # heap is no longer in order of creation); at Postgres' default of 4, a few thousand rows walked in
        # creation order look cheaper than the index that reads only the rows asked for
        conn.exec_driver_sql("SET LOCAL random_page_cost = 1.1")
        for name, statements in captured.items():
            for statement, parameters in statements:
                plan = _plan(conn, statement, parameters, analyze=True)
                scans = [node for node in _nodes(plan) if _table(node) in BIG_TABLES]
                examined = sum(_examined(node) for node in scans)
                seq = sorted({str(_table(node)) for node in scans if node["Node Type"] == "Seq Scan"})
                if seq or examined > 4 * plan.get("Actual Rows", 0) + 50:
                    offenders.append(f"{name}: sequential scan of {seq}, {examined} rows examined: {statement}")
    assert not offenders, "\n".join(offenders)
    with engine.connect() as conn:
        read_rows = sum(
            node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
            for statement, parameters in captured["queueDepth"]
            for node in _nodes(_plan(conn, statement, parameters, analyze=True))
            if node.get("Relation Name") == "workflow_status"
        )
    assert read_rows <= 12  # min and max of each (queue, status): not the 60 DELAYED continuations
    assert len(_captured(engine, partial(reads["inbox"], client, 0), client)) <= 2


def test_dbos_partition_listing_cannot_use_kodo_indexes(engine: sa.Engine) -> None:
    """DBOS's dequeue lists a queue's partitions (``min(queue_partition_key)`` of its rows in a status) under a
    generic plan; no index kodo adds to dbos.workflow_status may serve it (one led by the partition would
    walk every workflow row: the burst 20 % slower at 270,000 rows), even with sequential scans off."""
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        conn.exec_driver_sql(
            "PREPARE listing(text, text, text) AS SELECT min(queue_partition_key) FROM dbos.workflow_status "
            "WHERE queue_name = $1 AND status = $2 AND (application_name IN ('kodo') OR application_name IS NULL) "
            "AND queue_partition_key IS NOT NULL AND queue_partition_key > $3"
        )
        plan = _plan(conn, "EXECUTE listing('intentQ', 'ENQUEUED', '')", None)
        conn.exec_driver_sql("DEALLOCATE listing")
    used = {str(node.get("Index Name")) for node in _nodes(plan) if node.get("Index Name")}
    assert not {name for name in used if name.startswith("kodo_")}, used


def test_history_cli_refuses_out_of_bounds_and_remote_targets(engine: sa.Engine, settings: Settings) -> None:
    """``kodo bench history``: sizes out of bounds are usage errors, a non-loopback target is refused, neither
    writes a row; ``measure`` with nothing to time prints the counts as JSON."""
    env = {"DATABASE_URL": str(settings.database_url), "KODO_HOME": str(settings.home)}
    with engine.connect() as conn:
        before = table_counts(conn)
    for args in (
        ["seed", "--finished", "1000001", "--parked", "0"],
        ["seed", "--finished", "10", "--parked", "100001"],
        ["measure", "--requests", "10001"],
    ):
        assert CliRunner().invoke(history_command, args, env=env).exit_code == 2, args
    remote = CliRunner().invoke(
        history_command, ["seed", "--finished", "10", "--parked", "0", "--base", "http://192.0.2.1:3001"], env=env
    )
    assert remote.exit_code == 1 and "loopback" in remote.output
    with engine.connect() as conn:
        assert table_counts(conn) == before
    measured = CliRunner().invoke(history_command, ["measure", "--requests", "0", "--burst", "0"], env=env)
    assert measured.exit_code == 0, measured.output
    report = json.loads(measured.stdout)
    assert report["counts"] == {"finished": 0, "parked": 0, "clones": 0} and report["reads"] == {}
    assert 0 <= report["machine"]["cpuStealPercent"] <= 100
