"""What the run's agent steps answer, as checkpointed: ``TypedDict``\\ s with the keys of the stored JSON.

CompileST's plan and DecideST's build follow the agent schemas (``kodo.adapters.agent.PLAN_SCHEMA`` and
``BUILD_SCHEMA``; ``agents._require`` checks an answer's keys before it becomes one of these). Each is a step's
output in ``app.run_steps`` and in its DBOS checkpoint, and a recovered run reads it back (``Progress``), so
its keys must not change.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, final


class PatchPlanItemJson(TypedDict):
    targetPath: str
    postimageContent: str
    diffText: str


class PlanJson(TypedDict):
    """CompileST's output (the plan card); ApplyPatchST's output is the same plan without its ``patchPlan``."""

    goal: str
    design: list[str]
    files: list[str]
    risks: list[str]
    tests: list[str]
    question: NotRequired[str]
    patchPlan: NotRequired[list[PatchPlanItemJson]]


class PatchJson(TypedDict):
    path: str
    diff: str


class BuildJson(TypedDict):
    """The build agent's decision: patches, tests and the command that runs them."""

    patch: list[PatchJson]
    tests: list[str]
    test_command: str


class DecisionJson(TypedDict):
    """DecideST's output: its prompt, the build agent's decision and the agent's session."""

    prompt: str
    structured: BuildJson
    sessionId: str | None


@final
class AgentAnswerJson(TypedDict):
    """An agent turn that answered (the ``agentTurn`` step's output): its answer, session, and whether it was
    read back from the call ledger (``cached``)."""

    structured: dict[str, object]
    sessionId: str | None
    cached: bool


@final
class AgentErrorJson(TypedDict):
    """An agent turn that failed (kept inside the step's transaction; raised as a ``StepFailure``)."""

    error: str
    code: str


class ExecutionReference(TypedDict):
    """What the ``executeTask`` checkpoint carries about its execution (JSON across the checkpoint)."""

    executionId: str
    idempotencyKey: str
    reusedFrom: str | None
    producerFinishedAt: str | None


class MetricsJson(TypedDict):
    wallMs: int
    cpuMs: int
    memPeakMB: int


class SandboxResponseJson(TypedDict):
    """One execution's result: the ``executeTask`` step's output (``SandboxResult.as_json`` plus the attempt and
    its execution), completed by ``settleExecution`` (``artifactIndexRef``); an ``ExecuteTask``'s output."""

    exit: int
    stdout: str
    stderr: str
    filesOut: list[dict[str, Any]]
    metrics: MetricsJson
    sandboxRef: str
    errCode: str
    taskKey: str
    raw: dict[str, Any]
    attempt: int
    execution: ExecutionReference
    template: NotRequired[dict[str, Any]]
    artifactIndexRef: NotRequired[str]


class TaskOutcomeJson(TypedDict):
    """One task's line in ExecuteST's ``raw.tasks``."""

    taskKey: str
    cmd: str
    errCode: str | None
    exit: int | None
    artifactIndexRef: str | None
    metrics: MetricsJson | None
    attempt: int


class ExecutionRawJson(TypedDict):
    attempt: int
    tasks: list[TaskOutcomeJson]
    filesApplied: NotRequired[list[str]]


class ExecutionJson(TypedDict):
    """ExecuteST's output: the fan-out's results merged (the first failure decides ``exit`` and ``errCode``)."""

    exit: int
    stdout: str
    stderr: str
    filesOut: list[dict[str, Any]]
    metrics: MetricsJson
    sandboxRef: str
    errCode: str
    taskKey: str
    artifactIndexRef: str
    raw: ExecutionRawJson
