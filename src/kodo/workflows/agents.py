"""Agent turns: CompileST (plan agent) and DecideST (build agent).

A remote agent's turn is one DBOS step that prompts at most once per op key (the ledger row in
``app.opencode_calls`` doubles as the cache), then one datasource transaction that writes the
step row and its artifacts together with the step's checkpoint. A local agent (``OC_MODE=replay``
or ``record``: fixtures or the deterministic producer) is pure, so its turn runs inside that
transaction: one DBOS operation per agent step instead of two.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from dbos import DBOS

from kodo import faults, telemetry
from kodo.adapters.agent import BUILD_SCHEMA, PLAN_SCHEMA, AgentRequest, AgentResult
from kodo.errors import StepFailure
from kodo.identity import artifact_uri
from kodo.models import STEP_PHASES, NewArtifact
from kodo.store import agent_calls, artifacts, runs, steps
from kodo.store import spend as spend_store
from kodo.workflows import gates, observe, spend
from kodo.workflows.context import IntentJson, RunContext
from kodo.workflows.outputs import AgentAnswerJson, AgentErrorJson, BuildJson, DecisionJson, PlanJson
from kodo.workflows.runtime import own_transaction, services, transact


def compile_prompt(intent: IntentJson, workload: dict[str, Any] | None = None) -> str:
    return (
        (f"Workload: {workload}\n" if workload else "")
        + f"Goal: {intent['goal']}\nInputs: {intent.get('inputs', {})}\nConstraints: {intent.get('constraints', {})}\n"
        "Return ONLY JSON per schema. No code, no patches."
    )


def decide_prompt(intent: IntentJson, plan: PlanJson, answer: Any = None) -> str:
    approved = {"design": plan["design"], "files": plan["files"], "risks": plan["risks"], "tests": plan["tests"]}
    told = f"\nThe user answered: {answer}" if answer is not None else ""
    return f"Approved Plan: {approved}\nGoal: {intent['goal']}{told}\nGenerate patches and test command."


LOCAL_MODES = frozenset({"replay", "record"})
# The attempt in an agent call's op key (its ledger and cache key): always 1 (the run context carries none).
AGENT_ATTEMPT = 1


T = TypeVar("T")


def _cached(conn: sa.Connection, request: AgentRequest) -> AgentAnswerJson | None:
    found = agent_calls.find(conn, request.op_key)
    if found is None or found["structured"] is None:
        return None
    return {"structured": found["structured"], "sessionId": found["session_id"], "cached": True}


def _prompt(request: AgentRequest) -> tuple[AgentResult | None, dict[str, Any]]:
    """Prompt the agent once; returns its result (None on failure) and the ledger entry of the call."""
    svc = services()
    started = datetime.now(UTC)
    error: str | None = None
    code = "AGENT_ERROR"
    with observe.external_call(
        "agent", request.agent, step=request.step_id, attempt=request.attempt, mode=svc.agent.mode
    ) as outcome:
        try:
            result: AgentResult | None = svc.agent.structured(request)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            code = str(getattr(exc, "code", "") or "AGENT_ERROR")  # the adapter's own failure class
            result = None
        outcome.report(ok=result is not None, session_id=result.session_id if result else None, failure=error)
        usage = result.usage if result else None
        if usage is not None:  # the OpenTelemetry GenAI semantic-convention attributes of the call
            outcome.report(
                **{
                    "gen_ai.operation.name": "chat",
                    "gen_ai.response.model": usage.model or "",
                    "gen_ai.usage.input_tokens": usage.input_tokens,
                    "gen_ai.usage.output_tokens": usage.output_tokens,
                    "gen_ai.usage.cache_read.input_tokens": usage.cached_tokens,
                }
            )
    call = {
        "agent": request.agent,
        "mode": svc.agent.mode,
        "sessionId": result.session_id if result else None,
        "schemaHash": request.schema_hash,
        "prompt": request.prompt,
        "request": {"prompt": request.prompt, "schema": request.schema},
        "response": result.raw if result else None,
        "structured": result.structured if result else None,
        "error": error,
        "errorCode": code if result is None else None,
        "durationMs": int((datetime.now(UTC) - started).total_seconds() * 1000),
    }
    return result, call


def _ledger(
    conn: sa.Connection, request: AgentRequest, result: AgentResult | None, call: dict[str, Any]
) -> AgentAnswerJson | AgentErrorJson:
    """Ledger the call with its usage and settle its reservation (released if the call failed); the turn's
    answer, or ``{"error", "code"}`` when the agent failed."""
    charge = spend.charge_of(result, call["mode"])
    agent_calls.record(
        conn,
        op_key=request.op_key,
        run_id=request.run_id,
        step_id=request.step_id,
        attempt=request.attempt,
        call={key: value for key, value in call.items() if key != "errorCode"},
        charge=charge,
    )
    spend_store.close(conn, request.op_key, "settled" if result is not None else "released")
    if charge is not None:
        telemetry.annotate(**{"kodo.cost_usd": float(charge.cost_usd), "kodo.priced_usd": float(charge.priced_usd)})
    if result is None:
        return {"error": f"{request.step_id}: agent call failed: {call['error']}", "code": call["errorCode"]}
    return {"structured": result.structured, "sessionId": result.session_id, "cached": False}


@DBOS.step(name="agentTurn")
def agent_turn(request: AgentRequest) -> AgentAnswerJson:
    """A remote agent's turn: prompted at most once per op key, outside any transaction."""
    cached = own_transaction("agentTurn.cached", _cached, request)
    if cached is not None:
        return cached
    faults.hit("spend.between_reserve_and_settle")
    result, entry = _prompt(request)
    return _answered(own_transaction("agentTurn.ledger", _ledger, request, result, entry))


def _answered(answer: AgentAnswerJson | AgentErrorJson) -> AgentAnswerJson:
    """The turn's answer, or its failure raised (``StepFailure`` with the agent's code)."""
    if "error" in answer:
        raise StepFailure(answer["code"], answer["error"])
    return answer


def _local_turn(conn: sa.Connection, request: AgentRequest) -> AgentAnswerJson | AgentErrorJson:
    """A local (replay/record) agent's turn inside the step's own transaction: no DBOS step of its own."""
    cached = _cached(conn, request)
    if cached is not None:
        return cached
    result, entry = _prompt(request)
    return _ledger(conn, request, result, entry)


def _turn(step_id: str, request: AgentRequest, save: Callable[..., T], ctx: RunContext, *args: Any) -> T:
    """One agent turn and the step that saves it.

    A remote agent's turn is its own DBOS step (it must not be prompted twice, nor inside a
    transaction). A local agent (replay fixtures or the deterministic producer) is pure, so its turn
    runs inside the step's transaction and its ledger row commits with the step: one DBOS operation.
    """
    if not is_local():
        held = transact(f"spend.reserve.{step_id}", spend.reserve_in, ctx, request)
        if "parked" in held:
            raise gates.Parked(held["parked"])
        if "failed" in held:
            raise StepFailure(held["failed"]["code"], held["failed"]["message"])
        answer = agent_turn(request)
        return transact(step_id, save, ctx, answer, *args)

    def _both(conn: sa.Connection, ctx: RunContext, *rest: Any) -> dict[str, Any]:
        # A failed turn is returned, not raised, so its ledger row commits with this checkpoint.
        answer = _local_turn(conn, request)
        if "error" in answer:
            return {"failed": answer}
        return {"saved": save(conn, ctx, answer, *rest)}

    outcome = transact(step_id, _both, ctx, *args)
    if "failed" in outcome:
        _answered(outcome["failed"])
    return cast(T, outcome["saved"])


def release_holds(conn: sa.Connection, run_id: str) -> None:
    """Let go of the run's open agent-call reservations (it failed: their calls will not be made)."""
    spend_store.release_run(conn, run_id)


def _require(structured: Any, schema: dict[str, Any], step_id: str) -> dict[str, Any]:
    if not isinstance(structured, dict):
        raise StepFailure("AGENT_OUTPUT_INVALID", f"{step_id}: agent output is not an object")
    missing = [key for key in schema["required"] if key not in structured]
    unknown = [key for key in structured if key not in schema["properties"]]
    if missing or unknown:
        raise StepFailure(
            "AGENT_OUTPUT_INVALID",
            f"{step_id}: agent output breaks the schema (missing {missing}, unknown {unknown})",
        )
    return structured


def _none_sentinel(step_id: str, run_id: str, attempt: int) -> NewArtifact:
    return NewArtifact(
        step_id=step_id,
        idx=999,
        kind="none",
        uri=artifact_uri(run_id, step_id, "", "none"),
        inline={"status": "no_artifacts"},
        attempt=attempt,
    )


def _persist(
    conn: sa.Connection,
    run_id: str,
    step_id: str,
    output: dict[str, Any],
    made: list[NewArtifact],
    started_at: str,
    workflow_id: str,
) -> int:
    attempt = steps.next_attempt(conn, run_id, step_id)
    artifacts.add_all(
        conn,
        run_id,
        [NewArtifact(**{**_fields(a), "attempt": attempt}) for a in made or [_none_sentinel(step_id, run_id, attempt)]],
    )
    steps.record(
        conn,
        run_id=run_id,
        step_id=step_id,
        attempt=attempt,
        phase=STEP_PHASES[step_id],
        output=output,
        started_at=datetime.fromisoformat(started_at),
        **observe.step(workflow_id, step_id, attempt),
    )
    runs.update(conn, run_id, last_step=step_id)
    return attempt


def _fields(artifact: NewArtifact) -> dict[str, Any]:
    return {name: getattr(artifact, name) for name in NewArtifact.__dataclass_fields__}


def _save_plan(conn: sa.Connection, ctx: RunContext, answer: AgentAnswerJson, started_at: str) -> PlanJson:
    run_id = ctx.run_id
    plan = cast(PlanJson, {**_require(answer["structured"], PLAN_SCHEMA, "CompileST"), "goal": ctx.goal})
    card = NewArtifact(
        step_id="CompileST",
        idx=0,
        kind="plan_card",
        uri=artifact_uri(run_id, "CompileST", "", "plan.json"),
        inline=plan,
    )
    _persist(conn, run_id, "CompileST", dict(plan), [card], started_at, ctx.workflow_id)
    return plan


def _compile_call(ctx: RunContext) -> AgentRequest:
    return AgentRequest(
        run_id=ctx.run_id,
        step_id="CompileST",
        attempt=AGENT_ATTEMPT,
        agent="plan",
        prompt=compile_prompt(ctx.intent, ctx.workload),
        schema=PLAN_SCHEMA,
        context={"intent": ctx.intent, "workload": ctx.workload, "workspace": str(ctx.workspace)},
    )


def compile_plan(ctx: RunContext) -> PlanJson:
    """CompileST: the plan agent turns the intent into a plan card."""
    started_at = datetime.now(UTC).isoformat()
    return _turn("CompileST", _compile_call(ctx), _save_plan, ctx, started_at)


def is_local() -> bool:
    """Whether the agent is local (replay fixtures or the deterministic producer): pure, so its turns
    may run inside any transaction."""
    return services().agent.mode in LOCAL_MODES


def _local_step(conn: sa.Connection, request: AgentRequest) -> AgentAnswerJson:
    return _answered(_local_turn(conn, request))


def compile_plan_in(conn: sa.Connection, ctx: RunContext) -> PlanJson:
    """CompileST of a local agent inside the caller's transaction (raises ``StepFailure``)."""
    started_at = datetime.now(UTC).isoformat()
    return _save_plan(conn, ctx, _local_step(conn, _compile_call(ctx)), started_at)


def _save_build(
    conn: sa.Connection, ctx: RunContext, answer: AgentAnswerJson, prompt: str, started_at: str
) -> BuildJson:
    run_id = ctx.run_id
    build = cast(BuildJson, _require(answer["structured"], BUILD_SCHEMA, "DecideST"))
    if not str(build.get("test_command", "")).strip():
        raise StepFailure("DECIDE_NO_TEST_COMMAND", "DecideST: the agent gave no test command")
    made = [
        NewArtifact(
            step_id="DecideST",
            idx=i,
            kind="patch",
            uri=artifact_uri(run_id, "DecideST", "", f"{item['path']}.patch"),
            inline=dict(item),
        )
        for i, item in enumerate(build["patch"])
    ]
    output: DecisionJson = {"prompt": prompt, "structured": build, "sessionId": answer.get("sessionId")}
    _persist(conn, run_id, "DecideST", dict(output), made, started_at, ctx.workflow_id)
    return build


def _decide_call(ctx: RunContext, plan: PlanJson, answer: Any) -> AgentRequest:
    return AgentRequest(
        run_id=ctx.run_id,
        step_id="DecideST",
        attempt=AGENT_ATTEMPT,
        agent="build",
        prompt=decide_prompt(ctx.intent, plan, answer),
        schema=BUILD_SCHEMA,
        context={"intent": ctx.intent, "plan": plan, "answer": answer, "workspace": str(ctx.workspace)},
    )


def decide(ctx: RunContext, plan: PlanJson, answer: Any = None) -> BuildJson:
    """DecideST: the build agent decides patches, tests and the test command."""
    started_at = datetime.now(UTC).isoformat()
    request = _decide_call(ctx, plan, answer)
    return _turn("DecideST", request, _save_build, ctx, request.prompt, started_at)


def decide_in(conn: sa.Connection, ctx: RunContext, plan: PlanJson, answer: Any = None) -> BuildJson:
    """DecideST of a local agent inside the caller's transaction (raises ``StepFailure``)."""
    started_at = datetime.now(UTC).isoformat()
    request = _decide_call(ctx, plan, answer)
    return _save_build(conn, ctx, _local_step(conn, request), request.prompt, started_at)
