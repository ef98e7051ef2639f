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

    def as_json(self) -> dict[str, Any]:
        extra = {"toolchain": self.toolchain} if self.toolchain else {}
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
    err_code: (
        str  # NONE | BOOT_FAIL | CMD_NONZERO | TIMEOUT | OOM | NET_FAIL | UPLOAD_FAIL | DOWNLOAD_FAIL | DISK_QUOTA
    )
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


class Sandbox(Protocol):
    """Runs a command in isolation. Never retries by itself: the workflow step owns retries."""

    provider: str

    def run(self, request: SandboxRequest, on_chunk: ChunkSink | None = None) -> SandboxResult:
        """Run ``request.cmd``; every piece of output is also handed to ``on_chunk`` as it arrives."""
        ...

    def kill(self, task_key: str) -> bool:
        """Stop the running command of ``task_key`` (its whole process tree / sandbox); False if none runs."""
        ...
