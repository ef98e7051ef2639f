"""What the run's agent steps answer, as checkpointed: ``TypedDict``\\ s with the keys of the stored JSON.

CompileST's plan and DecideST's build follow the agent schemas (``kodo.adapters.agent.PLAN_SCHEMA`` and
``BUILD_SCHEMA``; ``agents._require`` checks an answer's keys before it becomes one of these). Each is a step's
output in ``app.run_steps`` and in its DBOS checkpoint, and a recovered run reads it back (``Progress``), so
its keys must not change.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict, final


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
