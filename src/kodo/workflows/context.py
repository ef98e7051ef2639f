"""The run as a phase workflow carries it: ``RunContext`` and the run's progress (``Progress``).

Each comes in two forms. The **checkpointed** form is a ``TypedDict`` with camelCase keys: it is what a phase's
first transaction returns, so DBOS stores it as JSON (``dbos.operation_outputs``) and a recovered workflow reads it
back, from this version of kodo or an earlier one. Its keys must not change: a run parked (or killed) before a
change resumes after it (``tests/e2e/test_recovery_across_versions.py``). The **typed** form is a frozen dataclass
with snake_case attributes, built at the top of each phase (``from_checkpoint``) and passed to every step, so
mypy checks every field a step reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from kodo.workflows.outputs import BuildJson, PlanJson

# --- checkpointed forms (JSON in DBOS; keys fixed) ------------------------------------------------


class IntentJson(TypedDict):
    """``Intent.as_json()``: the intent as its run carries it."""

    goal: str
    inputs: dict[str, Any]
    constraints: dict[str, Any]
    connectors: NotRequired[list[str]]


class RunContextJson(TypedDict):
    """The run context as checkpointed by a phase's first transaction (``kodo.workflows.phases._context``)."""

    runId: str
    workflowId: str
    intentId: str
    intent: IntentJson
    generation: int
    workload: dict[str, Any] | None
    autoApprove: bool
    priority: int | None
    partitionKey: str | None
    recipeId: str | None
    recipeV: str | None
    budget: dict[str, int | float] | None
    tenantId: str | None
    workspace: str
    planApprovalTimeoutS: int


class GateSnapshotJson(TypedDict):
    """The newest gate of one purpose, as the run's progress checkpoints it."""

    gateKey: str
    generation: int
    open: bool
    result: dict[str, Any] | None
    decision: dict[str, Any] | None


class FailureJson(TypedDict):
    """Why a step (or the phase) failed: a ``StepFailure``'s code and message."""

    code: str
    message: str


class ParkJson(TypedDict):
    """A park's result (also a phase workflow's output): the run waits at ``gateKey``."""

    runId: str
    status: str  # "waiting_input"
    gateKey: str
    resumeWorkflowId: NotRequired[str]


class FinishedJson(TypedDict):
    """A phase workflow's output when the run's steps are all done."""

    runId: str
    status: str  # "succeeded"
    tasks: int


class ProgressJson(TypedDict):
    """What the run has already done (``kodo.workflows.phases._progress``), as checkpointed with its phase."""

    steps: dict[str, dict[str, Any]]
    gates: dict[str, GateSnapshotJson]
    parked: NotRequired[ParkJson]
    failed: NotRequired[FailureJson]


class TaskJson(TypedDict):
    """One fan-out task: an ``ExecuteTask`` child's input (``kodo.workflows.tasks.plan_tasks``)."""

    taskKey: str
    runId: str
    cmd: str
    workdir: str
    timeoutMs: int
    net: bool
    template: dict[str, Any]


class ResolvedGateJson(TypedDict):
    """A continuation's gate, resolved from the ledger (``kodo.workflows.gates.resolve_in``)."""

    gateKey: str
    purpose: str
    result: dict[str, Any] | None
    decision: dict[str, Any] | None


class PhaseJson(TypedDict):
    """A phase's first transaction: its run context, its resolved gate (a continuation) and its progress."""

    ctx: RunContextJson
    resolved: ResolvedGateJson | None
    done: ProgressJson


# --- typed forms (inside the process) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunContext:
    """The run a phase works on: who it is, what it was asked, where its workspace is."""

    run_id: str
    workflow_id: str
    intent_id: str
    intent: IntentJson
    generation: int
    workload: dict[str, Any] | None
    auto_approve: bool
    priority: int | None
    partition_key: str | None
    recipe_id: str | None
    recipe_v: str | None
    budget: dict[str, int | float] | None
    tenant_id: str | None
    workspace: Path
    plan_approval_timeout_s: int

    @property
    def goal(self) -> str:
        return self.intent["goal"]

    @property
    def constraints(self) -> dict[str, Any]:
        return self.intent.get("constraints") or {}

    @classmethod
    def from_checkpoint(cls, raw: RunContextJson) -> RunContext:
        return cls(
            run_id=raw["runId"],
            workflow_id=raw["workflowId"],
            intent_id=raw["intentId"],
            intent=raw["intent"],
            generation=raw["generation"],
            workload=raw["workload"],
            auto_approve=raw["autoApprove"],
            priority=raw["priority"],
            partition_key=raw["partitionKey"],
            recipe_id=raw["recipeId"],
            recipe_v=raw["recipeV"],
            budget=raw["budget"],
            tenant_id=raw["tenantId"],
            workspace=Path(raw["workspace"]),
            plan_approval_timeout_s=raw["planApprovalTimeoutS"],
        )

    def to_checkpoint(self) -> RunContextJson:
        return {
            "runId": self.run_id,
            "workflowId": self.workflow_id,
            "intentId": self.intent_id,
            "intent": self.intent,
            "generation": self.generation,
            "workload": self.workload,
            "autoApprove": self.auto_approve,
            "priority": self.priority,
            "partitionKey": self.partition_key,
            "recipeId": self.recipe_id,
            "recipeV": self.recipe_v,
            "budget": self.budget,
            "tenantId": self.tenant_id,
            "workspace": str(self.workspace),
            "planApprovalTimeoutS": self.plan_approval_timeout_s,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class GateSnapshot:
    """The newest gate of one purpose, as the run's progress saw it."""

    gate_key: str
    generation: int
    is_open: bool
    result: dict[str, Any] | None
    decision: dict[str, Any] | None

    @classmethod
    def from_checkpoint(cls, raw: GateSnapshotJson) -> GateSnapshot:
        return cls(
            gate_key=raw["gateKey"],
            generation=raw["generation"],
            is_open=raw["open"],
            result=raw["result"],
            decision=raw["decision"],
        )

    @property
    def state(self) -> str | None:
        """The result's state (RECEIVED, TIMED_OUT, WINDOW_ROLLED_OVER), None while open."""
        state = (self.result or {}).get("state")
        return state if isinstance(state, str) else None

    @property
    def payload(self) -> Any:
        return (self.result or {}).get("payload")


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """What the run has already done: the latest output of each step, the newest gate of each purpose, and what
    the phase's first transaction already decided (``parked`` or ``failed``)."""

    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    gates: dict[str, GateSnapshot] = field(default_factory=dict)
    parked: ParkJson | None = None
    failed: FailureJson | None = None

    @property
    def plan(self) -> PlanJson | None:
        """CompileST's plan, if it is done."""
        return cast(PlanJson | None, self.steps.get("CompileST"))

    @property
    def approved(self) -> PlanJson | None:
        """ApplyPatchST's output (the plan whose patches are applied), if it is done."""
        return cast(PlanJson | None, self.steps.get("ApplyPatchST"))

    @property
    def build(self) -> BuildJson | None:
        """DecideST's decision, if it is done."""
        return cast(BuildJson | None, self.steps.get("DecideST", {}).get("structured"))

    @classmethod
    def from_checkpoint(cls, raw: ProgressJson) -> Progress:
        return cls(
            steps=raw["steps"],
            gates={purpose: GateSnapshot.from_checkpoint(gate) for purpose, gate in raw["gates"].items()},
            parked=raw.get("parked"),
            failed=raw.get("failed"),
        )
