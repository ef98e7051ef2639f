"""``kodo chaos``'s plan and report, without processes: kinds in turn, points from kodo.faults.POINTS (so a
point added to the code is armed too), and a report that is clean only with no duplicate, loss or oracle row."""

from __future__ import annotations

import pytest

from kodo import faults
from kodo.chaos import driver as chaos
from kodo.chaos.load import Findings


def test_plan_takes_kinds_in_turn_and_points_from_the_registry() -> None:
    """Iteration i crashes KINDS[i % 4]; kill points come from faults.POINTS; the same seed gives the same plan."""
    planned = chaos.plan(8, seed=5)
    assert [kind for kind, _point in planned] == list(chaos.KINDS) * 2
    for kind, point in planned:
        assert point == "postgres restart" if kind == "postgres" else point in faults.POINTS
    assert chaos.plan(8, seed=5) == planned


def test_a_point_added_to_the_registry_is_armed_by_chaos(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault point another module registers is among those chaos arms, with no change to chaos."""
    monkeypatch.setitem(faults.POINTS, "gate.inside_reply", "planted for this test")
    points = {point for _kind, point in chaos.plan(200, seed=1, kinds=("worker",))}
    assert "gate.inside_reply" in points and points <= set(faults.POINTS)


def test_report_rows_add_up_per_point_and_any_duplicate_makes_it_unclean() -> None:
    """Rows sum per (point, kind); lost runs, duplicates, oracle rows or untracked commands make it unclean."""
    report = chaos.Report(
        iterations=[
            chaos.Iteration("worker", "sandbox.after_command", hit=True, findings=Findings(runs=4, reused=1)),
            chaos.Iteration("worker", "sandbox.after_command", hit=False, findings=Findings(runs=4, interrupted=2)),
            chaos.Iteration("postgres", "postgres restart", findings=Findings(runs=4)),
        ]
    )
    rows = report.rows()
    assert [(r["faultPoint"], r["iterations"], r["hits"], r["runs"]) for r in rows] == [
        ("postgres restart", 1, 0, 4),
        ("sandbox.after_command", 2, 1, 8),
    ]
    assert rows[1]["reused"] == 1 and rows[1]["interrupted"] == 2 and report.clean
    assert "sandbox.after_command  worker" in chaos.table(report)
    report.iterations.append(chaos.Iteration("api", "x", findings=Findings(runs=1, duplicates=1)))
    assert not report.clean
    report.iterations[-1] = chaos.Iteration("api", "x", lost=1)
    assert not report.clean
