"""``ExecuteTask``: one fan-out child per test on sbxQ (workflow id = taskKey), one sandbox run each.

The task retries only infrastructure failures (BOOT/NET/UPLOAD/DOWNLOAD), three attempts with backoff.
Each attempt is two steps: ``executeTask`` commits the execution's ledger row and runs the command (or
returns the result its sandbox kept under the attempt's idempotency key: ``reused``), and
``settleExecution`` records the result (``app.sbx_runs``, the artifact index, the ledger row) in one
transaction with its own DBOS checkpoint. See :mod:`kodo.workflows.execution_ledger`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from dbos import DBOS, EnqueueOptions
from dbos import error as dbos_errors

from kodo import faults, telemetry
from kodo.adapters.sandbox import SandboxRequest, SandboxResult
from kodo.adapters.sandbox.e2b_workspace import workspace_files
from kodo.errors import Conflict, StepFailure
from kodo.identity import artifact_uri, task_key_for
from kodo.models import RETRYABLE_SANDBOX_CODES, STEP_PHASES, NewArtifact
from kodo.store import artifacts, receipts, runs, sandbox_runs, steps
from kodo.workflows import (
    cancellation,
    completions,
    delivery,
    environments,
    evals,
    execution_ledger,
    observe,
    patches,
)
from kodo.workflows.context import RunContext, TaskJson
from kodo.workflows.outputs import BuildJson, ExecutionJson, SandboxResponseJson
from kodo.workflows.queues import partition_for
from kodo.workflows.runtime import Services, services, transact
from kodo.workflows.templates import TemplateJson, default_resolution

STEP_ID = "ExecuteST"
TASK_WORKFLOW = "ExecuteTask"  # the child workflow of one task, on sbxQ


def artifact_set(
    run_id: str, task_key: str, attempt: int, provider: str, result: SandboxResponseJson
) -> list[NewArtifact]:
    """The per-attempt artifact set: index (idx 0) then stdout, stderr, files, raw, timings sorted by URI."""

    def uri(name: str) -> str:
        return artifact_uri(run_id, STEP_ID, task_key, name)

    entries: list[tuple[str, str, Any]] = [
        ("stdout", uri("stdout.log"), {"text": result["stdout"]}),
        ("stderr", uri("stderr.log"), {"text": result["stderr"]}),
        ("raw", uri("raw.json"), {"json": result.get("raw", {})}),
        ("timings", uri("metrics.json"), {"json": result["metrics"]}),
    ]
    for item in sorted(result.get("filesOut", []), key=lambda f: f["path"]):
        entries.append(("file", uri(f"files/{item['path']}"), {"text": item.get("inline", "")}))
    if result.get("template"):
        entries.append(("json_diagnostic", uri("sbx-boot.json"), {"json": result["template"]}))
    entries.sort(key=lambda e: e[1])
    index = {
        "taskKey": task_key,
        "provider": provider,
        "items": [{"kind": kind, "uri": u, "sha256": artifacts.digest(inline)} for kind, u, inline in entries],
        "rawRef": uri("raw.json"),
        "createdAt": "1970-01-01T00:00:00.000Z",
    }
    made = [
        NewArtifact(
            step_id=STEP_ID,
            idx=0,
            kind="artifact_index",
            uri=uri("index.json"),
            inline={"json": index},
            task_key=task_key,
            attempt=attempt,
        )
    ]
    made += [
        NewArtifact(step_id=STEP_ID, idx=i, kind=kind, uri=u, inline=inline, task_key=task_key, attempt=attempt)
        for i, (kind, u, inline) in enumerate(entries, start=1)
    ]
    return made


def boot_record(template: dict[str, Any], result: SandboxResult, booting: float, delay_ms: int) -> dict[str, Any]:
    """The task's template and boot time: the provider's own figure, else the time the call took beyond the
    command's wall time (and beyond any ``CHAOS_SLEEP_EXECUTE`` delay)."""
    reported = result.raw.get("bootMs")
    elapsed = int((time.monotonic() - booting) * 1000)
    boot = reported if isinstance(reported, int) else max(0, elapsed - result.wall_ms - delay_ms)
    fields = ("source", "templateId", "templateKey", "depsHash", "envRef")
    return {key: template.get(key) for key in fields} | {"bootMs": boot}


class SandboxInfrastructureFailure(StepFailure):
    """The sandbox failed for an infrastructure reason on every attempt."""


MAX_ATTEMPTS = 3  # infrastructure failures (BOOT/NET/UPLOAD/DOWNLOAD) are retried, with backoff
RETRY_INTERVAL_S = 1.0
RETRY_BACKOFF = 2.0


def sandbox_request(task: TaskJson, attempt: int, execution_id: str, toolchain: str | None = None) -> SandboxRequest:
    """The request of one execution: the task's command, with the execution's ids (also in the command's env)
    and the installed template it runs with (``toolchain``), if any."""
    settings = services().settings
    return SandboxRequest(
        task_key=task["taskKey"],
        cmd=task["cmd"],
        workdir=task.get("workdir"),
        env={"KODO_EXECUTION_ID": execution_id, "KODO_TASK_KEY": task["taskKey"], "KODO_ATTEMPT": str(attempt)},
        timeout_ms=task.get("timeoutMs", settings.sbx_default_timeout_ms),
        net=bool(task.get("net", settings.sbx_default_net)),
        env_ref=str((task.get("template") or {}).get("templateRef") or "local-python-3.11"),
        idempotency_key=execution_ledger.idempotency_key(task["taskKey"], attempt),
        execution_id=execution_id,
        toolchain=toolchain,
        template_id=(task.get("template") or {}).get("templateId"),
    )


@DBOS.step(name="executeTask")
def run_sandbox(task: TaskJson, attempt: int) -> SandboxResponseJson:
    """One execution of the task's command: its ledger row is committed first, then the sandbox's kept result
    is returned (``reused``) or the command runs. The result is recorded by :func:`settle`, with its checkpoint."""
    svc = services()
    booting = time.monotonic()
    # An installed template (a virtual environment built once per deps hash), or why it could not be built.
    toolchain, build_failed = environments.prepare(svc.settings, svc.sandbox.provider, task.get("template"))
    request = sandbox_request(task, attempt, uuid.uuid4().hex, str(toolchain.path) if toolchain else None)
    stored = execution_ledger.open_execution(svc, task["runId"], request, attempt)
    faults.hit("sandbox.before_command")
    if stored is not None:
        result = stored.result
    elif build_failed is not None:
        result = build_failed
    else:
        result = _run_command(svc, request, attempt)
    faults.hit("sandbox.after_command")
    response = cast(SandboxResponseJson, result.as_json(request.task_key))  # attempt and execution just below
    if task.get("template"):
        response["template"] = boot_record(task["template"], result, booting, svc.settings.chaos_sleep_execute)
        if toolchain is not None:  # an installed template: cold (built for this task) or warm
            response["template"] |= environments.describe(toolchain, result.raw)
    response["attempt"] = attempt
    response["execution"] = execution_ledger.reference(request, stored)
    return response


def _run_command(svc: Services, request: SandboxRequest, attempt: int) -> SandboxResult:
    # An operator cancel kills the running command (see kodo.workflows.cancellation) and records nothing
    # but the execution's end (interrupted).
    with cancellation.watching(request.task_key) as watch:
        if svc.settings.chaos_sleep_execute:
            watch.sleep(svc.settings.chaos_sleep_execute / 1000)
        result: SandboxResult | None = None
        if not watch.canceled:
            with observe.external_call(
                "sandbox", "run", provider=svc.sandbox.provider, task_key=request.task_key, attempt=attempt
            ) as outcome:
                result = svc.sandbox.run(request)
                outcome.report(err_code=result.err_code, exit=result.exit, wall_ms=result.wall_ms)
    if result is None or watch.canceled:
        execution_ledger.cancelled(request)
        raise dbos_errors.DBOSWorkflowCancelledError(f"task {request.task_key} was cancelled; its sandbox was stopped")
    return result


def _settle(conn: sa.Connection, task: TaskJson, response: SandboxResponseJson) -> SandboxResponseJson:
    svc = services()
    made = artifact_set(task["runId"], task["taskKey"], response["attempt"], svc.sandbox.provider, response)
    response["artifactIndexRef"] = made[0].uri
    sandbox_runs.record(
        conn,
        run_id=task["runId"],
        task_key=task["taskKey"],
        attempt=response["attempt"],
        provider=svc.sandbox.provider,
        request=sandbox_request(task, response["attempt"], response["execution"]["executionId"]).as_json()
        | dict(task.get("template") or {}),
        response=dict(response),
    )
    artifacts.add_all(conn, task["runId"], made)
    execution_ledger.settle(conn, response)
    return response


def settle(task: TaskJson, response: SandboxResponseJson) -> SandboxResponseJson:
    """The execution's result: its ``sbx_runs`` row, artifacts and ledger row, with this step's checkpoint."""
    return transact("settleExecution", _settle, task, response)


@DBOS.workflow(name=TASK_WORKFLOW, max_recovery_attempts=10)
def execute_task(task: TaskJson) -> SandboxResponseJson:
    """Run one fan-out task; returns the sandbox response of its last attempt."""
    with observe.bound(task["runId"], None):  # the task's own DBOS workflow id is bound too
        for attempt in range(1, MAX_ATTEMPTS + 1):
            response = run_sandbox(task, attempt)
            faults.hit("sandbox.before_settle")
            response = settle(task, response)
            execution_ledger.release(services(), task, response)
            if response["errCode"] not in RETRYABLE_SANDBOX_CODES:
                return response
            if attempt < MAX_ATTEMPTS:
                DBOS.sleep(RETRY_INTERVAL_S * RETRY_BACKOFF ** (attempt - 1))
        raise SandboxInfrastructureFailure(
            response["errCode"], f"sandbox {response['errCode']} on attempt {attempt}: {response['stderr'].strip()}"
        )


# --- the parent's side: plan the tasks, fan them out, aggregate them as ExecuteST ---------------


def plan_tasks(ctx: RunContext, build: BuildJson, template: TemplateJson | None = None) -> list[TaskJson]:
    """One task per test (``<test_command> <test>``), or one task running the command as is.

    The resolved sandbox template (its key and ref) is part of every task key.
    """
    settings = services().settings
    template = template or default_resolution()
    command = str(build["test_command"])
    tests = [str(t) for t in build.get("tests", [])]
    commands: list[tuple[str, str | None]] = [(f"{command} {test}", test) for test in tests] or [(command, None)]
    tasks: list[TaskJson] = []
    for cmd, test in commands:
        request: dict[str, Any] = {
            "cmd": cmd,
            "test": test,
            "templateKey": template["templateKey"],
            "templateRef": template["templateRef"],
        }
        if ctx.generation > 1:  # a repair runs its tasks afresh, as new child workflows
            request["generation"] = ctx.generation
        tasks.append(
            {
                "taskKey": task_key_for(ctx.intent_id, ctx.run_id, request),
                "runId": ctx.run_id,
                "cmd": cmd,
                "workdir": str(ctx.workspace),
                "timeoutMs": settings.sbx_default_timeout_ms,
                "net": settings.sbx_default_net,
                "template": dict(template),
            }
        )
    return tasks


def fan_out(
    tasks: Sequence[Mapping[str, Any]],
    *,
    priority: int | None,
    partition_key: str | None,
    workflow_name: str = TASK_WORKFLOW,
) -> list[Any]:
    """Start one ExecuteTask child (``workflow_name``) per task on sbxQ (id = taskKey) and wait for all of them.

    Each child's waiter is registered before it is enqueued; ``completions.settle`` blocks until its
    ``kodo_workflow_done`` notification (or a status re-read) says it ended, and ``get_result`` stays the one
    durable, checkpointed read per child (after a wake it returns on its first check).
    """
    svc = services()
    settings = svc.settings
    handles = []
    with completions.expecting(task["taskKey"] for task in tasks) as waiters:
        for task in tasks:
            options: EnqueueOptions = {
                "workflow_name": workflow_name,
                "queue_name": "sbxQ",
                "workflow_id": task["taskKey"],
                "priority": int(priority or 1),
                "app_version": settings.app_version,
            }
            partition = partition_for(settings, partition_key)
            if partition:
                options["queue_partition_key"] = partition
            trace_context = telemetry.current_context()
            if trace_context is not None:  # the child's spans stay on the run's trace
                options["otel_context"] = trace_context
            handles.append(DBOS.enqueue_workflow_with_options(options, task))
        results = []
        for handle in handles:
            child = handle.get_workflow_id()
            completions.settle(svc.engine, child, waiters.get(child))
            try:
                results.append(handle.get_result(polling_interval_sec=settings.queue_polling_interval_sec))
            except Exception as exc:
                raise StepFailure("SBX_RETRIES_EXHAUSTED", f"sandbox task {child} failed: {exc}") from exc
    return results


def _merge(tasks: list[TaskJson], results: list[SandboxResponseJson]) -> ExecutionJson:
    codes = [r.get("errCode", "NONE") for r in results]
    failed = next((r for r in results if r.get("errCode", "NONE") != "NONE"), None)
    metrics = [r.get("metrics", {}) for r in results]
    return {
        "exit": failed["exit"] if failed else 0,
        "stdout": "\n---\n".join(r.get("stdout", "") for r in results),
        "stderr": "\n---\n".join(r.get("stderr", "") for r in results),
        "filesOut": [f for r in results for f in r.get("filesOut", [])],
        "metrics": {
            "wallMs": max((m.get("wallMs", 0) for m in metrics), default=0),
            "cpuMs": sum(m.get("cpuMs", 0) for m in metrics),
            "memPeakMB": max((m.get("memPeakMB", 0) for m in metrics), default=0),
        },
        "sandboxRef": ",".join(r.get("sandboxRef", "") for r in results),
        "errCode": next((c for c in codes if c != "NONE"), "NONE"),
        "taskKey": "aggregated",
        "artifactIndexRef": ",".join(r.get("artifactIndexRef", "") for r in results),
        "raw": {
            "attempt": max((r.get("attempt", 1) for r in results), default=1),
            "tasks": [
                {
                    "taskKey": t["taskKey"],
                    "cmd": t["cmd"],
                    "errCode": r.get("errCode"),
                    "exit": r.get("exit"),
                    "artifactIndexRef": r.get("artifactIndexRef"),
                    "metrics": r.get("metrics"),
                    "attempt": r.get("attempt", 1),
                }
                for t, r in zip(tasks, results, strict=True)
            ],
        },
    }


def _save_execution(
    conn: sa.Connection,
    ctx: RunContext,
    build: BuildJson,
    tasks: list[TaskJson],
    results: list[SandboxResponseJson],
    started_at: str,
) -> ExecutionJson:
    run_id = ctx.run_id
    merged = _merge(tasks, results)
    # Files a sandbox changed in its copy of the workspace (E2B) land in the local one through the patch ledger
    # (write-ahead preimages, atomic writes) with this step's checkpoint; a failed run restores them.
    files = workspace_files(merged["filesOut"])
    if files:
        applied = patches.apply_files(
            conn, services().engine, run_id=run_id, workspace=ctx.workspace, step_id=STEP_ID, files=files
        )
        merged["raw"]["filesApplied"] = [item["targetPath"] for item in applied]
    attempt = steps.next_attempt(conn, run_id, "ExecuteST")
    seen = receipts.record(
        conn,
        run_id=run_id,
        step_id="ExecuteST",
        attempt=attempt,
        request={"decision": build, "tasks": [t["taskKey"] for t in tasks]},
        response=merged,
    )
    if seen > 1:
        raise Conflict(f"duplicate side effect receipt for {run_id} ExecuteST")
    steps.record(
        conn,
        run_id=run_id,
        step_id="ExecuteST",
        attempt=attempt,
        phase=STEP_PHASES["ExecuteST"],
        output=dict(merged),
        started_at=datetime.fromisoformat(started_at),
        **observe.step(ctx.workflow_id, "ExecuteST", attempt),
    )
    if merged["errCode"] == "NONE":
        evals.record_for_run(conn, ctx)  # with ExecuteST's checkpoint: stored exactly once
        # A run that asks for delivery ends with its delivery (kodo.workflows.delivery), not here.
        final = None if delivery.requested(ctx) else "succeeded"
        runs.update(conn, run_id, status=final, last_step="ExecuteST", clear_next_action=True)
    else:
        runs.update(conn, run_id, last_step="ExecuteST")
    return merged


def execute(
    ctx: RunContext,
    build: BuildJson,
    tasks: list[TaskJson],
    results: list[SandboxResponseJson],
    started_at: str,
) -> ExecutionJson:
    """ExecuteST: the receipt, the step row and the run's final projection, with the step's checkpoint."""
    return transact("ExecuteST", _save_execution, ctx, build, tasks, results, started_at)
