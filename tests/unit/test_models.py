"""Run status vocabulary and its header projection (SPEC §4 Statuses)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kodo.models import (
    LANE_PRIORITY,
    RETRYABLE_SANDBOX_CODES,
    TERMINAL_STATUSES,
    Run,
    RunStart,
    Workload,
    header_status,
)

PROJECTION = {
    "queued": "ENQUEUED",
    "running": "PENDING",
    "repairing": "PENDING",
    "waiting_input": "WAITING_INPUT",
    "succeeded": "SUCCESS",
    "failed": "ERROR",
    "retries_exceeded": "ERROR",
    "canceled": "CANCELLED",
}
DBOS_STATUSES = ["ENQUEUED", "DELAYED", "PENDING", "SUCCESS", "ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "CANCELLED"]
DBOS_TO_HEADER = {
    "ENQUEUED": "ENQUEUED",
    "DELAYED": "ENQUEUED",
    "PENDING": "PENDING",
    "SUCCESS": "SUCCESS",
    "ERROR": "ERROR",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "ERROR",
    "CANCELLED": "CANCELLED",
}
RANK = {"ENQUEUED": 1, "PENDING": 2, "WAITING_INPUT": 3, "SUCCESS": 4, "ERROR": 4, "CANCELLED": 4}
TERMINAL_HEADERS = {"SUCCESS", "ERROR", "CANCELLED"}


@pytest.mark.parametrize(("run_status", "header"), sorted(PROJECTION.items()))
def test_header_status_projection_table(run_status: str, header: str) -> None:
    """Each app status projects to its header status when DBOS says nothing."""
    assert header_status(run_status) == header
    assert header_status(run_status, None) == header


def test_projection_covers_every_run_status() -> None:
    """The table has exactly the eight app statuses of the spec."""
    assert set(PROJECTION) == {
        "queued",
        "running",
        "waiting_input",
        "succeeded",
        "failed",
        "canceled",
        "retries_exceeded",
        "repairing",
    }
    assert {"succeeded", "failed", "canceled", "retries_exceeded"} == TERMINAL_STATUSES


@pytest.mark.parametrize("run_status", ["queued", "running", "repairing"])
def test_dbos_success_upgrades_non_terminal(run_status: str) -> None:
    """A DBOS SUCCESS wins over an app row that has not caught up yet."""
    assert header_status(run_status, "SUCCESS") == "SUCCESS"


def test_dbos_pending_upgrades_enqueued() -> None:
    """A dequeued workflow reads PENDING even while the app row still says queued."""
    assert header_status("queued", "PENDING") == "PENDING"


@pytest.mark.parametrize("dbos", ["ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"])
def test_dbos_error_upgrades_running(dbos: str) -> None:
    """A workflow that died before the app row caught up reads as ERROR."""
    assert header_status("running", dbos) == "ERROR"
    assert header_status("queued", dbos) == "ERROR"


def test_dbos_cancelled_upgrades_running() -> None:
    """A cancelled workflow reads CANCELLED even if the app row still says running."""
    assert header_status("running", "CANCELLED") == "CANCELLED"


@pytest.mark.parametrize("run_status", sorted(TERMINAL_STATUSES))
@pytest.mark.parametrize("dbos", DBOS_STATUSES)
def test_terminal_app_status_is_never_changed_by_dbos(run_status: str, dbos: str) -> None:
    """A terminal app status is never downgraded or swapped by any DBOS status."""
    assert header_status(run_status, dbos) == PROJECTION[run_status]


@pytest.mark.parametrize("dbos", ["ENQUEUED", "DELAYED", "PENDING"])
def test_waiting_input_is_not_downgraded(dbos: str) -> None:
    """DBOS sees a waiting workflow as PENDING; the header still says WAITING_INPUT."""
    assert header_status("waiting_input", dbos) == "WAITING_INPUT"


@pytest.mark.parametrize("dbos", ["ENQUEUED", "DELAYED"])
def test_running_is_not_downgraded_to_enqueued(dbos: str) -> None:
    """A stale DBOS ENQUEUED never drags a running run back to ENQUEUED."""
    assert header_status("running", dbos) == "PENDING"


@pytest.mark.parametrize("run_status", sorted(PROJECTION))
@pytest.mark.parametrize("dbos", [*DBOS_STATUSES, "SOMETHING_NEW", None])
def test_merge_is_monotonic(run_status: str, dbos: str | None) -> None:
    """The merged header never ranks below the app projection and is one of the two inputs."""
    merged = header_status(run_status, dbos)
    projected = PROJECTION[run_status]
    assert RANK[merged] >= RANK[projected]
    assert merged in {projected, DBOS_TO_HEADER.get(dbos or "")}
    if projected in TERMINAL_HEADERS:
        assert merged == projected


def test_unknown_dbos_status_is_ignored() -> None:
    """A DBOS status kodo does not know leaves the projection untouched."""
    assert header_status("queued", "SOMETHING_NEW") == "ENQUEUED"


def test_lane_priorities() -> None:
    """Lanes map to priorities interactive → 1, batch → 1000."""
    assert LANE_PRIORITY == {"interactive": 1, "batch": 1000}


def test_retryable_sandbox_codes() -> None:
    """Infra failures retry; command failures, timeouts and OOM are terminal (reference §10.5)."""
    assert {"BOOT_FAIL", "NET_FAIL", "UPLOAD_FAIL", "DOWNLOAD_FAIL"} == RETRYABLE_SANDBOX_CODES
    assert not {"CMD_NONZERO", "TIMEOUT", "OOM", "NONE"} & RETRYABLE_SANDBOX_CODES


@pytest.mark.parametrize(
    ("status", "terminal"),
    [(s, True) for s in sorted(TERMINAL_STATUSES)]
    + [(s, False) for s in ("queued", "running", "waiting_input", "repairing")],
)
def test_run_is_terminal(status: str, terminal: bool) -> None:
    """Run.is_terminal is true exactly for the four terminal statuses."""
    now = datetime.now(UTC)
    run = Run(
        id="run_1",
        intent_id="it_1",
        workflow_id="it_1",
        status=status,  # type: ignore[arg-type]
        created_at=now,
        updated_at=now,
    )
    assert run.is_terminal is terminal


def test_run_start_options_carry_workload_in_api_shape() -> None:
    """The run options stored on the row use the API's camelCase workload shape."""
    start = RunStart(
        intent_id="it_1",
        queue_name="intentQ",
        priority=1,
        lane="interactive",
        queue_partition_key="p",
        workload=Workload(concurrency=1, steps=2, sandbox_minutes=3),
        auto_approve=True,
        timeout_ms=5,
    )
    options = start.options()
    assert options["workload"] == {"concurrency": 1, "steps": 2, "sandboxMinutes": 3}
    assert options["queueName"] == "intentQ"
    assert options["priority"] == 1
    assert options["autoApprove"] is True
    assert options["timeoutMS"] == 5
