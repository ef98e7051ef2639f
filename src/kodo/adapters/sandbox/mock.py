"""``SBX_MODE=mock``: the predecessor's magic commands, decided by the command's first word.

* ``INFRA_FAIL`` → ``BOOT_FAIL`` always (retryable; exhausts the step's retries)
* ``FLAKY_INFRA_FAIL`` → ``BOOT_FAIL`` for the first two attempts of a task in this process, then success
* ``FAIL_ME`` → ``CMD_NONZERO``, exit 1 (terminal)
* ``TIMEOUT_ME`` → ``TIMEOUT`` (terminal)
* anything else → success, stdout ``OK: <cmd>`` (also streamed as chunk 0), one output file ``out.json``

With a :class:`ResultBook` (kodo gives it ``app.mock_sandbox_results``), a request with an idempotency key
has its result kept there when the "command" ends, and ``recall`` returns it, as a real sandbox's disk would.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from datetime import UTC, datetime

from kodo import faults
from kodo.adapters.sandbox import (
    ChunkSink,
    ResultBook,
    SandboxRequest,
    SandboxResult,
    StoredResult,
    keeps_result,
    stored_document,
    stored_result,
)


class MockSandbox:
    provider = "mock"

    def __init__(self, book: ResultBook | None = None) -> None:
        self._flaky_calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.book = book

    def release(self, request: SandboxRequest) -> None:
        """Nothing to release: the kept result stays (it is the execution's record on this side)."""
        del request

    def recall(self, request: SandboxRequest) -> StoredResult | None:
        if self.book is None or not request.idempotency_key:
            return None
        return stored_result(self.book.find(request.idempotency_key))

    def run(self, request: SandboxRequest, on_chunk: ChunkSink | None = None) -> SandboxResult:
        result = self._run(request, on_chunk)
        faults.hit("sandbox.during_command")  # the command has run; its result is not kept yet
        if self.book is not None and request.idempotency_key and request.execution_id and keeps_result(request, result):
            finished = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            self.book.keep(request.idempotency_key, request.execution_id, stored_document(request, result, finished))
        return result

    def kill(self, task_key: str) -> bool:
        """Mock commands finish at once: there is never anything running to kill."""
        del task_key
        return False

    def _run(self, request: SandboxRequest, on_chunk: ChunkSink | None) -> SandboxResult:
        words = request.cmd.split()
        first = words[0] if words else ""
        raw = {"mock": True, "provider": self.provider, "cmd": request.cmd}
        if first == "INFRA_FAIL":
            return SandboxResult(
                exit=1,
                stdout="",
                stderr="sandbox failed to boot",
                err_code="BOOT_FAIL",
                sandbox_ref="mock-runner",
                raw=raw,
            )
        if first == "FLAKY_INFRA_FAIL":
            with self._lock:
                self._flaky_calls[request.task_key] += 1
                calls = self._flaky_calls[request.task_key]
            if calls <= 2:
                return SandboxResult(
                    exit=1,
                    stdout="",
                    stderr=f"flaky boot failure {calls}",
                    err_code="BOOT_FAIL",
                    sandbox_ref="mock-runner",
                    raw=raw,
                )
        if first == "FAIL_ME":
            return SandboxResult(
                exit=1,
                stdout="",
                stderr="command failed: FAIL_ME",
                err_code="CMD_NONZERO",
                sandbox_ref="mock-runner",
                wall_ms=1,
                cpu_ms=1,
                mem_peak_mb=1,
                raw=raw,
            )
        if first == "TIMEOUT_ME":
            return SandboxResult(
                exit=124,
                stdout="",
                stderr="command timed out",
                err_code="TIMEOUT",
                sandbox_ref="mock-runner",
                wall_ms=request.timeout_ms,
                raw=raw,
            )
        out = "{}"
        if on_chunk is not None:
            on_chunk("stdout", 0, f"OK: {request.cmd}\n")
        return SandboxResult(
            exit=0,
            stdout=f"OK: {request.cmd}\n",
            stderr="",
            err_code="NONE",
            sandbox_ref="mock-runner",
            wall_ms=1,
            cpu_ms=1,
            mem_peak_mb=1,
            files_out=[{"path": "out.json", "inline": out, "sha256": hashlib.sha256(out.encode()).hexdigest()}],
            raw=raw,
        )
