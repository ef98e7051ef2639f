"""The nouns of kodo: frozen dataclasses and status vocabularies shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

RunStatus = Literal[
    "queued", "running", "waiting_input", "succeeded", "failed", "canceled", "retries_exceeded", "repairing"
]
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "retries_exceeded"})
HeaderStatus = Literal["ENQUEUED", "PENDING", "WAITING_INPUT", "SUCCESS", "ERROR", "CANCELLED"]
TERMINAL_HEADER_STATUSES: frozenset[str] = frozenset({"SUCCESS", "ERROR", "CANCELLED"})
NextAction = Literal["APPROVE_PLAN", "ANSWER_QUESTION", "APPROVE_BUDGET", "APPROVE_MERGE", "REPAIR", "NONE"]
QueueName = Literal["compileQ", "sbxQ", "controlQ", "intentQ"]
QUEUE_NAMES: tuple[str, ...] = ("compileQ", "sbxQ", "controlQ", "intentQ")
Lane = Literal["interactive", "batch"]
LANE_PRIORITY: dict[str, int] = {"interactive": 1, "batch": 1000}
SandboxErrorCode = Literal[
    "NONE",
    "BOOT_FAIL",
    "CMD_NONZERO",
    "TIMEOUT",
    "OOM",
    "NET_FAIL",
    "UPLOAD_FAIL",
    "DOWNLOAD_FAIL",
    "DISK_QUOTA",
    "WORKSPACE_TOO_LARGE",
    "FILES_OUT_TOO_LARGE",
]
# Not a sandbox's own failure: the task's installed template did not build (kodo.workflows.environments).
TemplateErrorCode = Literal["TEMPLATE_BUILD_FAIL"]
RETRYABLE_SANDBOX_CODES: frozenset[str] = frozenset({"BOOT_FAIL", "NET_FAIL", "UPLOAD_FAIL", "DOWNLOAD_FAIL"})
STEP_PHASES: dict[str, str] = {
    "CompileST": "compilation",
    "ApplyPatchST": "patching",
    "DecideST": "planning",
    "ExecuteST": "execution",
}

_HEADER_STATUS: dict[str, HeaderStatus] = {
    "queued": "ENQUEUED",
    "running": "PENDING",
    "repairing": "PENDING",
    "waiting_input": "WAITING_INPUT",
    "succeeded": "SUCCESS",
    "failed": "ERROR",
    "retries_exceeded": "ERROR",
    "canceled": "CANCELLED",
}
_HEADER_RANK = {"ENQUEUED": 1, "PENDING": 2, "WAITING_INPUT": 3, "SUCCESS": 4, "ERROR": 4, "CANCELLED": 4}
_DBOS_TO_HEADER: dict[str, HeaderStatus] = {
    "ENQUEUED": "ENQUEUED",
    "DELAYED": "ENQUEUED",
    "PENDING": "PENDING",
    "SUCCESS": "SUCCESS",
    "ERROR": "ERROR",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "ERROR",
    "CANCELLED": "CANCELLED",
}


def header_status(run_status: str, dbos_status: str | None = None) -> HeaderStatus:
    """Project an app status to the header enum, upgraded (never downgraded) by the DBOS status.

    Unlike the predecessor, DBOS ``PENDING`` upgrades ``ENQUEUED`` to ``PENDING`` and DBOS ``ERROR`` is
    honoured, so a workflow that died before the app row caught up still reads as an error.
    """
    projected = _HEADER_STATUS[run_status]
    if dbos_status is None or dbos_status not in _DBOS_TO_HEADER:
        return projected
    durable = _DBOS_TO_HEADER[dbos_status]
    return durable if _HEADER_RANK[durable] > _HEADER_RANK[projected] else projected


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    concurrency: int
    steps: int
    sandbox_minutes: int

    def as_json(self) -> dict[str, int]:
        return {"concurrency": self.concurrency, "steps": self.steps, "sandboxMinutes": self.sandbox_minutes}


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    id: str
    goal: str
    inputs: dict[str, Any]
    constraints: dict[str, Any]
    connectors: list[str] | None = None
    intent_hash: str | None = None
    recipe_id: str | None = None
    recipe_v: str | None = None
    recipe_hash: str | None = None
    created_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"goal": self.goal, "inputs": self.inputs, "constraints": self.constraints}
        if self.connectors is not None:
            body["connectors"] = self.connectors
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    id: str
    name: str
    version: int
    queue_name: str
    max_concurrency: int
    max_steps: int
    max_sandbox_minutes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStart:
    """A validated request to start a run of an intent: everything the queue policy decided."""

    intent_id: str
    queue_name: str
    priority: int
    lane: str
    queue_partition_key: str | None
    trace_id: str | None = None
    tenant_id: str | None = None
    deduplication_id: str | None = None
    timeout_ms: int | None = None
    recipe_name: str | None = None
    recipe_version: int | None = None
    workload: Workload | None = None
    budget: dict[str, int | float] | None = None
    auto_approve: bool = False
    intent_hash: str | None = None
    recipe_id: str | None = None
    recipe_v: str | None = None
    recipe_hash: str | None = None

    def options(self) -> dict[str, Any]:
        """The run options kept on the run row for the workflow to read."""
        return {
            "queueName": self.queue_name,
            "priority": self.priority,
            "lane": self.lane,
            "recipeName": self.recipe_name,
            "recipeVersion": self.recipe_version,
            "workload": self.workload.as_json() if self.workload else None,
            "autoApprove": self.auto_approve,
            "timeoutMS": self.timeout_ms,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: str
    intent_id: str
    workflow_id: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    trace_id: str | None = None
    last_step: str | None = None
    error: dict[str, Any] | None = None
    retry_count: int = 0
    next_action: str | None = None
    tenant_id: str | None = None
    queue_partition_key: str | None = None
    intent_hash: str | None = None
    recipe_id: str | None = None
    recipe_v: str | None = None
    recipe_hash: str | None = None
    budget: dict[str, int | float] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    current_workflow_id: str | None = None

    @property
    def generation(self) -> int:
        """1 for the first attempt, +1 per repair: part of gate and task keys of later attempts."""
        return self.retry_count + 1

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    run_id: str
    step_id: str
    attempt: int
    phase: str
    output: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None = None
    trace_id: str | None = None
    span_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    run_id: str
    step_id: str
    task_key: str
    idx: int
    attempt: int
    kind: str
    uri: str
    inline: Any
    sha256: str
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewArtifact:
    """An artifact a step is about to write."""

    step_id: str
    idx: int
    kind: str
    uri: str
    inline: Any
    task_key: str = ""
    attempt: int = 1
