"""``EscalateTimeout``: exactly one escalation workflow (``esc:<wid>:<gateKey>``) per timed-out gate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, EnqueueOptions

from kodo.identity import artifact_uri
from kodo.models import NewArtifact
from kodo.store import artifacts
from kodo.workflows.runtime import services, transact

WORKFLOW_NAME = "EscalateTimeout"


def escalation_id(workflow_id: str, gate_key: str) -> str:
    return f"esc:{workflow_id}:{gate_key}"


def _record(conn: sa.Connection, run_id: str, gate_key: str, at: str) -> None:
    artifacts.add(
        conn,
        run_id,
        NewArtifact(
            step_id="EscalateTimeout",
            idx=999,
            kind="ops",
            task_key=gate_key,
            uri=artifact_uri(run_id, "EscalateTimeout", gate_key, "escalation.json"),
            inline={"event": "TIMEOUT_ESCALATION", "gateKey": gate_key, "at": at, "reason": "Human gate timed out"},
        ),
    )


@DBOS.workflow(name=WORKFLOW_NAME, max_recovery_attempts=10)
def escalate_timeout(run_id: str, gate_key: str, at: str) -> dict[str, Any]:
    """Write the escalation artifact of a timed-out gate (once: the artifact key and workflow id are fixed)."""
    transact("EscalateTimeout", _record, run_id, gate_key, at)
    return {"runId": run_id, "gateKey": gate_key}


def escalate(workflow_id: str, run_id: str, gate_key: str) -> None:
    """Start the gate's escalation workflow on controlQ (a second start attaches to the first)."""
    options: EnqueueOptions = {
        "workflow_name": WORKFLOW_NAME,
        "queue_name": "controlQ",
        "workflow_id": escalation_id(workflow_id, gate_key),
        "priority": 1,
        "app_version": services().settings.app_version,
    }
    DBOS.enqueue_workflow_with_options(options, run_id, gate_key, datetime.now(UTC).isoformat())
