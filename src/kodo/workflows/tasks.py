"""``ExecuteTask``: one fan-out child per test on sbxQ (workflow id = taskKey), one sandbox run each.

The step retries only infrastructure failures (BOOT/NET/UPLOAD/DOWNLOAD), three attempts with backoff;
every attempt writes its own ``app.sbx_runs`` row and artifact index, keyed by attempt, so a replayed
attempt writes nothing new.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, EnqueueOptions
from dbos._error import DBOSWorkflowCancelledError

from kodo import telemetry
from kodo.adapters.sandbox import SandboxRequest, SandboxResult
from kodo.errors import Conflict, StepFailure
from kodo.identity import artifact_uri, task_key_for
from kodo.models import RETRYABLE_SANDBOX_CODES, STEP_PHASES, NewArtifact
from kodo.store import artifacts, receipts, runs, sandbox_runs, steps
from kodo.workflows import cancellation, completions, delivery, environments, evals, observe
from kodo.workflows.queues import partition_for
from kodo.workflows.runtime import own_transaction, services, transact
from kodo.workflows.templates import default_resolution

STEP_ID = "ExecuteST"
TASK_WORKFLOW = "ExecuteTask"  # the child workflow of one task, on sbxQ


def artifact_set(run_id: str, task_key: str, attempt: int, provider: str, result: dict[str, Any]) -> list[NewArtifact]:
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
    """The sandbox failed for an infrastructure reason; the step is retried."""


def _record_sandbox_run(
    conn: sa.Connection,
    run_id: str,
    task_key: str,
    attempt: int,
    provider: str,
    request: dict[str, Any],
    response: dict[str, Any],
    made: list[NewArtifact],
) -> None:
    """The sandbox ledger row and the task's artifacts (both insert-once: safe to run again)."""
    sandbox_runs.record(
        conn, run_id=run_id, task_key=task_key, attempt=attempt, provider=provider, request=request, response=response
    )
    artifacts.add_all(conn, run_id, made)


@DBOS.step(name="executeTask", retries_allowed=True, max_attempts=3, interval_seconds=1.0, backoff_rate=2.0)
def run_sandbox(task: dict[str, Any]) -> dict[str, Any]:
    svc = services()
    status = DBOS.step_status
    attempt = (status.current_attempt or 0) + 1 if status is not None else 1
    booting = time.monotonic()
    toolchain, build_failed = environments.prepare(svc.settings, svc.sandbox.provider, task.get("template"))
    request = SandboxRequest(
        task_key=task["taskKey"],
        cmd=task["cmd"],
        workdir=task.get("workdir"),
        timeout_ms=task.get("timeoutMs", svc.settings.sbx_default_timeout_ms),
        net=bool(task.get("net", svc.settings.sbx_default_net)),
        env_ref=str((task.get("template") or {}).get("templateRef") or "local-python-3.11"),
        toolchain=str(toolchain.path) if toolchain else None,
    )
    # An operator cancel kills the running command (see kodo.workflows.cancellation) and records nothing.
    with cancellation.watching(request.task_key) as watch:
        if svc.settings.chaos_sleep_execute:
            watch.sleep(svc.settings.chaos_sleep_execute / 1000)
        result: SandboxResult | None = build_failed
        if result is None and not watch.canceled:
            with observe.external_call(
                "sandbox", "run", provider=svc.sandbox.provider, task_key=request.task_key, attempt=attempt
            ) as outcome:
                result = svc.sandbox.run(request)
                outcome.report(err_code=result.err_code, exit=result.exit, wall_ms=result.wall_ms)
    if result is None or watch.canceled:
        raise DBOSWorkflowCancelledError(f"task {request.task_key} was cancelled; its sandbox was stopped")
    response = result.as_json(request.task_key)
    if task.get("template"):
        response["template"] = boot_record(task["template"], result, booting, svc.settings.chaos_sleep_execute)
        if toolchain is not None:  # an installed template: cold (built for this task) or warm
            response["template"] |= environments.describe(toolchain)
    made = artifact_set(task["runId"], request.task_key, attempt, svc.sandbox.provider, response)
    response["attempt"] = attempt
    response["artifactIndexRef"] = made[0].uri
    own_transaction(
        "executeTask.record",
        _record_sandbox_run,
        task["runId"],
        request.task_key,
        attempt,
        svc.sandbox.provider,
        request.as_json() | dict(task.get("template") or {}),
        response,
        made,
    )
    if result.err_code in RETRYABLE_SANDBOX_CODES:
        raise SandboxInfrastructureFailure(
            result.err_code, f"sandbox {result.err_code} on attempt {attempt}: {result.stderr.strip()}"
        )
    return response


@DBOS.workflow(name=TASK_WORKFLOW, max_recovery_attempts=10)
def execute_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one fan-out task; returns the sandbox response of its last attempt."""
    with observe.bound(task["runId"], None):  # the task's own DBOS workflow id is bound too
        return run_sandbox(task)


# --- the parent's side: plan the tasks, fan them out, aggregate them as ExecuteST ---------------


def plan_tasks(
    ctx: dict[str, Any], build: dict[str, Any], template: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One task per test (``<test_command> <test>``), or one task running the command as is.

    The resolved sandbox template (its key and ref) is part of every task key.
    """
    settings = services().settings
    template = template or default_resolution()
    command = str(build["test_command"])
    tests = [str(t) for t in build.get("tests", [])]
    commands: list[tuple[str, str | None]] = [(f"{command} {test}", test) for test in tests] or [(command, None)]
    tasks = []
    for cmd, test in commands:
        request: dict[str, Any] = {
            "cmd": cmd,
            "test": test,
            "templateKey": template["templateKey"],
            "templateRef": template["templateRef"],
        }
        if ctx["generation"] > 1:  # a repair runs its tasks afresh, as new child workflows
            request["generation"] = ctx["generation"]
        tasks.append(
            {
                "taskKey": task_key_for(ctx["intentId"], ctx["runId"], request),
                "runId": ctx["runId"],
                "cmd": cmd,
                "workdir": ctx["workspace"],
                "timeoutMs": settings.sbx_default_timeout_ms,
                "net": settings.sbx_default_net,
                "template": template,
            }
        )
    return tasks


def fan_out(
    ctx: dict[str, Any], tasks: list[dict[str, Any]], *, workflow_name: str = TASK_WORKFLOW
) -> list[dict[str, Any]]:
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
                "priority": int(ctx.get("priority") or 1),
                "app_version": settings.app_version,
            }
            partition = partition_for(settings, ctx.get("partitionKey"))
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


def _merge(tasks: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, Any]:
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
    ctx: dict[str, Any],
    build: dict[str, Any],
    tasks: list[dict[str, Any]],
    results: list[dict[str, Any]],
    started_at: str,
) -> dict[str, Any]:
    run_id = ctx["runId"]
    merged = _merge(tasks, results)
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
        output=merged,
        started_at=datetime.fromisoformat(started_at),
        **observe.step(ctx["workflowId"], "ExecuteST", attempt),
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
    ctx: dict[str, Any],
    build: dict[str, Any],
    tasks: list[dict[str, Any]],
    results: list[dict[str, Any]],
    started_at: str,
) -> dict[str, Any]:
    """ExecuteST: the receipt, the step row and the run's final projection, with the step's checkpoint."""
    return transact("ExecuteST", _save_execution, ctx, build, tasks, results, started_at)
