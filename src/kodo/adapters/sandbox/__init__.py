"""The sandbox port: run one command for one fan-out task and report what happened."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# A streaming sink for command output: (stream "stdout" | "stderr", sequence number, text).
ChunkSink = Callable[[str, int, str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxRequest:
    task_key: str
    cmd: str
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout_ms: int = 300_000
    cpu: int = 1
    mem_mb: int = 512
    net: bool = False
    env_ref: str = "local-python-3.11"
    # An installed template (a virtual environment): mounted read-only, its ``bin`` first on PATH.
    toolchain: str | None = None
    # A provider template registered for the recipe's deps (``kodo sbx template register``): E2B boots it.
    template_id: str | None = None
    # The execution ledger's ids: the sandbox keeps the completed result under ``idempotency_key`` (the same
    # for every execution of one task attempt) and ``recall`` returns it instead of running the command again.
    idempotency_key: str | None = None
    execution_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        extra = {"toolchain": self.toolchain} if self.toolchain else {}
        if self.template_id:
            extra["templateId"] = self.template_id
        return extra | {
            "taskKey": self.task_key,
            "cmd": self.cmd,
            "workdir": self.workdir,
            "env": self.env,
            "timeoutMs": self.timeout_ms,
            "limits": {"cpu": self.cpu, "memMB": self.mem_mb},
            "net": self.net,
            "envRef": self.env_ref,
            "filesIn": [],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxResult:
    exit: int
    stdout: str
    stderr: str
    # NONE | BOOT_FAIL | CMD_NONZERO | TIMEOUT | OOM | NET_FAIL | UPLOAD_FAIL | DOWNLOAD_FAIL | DISK_QUOTA
    # | WORKSPACE_TOO_LARGE | FILES_OUT_TOO_LARGE (E2B's workspace bounds)
    err_code: str
    sandbox_ref: str
    wall_ms: int = 0
    cpu_ms: int = 0
    mem_peak_mb: int = 0
    files_out: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def as_json(self, task_key: str) -> dict[str, Any]:
        return {
            "exit": self.exit,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "filesOut": self.files_out,
            "metrics": {"wallMs": self.wall_ms, "cpuMs": self.cpu_ms, "memPeakMB": self.mem_peak_mb},
            "sandboxRef": self.sandbox_ref,
            "errCode": self.err_code,
            "taskKey": task_key,
            "raw": self.raw,
        }

    @staticmethod
    def from_json(document: dict[str, Any]) -> SandboxResult:
        metrics = document.get("metrics") or {}
        return SandboxResult(
            exit=int(document["exit"]),
            stdout=str(document.get("stdout", "")),
            stderr=str(document.get("stderr", "")),
            err_code=str(document["errCode"]),
            sandbox_ref=str(document.get("sandboxRef", "")),
            wall_ms=int(metrics.get("wallMs", 0)),
            cpu_ms=int(metrics.get("cpuMs", 0)),
            mem_peak_mb=int(metrics.get("memPeakMB", 0)),
            files_out=list(document.get("filesOut") or []),
            raw=dict(document.get("raw") or {}),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredResult:
    """A completed execution's result as its sandbox kept it under the idempotency key."""

    execution_id: str
    finished_at: str  # ISO 8601, when the command ended
    result: SandboxResult


def stored_document(request: SandboxRequest, result: SandboxResult, finished_at: str) -> dict[str, Any]:
    """What a sandbox keeps under ``request.idempotency_key`` once the command has ended."""
    return {
        "idempotencyKey": request.idempotency_key,
        "executionId": request.execution_id,
        "taskKey": request.task_key,
        "finishedAt": finished_at,
        "result": result.as_json(request.task_key),
    }


def stored_result(document: dict[str, Any] | None) -> StoredResult | None:
    """A kept document back as a StoredResult (``None`` stays ``None``)."""
    if document is None:
        return None
    return StoredResult(
        execution_id=str(document["executionId"]),
        finished_at=str(document["finishedAt"]),
        result=SandboxResult.from_json(document["result"]),
    )


def keeps_result(request: SandboxRequest, result: SandboxResult) -> bool:
    """Whether a result is kept: the request has an idempotency key and the command was not cancelled."""
    return bool(request.idempotency_key and request.execution_id) and not result.raw.get("canceled")


class ResultBook(Protocol):
    """Where a sandbox that has no disk of its own (the mock) keeps completed results."""

    def keep(self, idempotency_key: str, execution_id: str, document: dict[str, Any]) -> None: ...

    def find(self, idempotency_key: str) -> dict[str, Any] | None: ...


class Sandbox(Protocol):
    """Runs a command in isolation. Never retries by itself: the workflow step owns retries."""

    provider: str

    def run(self, request: SandboxRequest, on_chunk: ChunkSink | None = None) -> SandboxResult:
        """Run ``request.cmd``; every piece of output is also handed to ``on_chunk`` as it arrives."""
        ...

    def kill(self, task_key: str) -> bool:
        """Stop the running command of ``task_key`` (its whole process tree / sandbox); False if none runs."""
        ...

    def recall(self, request: SandboxRequest) -> StoredResult | None:
        """The result kept under ``request.idempotency_key`` by an execution that ran to its end, if any."""
        ...

    def release(self, request: SandboxRequest) -> None:
        """kodo has recorded the result of ``request``: free what was kept only to recall it (E2B: the sandbox)."""
        ...
