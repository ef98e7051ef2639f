"""``kodo chaos``: crash kodo on purpose under a mixed load, restart it, and check that nothing was lost or
done twice.

Each iteration picks a kind of crash, in turn: a kill -9 of the **worker** or of the **API** (split topology),
of the **monolith** (``kodo up``), or a **Postgres** restart (``kodo db down`` / ``up``) under load. For a kill,
the process is restarted with one fault point of :data:`kodo.faults.POINTS` armed (``<point>:kill``), picked
at random, so points added to the code are included automatically. If the load never reaches that point
within a few seconds, the process is killed at that moment instead (``hit`` is then false). Then the
process is restarted unarmed and the iteration checks that every run comes to rest (terminal, or waiting
for a human), that every SQL oracle is empty, and that the executions in the ledger are the commands that
really ran (their trace files). Bounded in iterations and in time; loopback only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import sqlalchemy as sa

from kodo import faults
from kodo.chaos import KINDS
from kodo.chaos import load as chaos_load
from kodo.chaos.cluster import Cluster, kodo, sources
from kodo.database import resolve_database_url
from kodo.store import create_engine

KILL_WINDOW_S = (1.0, 5.0)  # when an armed point was not reached, the kill comes at a random moment in this window
SETTLE_S = 120.0


class Row(TypedDict):
    faultPoint: str
    kind: str
    iterations: int
    hits: int
    runs: int
    failed: int
    interrupted: int
    reused: int
    duplicates: int
    lostRuns: int
    oracleRows: int
    untracked: int


@dataclass
class Iteration:
    kind: str
    point: str  # the armed fault point, or "postgres restart"
    hit: bool = False
    crashed: bool = False
    lost: int = 0
    findings: chaos_load.Findings = field(default_factory=chaos_load.Findings)


@dataclass
class Report:
    iterations: list[Iteration] = field(default_factory=list)
    stopped_early: str | None = None

    def rows(self) -> list[Row]:
        """One row per (fault point, kind), in a stable order."""
        table: dict[tuple[str, str], Row] = {}
        for item in self.iterations:
            row = table.setdefault(
                (item.point, item.kind),
                Row(
                    faultPoint=item.point,
                    kind=item.kind,
                    iterations=0,
                    hits=0,
                    runs=0,
                    failed=0,
                    interrupted=0,
                    reused=0,
                    duplicates=0,
                    lostRuns=0,
                    oracleRows=0,
                    untracked=0,
                ),
            )
            found = item.findings
            row["iterations"] += 1
            row["hits"] += int(item.hit)
            row["runs"] += found.runs
            row["failed"] += found.failed
            row["interrupted"] += found.interrupted
            row["reused"] += found.reused
            row["duplicates"] += found.duplicates
            row["lostRuns"] += item.lost
            row["oracleRows"] += found.oracle_rows
            row["untracked"] += found.untracked
        return [table[key] for key in sorted(table)]

    @property
    def clean(self) -> bool:
        return all(
            r["duplicates"] == 0 and r["lostRuns"] == 0 and r["oracleRows"] == 0 and r["untracked"] == 0
            for r in self.rows()
        )


def plan(iterations: int, seed: int, kinds: tuple[str, ...] = KINDS) -> list[tuple[str, str]]:
    """(kind, fault point) per iteration: kinds in turn, the point at random among every known one."""
    chooser = random.Random(seed)
    points = sorted(faults.POINTS)
    chosen = []
    for index in range(iterations):
        kind = kinds[index % len(kinds)]
        chosen.append((kind, "postgres restart" if kind == "postgres" else chooser.choice(points)))
    return chosen


def _topology(kind: str) -> str:
    return "monolith" if kind == "monolith" else "split"


@dataclass
class _Api:
    """The API of the cluster; when it does not answer, a process that died (the armed point fired) is noted
    and everything that died is restarted unarmed."""

    cluster: Cluster
    item: Iteration

    @property
    def url(self) -> str:
        return self.cluster.base_url

    def recover(self) -> None:
        if self.item.kind != "postgres" and not self.cluster.process_for(self.item.kind).alive():
            self.item.hit = self.item.crashed = True
        self.cluster.revive()


def _crash(cluster: Cluster, item: Iteration, chooser: random.Random) -> None:
    """Bring about the iteration's crash while its load runs (unless the armed point has already fired)."""
    if item.crashed:
        return
    window_end = time.monotonic() + chooser.uniform(*KILL_WINDOW_S)
    if item.kind == "postgres":
        while time.monotonic() < window_end:
            time.sleep(0.1)
        kodo(cluster.home, "db", "down")
        time.sleep(1.0)
        up = kodo(cluster.home, "db", "up")
        if up.returncode != 0:
            raise RuntimeError(f"chaos: kodo db up failed: {up.stderr.strip()}")
        return
    target = cluster.process_for(item.kind)
    while time.monotonic() < window_end and target.alive():
        time.sleep(0.05)
    item.hit = not target.alive()
    item.crashed = True
    target.kill9()


def run_iteration(
    cluster: Cluster, item: Iteration, engine: sa.Engine, repo: Path, chooser: random.Random, fan_out: int
) -> None:
    cluster.use(_topology(item.kind))
    if item.kind != "postgres":
        target = cluster.process_for(item.kind)
        target.stop()
        target.start(faults=f"{item.point}:kill")
    deadline = time.monotonic() + SETTLE_S
    api = _Api(cluster, item)
    load = chaos_load.submit(api, repo, fan_out=fan_out, deadline=deadline)
    if item.kind == "api":  # the API's own points (a gate reply) are on the operator's path: take it first
        chaos_load.operate(api, load, deadline)
    _crash(cluster, item, chooser)
    cluster.revive()
    chaos_load.operate(api, load, deadline)
    for _ in range(3):  # a process that died of the outage (or of a point on its start-up path) comes back
        cluster.revive()
        lost = chaos_load.settle(api, load, time.monotonic() + SETTLE_S / 3)
        if not lost:
            break
    item.lost = len(lost)
    time.sleep(0.5)  # the last settle transactions commit before the ledger is read
    engine.dispose()  # pooled connections do not survive a Postgres restart
    item.findings = chaos_load.check(engine, cluster.home / "workspaces", load, dead_after_s=30.0)


def run(
    home: Path,
    *,
    iterations: int,
    time_limit_s: float,
    seed: int,
    fan_out: int = 2,
    kinds: tuple[str, ...] = KINDS,
    progress: Callable[[], None] | None = None,
) -> Report:
    """Run up to ``iterations`` iterations (none started after ``time_limit_s``) against a kodo started under
    ``home`` (its own embedded Postgres); everything it started is stopped at the end."""
    home.mkdir(parents=True, exist_ok=True)
    report = Report()
    started = time.monotonic()
    up = kodo(home, "db", "up")
    if up.returncode != 0:
        raise RuntimeError(f"chaos: kodo db up failed: {up.stderr.strip()}")
    engine = create_engine(resolve_database_url(None, home), pool_size=2)
    repo = chaos_load.make_repository(sources(home) / "chaos-repo")
    cluster = Cluster(home)
    chooser = random.Random(seed + 1)
    try:
        for kind, point in plan(iterations, seed, kinds):
            if time.monotonic() - started > time_limit_s:
                report.stopped_early = f"time limit of {time_limit_s:.0f}s reached"
                break
            item = Iteration(kind=kind, point=point)
            run_iteration(cluster, item, engine, repo, chooser, fan_out)
            report.iterations.append(item)
            if progress is not None:
                progress()
    finally:
        cluster.stop()
        engine.dispose()
        kodo(home, "db", "down")
    return report


COLUMNS: tuple[tuple[str, str], ...] = (
    ("iter", "iterations"),
    ("hit", "hits"),
    ("runs", "runs"),
    ("failed", "failed"),
    ("interrupted", "interrupted"),
    ("reused", "reused"),
    ("dup", "duplicates"),
    ("lost", "lostRuns"),
    ("oracle", "oracleRows"),
    ("untracked", "untracked"),
)


def table(report: Report) -> str:
    """The per-fault-point table ``kodo chaos`` prints."""
    lines: list[list[str]] = [["fault point", "kind", *(title for title, _key in COLUMNS)]]
    for row in report.rows():
        counts = dict(row)
        lines.append([row["faultPoint"], row["kind"], *(str(counts[key]) for _title, key in COLUMNS)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines)
