"""``ExecuteTask``: one fan-out child per test on sbxQ (workflow id = taskKey), one sandbox run each.

The step retries only infrastructure failures (BOOT/NET/UPLOAD/DOWNLOAD), three attempts with backoff;
every attempt writes its own ``app.sbx_runs`` row and artifact index, keyed by attempt, so a replayed
attempt writes nothing new.
"""

from __future__ import annotations

import time
from typing import Any

from dbos import DBOS

from kodo.adapters.sandbox import SandboxRequest, SandboxResult
from kodo.errors import StepFailure
from kodo.identity import artifact_uri
from kodo.models import RETRYABLE_SANDBOX_CODES, NewArtifact
from kodo.store import artifacts, sandbox_runs
from kodo.workflows.runtime import services

STEP_ID = "ExecuteST"


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


class SandboxInfrastructureFailure(StepFailure):
    """The sandbox failed for an infrastructure reason; the step is retried."""


@DBOS.step(name="executeTask", retries_allowed=True, max_attempts=3, interval_seconds=1.0, backoff_rate=2.0)
def run_sandbox(task: dict[str, Any]) -> dict[str, Any]:
    svc = services()
    status = DBOS.step_status
    attempt = (status.current_attempt or 0) + 1 if status is not None else 1
    if svc.settings.chaos_sleep_execute:
        time.sleep(svc.settings.chaos_sleep_execute / 1000)
    request = SandboxRequest(
        task_key=task["taskKey"],
        cmd=task["cmd"],
        workdir=task.get("workdir"),
        timeout_ms=task.get("timeoutMs", svc.settings.sbx_default_timeout_ms),
        net=bool(task.get("net", svc.settings.sbx_default_net)),
    )
    result: SandboxResult = svc.sandbox.run(request)
    response = result.as_json(request.task_key)
    made = artifact_set(task["runId"], request.task_key, attempt, svc.sandbox.provider, response)
    response["attempt"] = attempt
    response["artifactIndexRef"] = made[0].uri
    with svc.engine.begin() as conn:
        sandbox_runs.record(
            conn,
            run_id=task["runId"],
            task_key=request.task_key,
            attempt=attempt,
            provider=svc.sandbox.provider,
            request=request.as_json(),
            response=response,
        )
        for artifact in made:
            artifacts.add(conn, task["runId"], artifact)
    if result.err_code in RETRYABLE_SANDBOX_CODES:
        raise SandboxInfrastructureFailure(
            result.err_code, f"sandbox {result.err_code} on attempt {attempt}: {result.stderr.strip()}"
        )
    return response


@DBOS.workflow(name="ExecuteTask", max_recovery_attempts=10)
def execute_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one fan-out task; returns the sandbox response of its last attempt."""
    return run_sandbox(task)
