"""``SBX_PROVIDER=e2b``: run the task's command in an E2B cloud sandbox (the ``e2b`` SDK).

Per task: ``Sandbox.create`` (the ``template`` given to the constructor, else the SDK's default),
``commands.run`` with the request's env and timeout and stdout/stderr streamed to the chunk sink,
then the sandbox is killed. Network access follows ``request.net``.

**Idempotency**: with an idempotency key, the sandbox is created with the metadata ``kodoIdempotencyKey``;
once the command has ended its result is written into the sandbox's own filesystem
(``/home/user/.kodo/executions/<key>.json``) and the sandbox is kept (until its own timeout) instead of
killed; ``release`` kills it once kodo has recorded the result. ``recall`` finds a kept sandbox by that
metadata (a worker that died after the command leaves it alive), reads the result back and kills it.
**Template**: the request's ``template_id`` (a registered E2B template holding the recipe's deps) is booted, else
the constructor's; with a ``toolchain`` (the deps installed flat on this host), its files are uploaded and made
executable once per sandbox before the command, which runs with them first on ``PATH``/``PYTHONPATH``.
**Workspace** (:mod:`kodo.adapters.sandbox.e2b_workspace`): with a ``workdir``, its files are uploaded to
``/home/user/workspace`` before the command (over ``SBX_E2B_UPLOAD_MAX_MB``: ``WORKSPACE_TOO_LARGE`` and no
sandbox is created), the command runs there, and the files it changed, created or deleted come back as ``filesOut``
(the workflow writes them into the local workspace through the patch ledger).
SDK exceptions go through the failure classifier (``failures.classify_exception``); a command that
ran and exited non-zero is ``CMD_NONZERO`` (``OOM`` on an allocation failure), a command over its
time limit is ``TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from kodo.adapters.sandbox import (
    ChunkSink,
    SandboxRequest,
    SandboxResult,
    StoredResult,
    keeps_result,
    stored_document,
    stored_result,
)
from kodo.adapters.sandbox.e2b_workspace import (
    PACKAGES_MAX_BYTES,
    WORKSPACE_DIRECTORY,
    LocalFile,
    WorkspaceLimits,
    WorkspaceRefused,
    download,
    install_packages,
    local_files,
    upload,
    with_packages,
)
from kodo.adapters.sandbox.failures import classify_exception, classify_exit
from kodo.adapters.sandbox.local import MAX_OUTPUT_BYTES
from kodo.errors import ConfigurationError

RESULT_DIRECTORY = "/home/user/.kodo/executions"
KEY_METADATA = "kodoIdempotencyKey"


class E2BSandbox:
    """Runs each command in a fresh E2B sandbox."""

    provider = "e2b"

    def __init__(
        self,
        api_key: str | None,
        *,
        template: str | None = None,
        api_url: str | None = None,
        domain: str | None = None,
        sandbox_url: str | None = None,
        request_timeout_s: float = 30.0,
        retries: int = 0,
        limits: WorkspaceLimits | None = None,
    ) -> None:
        if not api_key:
            raise ConfigurationError("SBX_PROVIDER=e2b needs E2B_API_KEY (an E2B API key); it is not set")
        self.template = template
        self.limits = limits or WorkspaceLimits(
            upload_max_bytes=50 << 20, files_out_max_count=200, files_out_max_bytes=10 << 20
        )
        self._connection: dict[str, Any] = {
            "api_key": api_key,
            "request_timeout": request_timeout_s,
            "retries": retries,
        }
        if api_url:
            self._connection["api_url"] = api_url
        if domain:
            self._connection["domain"] = domain
        if sandbox_url:  # every sandbox's envd at one address (a loopback stand-in of E2B, in the tests)
            self._connection["sandbox_url"] = sandbox_url
        self._live: dict[str, Any] = {}
        self._kept: dict[str, Any] = {}  # idempotency key → the sandbox holding its result
        self._lock = threading.Lock()

    def posture(self) -> dict[str, Any]:
        return {"provider": self.provider, "isolation": "e2b", "template": self.template or "default"}

    def kill(self, task_key: str) -> bool:
        """Kill the sandbox running ``task_key``; False if none is running."""
        with self._lock:
            sandbox = self._live.get(task_key)
        if sandbox is None:
            return False
        try:
            return bool(sandbox.kill())
        except Exception:
            return False

    # --- idempotency ---------------------------------------------------------------------------

    def _find(self, idempotency_key: str) -> list[Any]:
        """Sandboxes kept for ``idempotency_key``: this process's own, else those E2B lists by metadata."""
        from e2b import Sandbox, SandboxQuery

        with self._lock:
            mine = self._kept.get(idempotency_key)
        if mine is not None:
            return [mine]
        query = SandboxQuery(metadata={KEY_METADATA: idempotency_key})
        found = []
        for info in Sandbox.list(query=query, **self._connection).next_items():
            with contextlib.suppress(Exception):
                found.append(Sandbox.connect(info.sandbox_id, **self._connection))
        return found

    def recall(self, request: SandboxRequest) -> StoredResult | None:
        """The result kept in a sandbox's filesystem under the idempotency key (that sandbox is then killed)."""
        key = request.idempotency_key
        if not key:
            return None
        try:
            candidates = self._find(key)
        except Exception:
            return None  # E2B unreachable: nothing can be recalled; the command runs (a visible re-execution)
        for sandbox in candidates:
            try:
                text = sandbox.files.read(f"{RESULT_DIRECTORY}/{key}.json")
            except Exception:
                continue
            self.release(request)
            return stored_result(json.loads(text))
        return None

    def release(self, request: SandboxRequest) -> None:
        """kodo has recorded the result: kill the sandbox kept for it."""
        key = request.idempotency_key
        if not key:
            return
        with self._lock:
            kept = self._kept.pop(key, None)
        try:
            for sandbox in [kept] if kept is not None else self._find(key):
                sandbox.kill()
        except Exception:
            return  # the sandbox's own timeout reaps it

    def _keep(self, sandbox: Any, request: SandboxRequest, result: SandboxResult) -> bool:
        """Write the result into the sandbox and keep the sandbox; False if it could not be written."""
        if not keeps_result(request, result) or result.err_code in {"BOOT_FAIL", "NET_FAIL"}:
            return False
        finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            sandbox.files.write(
                f"{RESULT_DIRECTORY}/{request.idempotency_key}.json",
                json.dumps(stored_document(request, result, finished), ensure_ascii=False),
            )
        except Exception:
            return False
        with self._lock:
            self._kept[str(request.idempotency_key)] = sandbox
        return True

    def run(self, request: SandboxRequest, on_chunk: ChunkSink | None = None) -> SandboxResult:
        from e2b import CommandExitException, Sandbox, TimeoutException

        started = time.monotonic()
        timeout_s = max(1.0, request.timeout_ms / 1000)
        sequence = iter(range(1 << 62))
        out: dict[str, list[str]] = {"stdout": [], "stderr": []}

        kept = {"stdout": 0, "stderr": 0}

        def sink(stream: str) -> Any:
            def take(text: str) -> None:
                if kept[stream] < MAX_OUTPUT_BYTES:  # what is kept in memory is capped as the local sandbox's
                    out[stream].append(text)
                    kept[stream] += len(text.encode("utf-8", errors="replace"))
                if on_chunk is not None:
                    on_chunk(stream, next(sequence), text)

            return take

        template = request.template_id or self.template  # a registered template (hot) holds the recipe's deps
        raw: dict[str, Any] = {"provider": self.provider, "template": template, "net": request.net}
        sandbox: Any = None
        uploaded: list[LocalFile] | None = None
        packages: list[LocalFile] | None = None
        files_out: list[dict[str, Any]] = []
        try:
            if request.workdir:  # refused before any sandbox exists: nothing is uploaded or run
                uploaded = local_files(Path(request.workdir), self.limits.upload_max_bytes)
                raw["uploadedFiles"] = len(uploaded)
            if request.toolchain:  # an installed template's packages (kodo.adapters.toolchains.ensure_packages)
                packages = local_files(Path(request.toolchain), PACKAGES_MAX_BYTES)
            metadata = {"kodoTaskKey": request.task_key[:64]}
            if request.idempotency_key:
                metadata[KEY_METADATA] = request.idempotency_key
            sandbox = Sandbox.create(
                template=template,
                timeout=int(timeout_s) + 60,
                metadata=metadata,
                allow_internet_access=request.net,
                **self._connection,
            )
            raw["sandboxId"] = sandbox.sandbox_id
            raw["bootMs"] = int((time.monotonic() - started) * 1000)
            with self._lock:
                self._live[request.task_key] = sandbox
            if uploaded is not None:
                raw["uploadBatches"] = _stage(upload, sandbox, uploaded, code="UPLOAD_FAIL")
            if packages is not None:
                installing = time.monotonic()
                batches = _stage(install_packages, sandbox, packages, code="UPLOAD_FAIL")
                raw["packages"] = {
                    "files": len(packages),
                    "batches": batches,
                    "installMs": int((time.monotonic() - installing) * 1000),
                }
            result = sandbox.commands.run(
                with_packages(request.cmd) if packages is not None else request.cmd,
                envs=request.env or None,
                cwd=WORKSPACE_DIRECTORY if uploaded is not None else None,
                on_stdout=sink("stdout"),
                on_stderr=sink("stderr"),
                timeout=timeout_s,
            )
            exit_code, code = int(result.exit_code), "NONE"
            stdout, stderr = result.stdout or "".join(out["stdout"]), result.stderr or "".join(out["stderr"])
        except CommandExitException as error:
            exit_code = int(error.exit_code)
            stdout, stderr = error.stdout or "".join(out["stdout"]), error.stderr or "".join(out["stderr"])
            code = classify_exit(exit_code, stderr=stderr)
        except WorkspaceRefused as error:
            exit_code = 1
            stdout, stderr = "".join(out["stdout"]), _with("".join(out["stderr"]), str(error))
            code = error.code
            raw["error"] = str(error)
            uploaded = None
        except TimeoutException as error:
            exit_code = 124
            stdout, stderr = "".join(out["stdout"]), _with("".join(out["stderr"]), str(error))
            code = "TIMEOUT" if "sandboxId" in raw else classify_exception(error)
        except Exception as error:
            exit_code = 1
            stdout, stderr = "".join(out["stdout"]), _with("".join(out["stderr"]), f"{type(error).__name__}: {error}")
            code = classify_exception(error)
            raw["error"] = f"{type(error).__name__}: {error}"
        finally:
            with self._lock:
                self._live.pop(request.task_key, None)
        if uploaded is not None and sandbox is not None and code in {"NONE", "CMD_NONZERO"}:
            try:  # the command ran to its end: what it changed comes back, even when it exited non-zero
                files_out = _stage(download, sandbox, uploaded, self.limits, code="DOWNLOAD_FAIL")
            except WorkspaceRefused as error:
                code = error.code if code == "NONE" else code
                stderr = _with(stderr, str(error))
                raw["filesOutError"] = str(error)
            raw["filesOut"] = len(files_out)
        stdout, dropped_out = capped(stdout)
        stderr, dropped_err = capped(stderr)
        dropped = {name: n for name, n in (("stdout", dropped_out), ("stderr", dropped_err)) if n}
        if dropped:
            raw["truncatedBytes"] = dropped
        result = SandboxResult(
            exit=exit_code,
            stdout=stdout,
            stderr=stderr,
            err_code=code,
            sandbox_ref=f"e2b:{raw.get('sandboxId', 'none')}",
            wall_ms=int((time.monotonic() - started) * 1000),
            files_out=files_out,
            raw=raw,
        )
        if sandbox is not None and not self._keep(sandbox, request, result):
            try:
                sandbox.kill()
                raw["killed"] = True
            except Exception as error:
                raw["killed"] = False
                raw["killError"] = f"{type(error).__name__}: {error}"
        return result


def _stage(action: Any, *arguments: Any, code: str) -> Any:
    """Run an upload or download; an SDK failure becomes ``WorkspaceRefused(code)`` (retryable codes)."""
    try:
        return action(*arguments)
    except WorkspaceRefused:
        raise
    except Exception as error:
        raise WorkspaceRefused(code, f"{code}: {type(error).__name__}: {error}") from error


def capped(text: str) -> tuple[str, int]:
    """The first MAX_OUTPUT_BYTES of ``text`` (UTF-8) and how many bytes were dropped."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= MAX_OUTPUT_BYTES:
        return text, 0
    return data[:MAX_OUTPUT_BYTES].decode("utf-8", errors="ignore"), len(data) - MAX_OUTPUT_BYTES


def _with(text: str, line: str) -> str:
    return f"{text}\n{line}" if text else line
