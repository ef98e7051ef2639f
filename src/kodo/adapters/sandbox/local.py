"""``SBX_PROVIDER=local``: run the task's command in the run's workspace under bubblewrap.

``bash -lc <cmd>`` runs with the workspace as its working directory and:

* **isolation** (``bwrap``): every namespace unshared (``--unshare-all``; the network too, always:
  sharing it would share the host's loopback, where kodo's API and Postgres listen, so a request
  with ``net`` is refused, see ``NET_REFUSED``), read-only ``/usr`` and the ``/bin``, ``/lib*``
  links, a minimal read-only ``/etc`` (``ETC_FILES``), a private size-limited ``/tmp``, its own
  ``/proc`` and ``/dev``, the workspace bound read-write and nothing else of the host,
  ``--die-with-parent``, ``--new-session``, a clean environment (``PATH``, ``HOME=/tmp``, ``LANG``
  and the request's ``env``);
* **limits** via ``prlimit``: memory (``RLIMIT_DATA``: heap and private writable mappings) from
  ``mem_mb``, CPU seconds (``RLIMIT_CPU``) from the timeout times ``cpu``, the size of any one file
  (``RLIMIT_FSIZE``: a bigger write fails at once with ``SIGXFSZ``) and the number of processes
  (``RLIMIT_NPROC``: the kernel counts every process of the user, so the limit is the user's count
  at start plus ``SandboxLimits.processes``; it does not bind a sandbox run as root). ``RLIMIT_AS``
  is not used: runtimes that reserve address space up front (Node's V8 reserves gigabytes it never
  touches) cannot even start under an address-space limit of a few hundred MB;
* a **workspace growth limit**: the workspace's size is sampled every second; growing by more than
  ``SandboxLimits.workspace_growth_mb`` kills the tree → ``DISK_QUOTA``;
* a **wall-clock timeout** after which the whole tree is killed (the sandbox's PID namespace dies
  with it) → ``TIMEOUT``; ``kill(task_key)`` does the same on demand (operator cancel).

**Idempotency**: a request with an idempotency key has its completed result written, once the command has
ended, to ``<workspace>/.kodo/executions/<key>.json`` (a temporary file, fsync, rename), and ``recall``
reads it back, so a re-execution after a crash returns it instead of running the command again. The
command sees ``KODO_EXECUTION_ID`` in its environment (the task's step puts it there).

Without a working ``bwrap`` (on PATH, and able to create its namespaces) the command still runs, with
the same limits and process-group kill but no isolation, and every result says ``raw.isolation = "none"``
(``posture()`` says so too); ``kodo.main`` refuses that at start-up unless ``SBX_ALLOW_UNISOLATED=true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kodo import faults
from kodo.adapters.sandbox import (
    ChunkSink,
    SandboxRequest,
    SandboxResult,
    StoredResult,
    keeps_result,
    stored_document,
    stored_result,
)
from kodo.adapters.sandbox.failures import classify_exit

MAX_OUTPUT_BYTES = 1024 * 1024
MB = 1024 * 1024
NET_REFUSED = (
    "kodo: net=true is refused by the local sandbox: sharing the host's network would let the command reach "
    "kodo's API and Postgres on loopback; use SBX_PROVIDER=e2b for tasks that need the network\n"
)
# All of /etc a command needs: users and groups, name resolution, certificates, the dynamic linker, time
# zone, and Debian's alternatives (tools on PATH that are links into /etc/alternatives).
ETC_FILES = (
    "passwd", "group", "hosts", "resolv.conf", "nsswitch.conf", "host.conf", "gai.conf", "ssl", "ca-certificates",
    "ca-certificates.conf", "pki", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives",
)  # fmt: skip
EXECUTIONS_DIRECTORY = ".kodo/executions"  # under the workspace: one <idempotency key>.json per result
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SYSTEM_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What one command may use beyond memory and CPU (``SBX_MAX_*`` settings)."""

    processes: int = 256  # RLIMIT_NPROC headroom over the user's processes at start
    file_mb: int = 1024  # RLIMIT_FSIZE: the largest file a command may write
    tmp_mb: int = 256  # the private /tmp (a tmpfs, in memory)
    workspace_growth_mb: int = 1024  # how much the workspace may grow during one command


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    canceled: bool = False
    timed_out: bool = False
    over_quota: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Stream:
    name: str
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    dropped: int = 0

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")


class LocalSandbox:
    """Runs commands on this host, isolated by bubblewrap when it is installed."""

    provider = "local"

    def __init__(
        self,
        *,
        bwrap: str | None = None,
        prlimit: str | None = None,
        use_bwrap: bool = True,
        limits: SandboxLimits | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.bwrap = _working(bwrap or shutil.which("bwrap")) if use_bwrap else None
        self.prlimit = prlimit or shutil.which("prlimit")
        self.isolation = "bwrap" if self.bwrap else "none"
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    def posture(self) -> dict[str, Any]:
        """How isolated commands are: ``isolation`` is ``bwrap`` or ``none``."""
        return {
            "provider": self.provider,
            "isolation": self.isolation,
            "bwrap": self.bwrap,
            "limits": "prlimit" if self.prlimit else "none",
            "network": "unshared (net refused)" if self.bwrap else "host",
            "processes": "unlimited (root)" if os.getuid() == 0 else self.limits.processes,
            "fileMB": self.limits.file_mb,
            "tmpMB": self.limits.tmp_mb,
            "workspaceGrowthMB": self.limits.workspace_growth_mb,
        }

    # --- cancellation --------------------------------------------------------------------------

    def kill(self, task_key: str) -> bool:
        """Kill the running command of ``task_key`` and its whole process tree; False if none runs."""
        with self._lock:
            running = self._running.get(task_key)
        if running is None:
            return False
        with running.lock:
            if running.done.is_set():
                return False
            running.canceled = True
            _kill_tree(running.proc.pid)
        return True

    def running(self) -> list[str]:
        """Task keys with a command running now."""
        with self._lock:
            return [key for key, item in self._running.items() if not item.done.is_set()]

    # --- one command ---------------------------------------------------------------------------

    def command(self, request: SandboxRequest, workdir: Path) -> list[str]:
        """The argv that runs ``request.cmd`` in ``workdir`` with limits (and isolation)."""
        argv: list[str] = []
        if self.prlimit:
            timeout_s = max(1, -(-request.timeout_ms // 1000))
            cpu_s = timeout_s * max(1, request.cpu) + 1
            argv += [self.prlimit, f"--data={request.mem_mb * MB}", f"--cpu={cpu_s}"]
            argv += [f"--fsize={self.limits.file_mb * MB}", f"--nproc={_user_tasks() + self.limits.processes}", "--"]
        if self.bwrap:
            argv += [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
            for name in ETC_FILES:
                argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
            for name in _SYSTEM_LINKS:
                path = Path("/") / name
                if path.is_symlink():
                    argv += ["--symlink", os.readlink(path), str(path)]
                elif path.is_dir():
                    argv += ["--ro-bind", str(path), str(path)]
            argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(self.limits.tmp_mb * MB), "--tmpfs", "/tmp"]
            if request.toolchain:  # the installed template, read-only
                argv += ["--ro-bind", request.toolchain, request.toolchain]
            argv += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir), "--"]
        command = request.cmd
        if request.toolchain:  # after the login shell's profile, which resets PATH
            venv = shlex.quote(request.toolchain)
            command = f'export VIRTUAL_ENV={venv} PATH={venv}/bin:"$PATH"; {command}'
        return [*argv, "bash", "-lc", command]

    def environment(self, request: SandboxRequest) -> dict[str, str]:
        return {"PATH": SANDBOX_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp", **request.env}

    # --- idempotency ---------------------------------------------------------------------------

    @staticmethod
    def result_path(request: SandboxRequest) -> Path | None:
        """Where the result of ``request`` is kept: only with a workspace and an idempotency key."""
        if not request.workdir or not request.idempotency_key:
            return None
        return Path(request.workdir).resolve() / EXECUTIONS_DIRECTORY / f"{request.idempotency_key}.json"

    def release(self, request: SandboxRequest) -> None:
        """Nothing to release: the kept result stays (it is the execution's record on this side)."""
        del request

    def recall(self, request: SandboxRequest) -> StoredResult | None:
        path = self.result_path(request)
        if path is None or not path.is_file():
            return None
        return stored_result(json.loads(path.read_text(encoding="utf-8")))

    def _keep(self, request: SandboxRequest, result: SandboxResult) -> None:
        """Write the result atomically (temporary file, fsync, rename, fsync of the directory)."""
        path = self.result_path(request)
        if path is None or not keeps_result(request, result):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _exclude_from_git(Path(str(request.workdir)).resolve())
        finished = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        data = json.dumps(stored_document(request, result, finished), ensure_ascii=False).encode()
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def run(self, request: SandboxRequest, on_chunk: ChunkSink | None = None) -> SandboxResult:
        scratch = None
        if request.workdir:
            workdir = Path(request.workdir).resolve()
        else:
            scratch = tempfile.mkdtemp(prefix="kodo-sbx-")
            workdir = Path(scratch)
        try:
            result = self._run(request, workdir, on_chunk)
            self._keep(request, result)
            return result
        finally:
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)

    def _boot_fail(self, request: SandboxRequest, message: str) -> SandboxResult:
        return SandboxResult(
            exit=1,
            stdout="",
            stderr=message,
            err_code="BOOT_FAIL",
            sandbox_ref=f"local:{self.isolation}",
            raw=self._raw(request, None),
        )

    def _raw(self, request: SandboxRequest, workdir: Path | None, **extra: Any) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "isolation": self.isolation,
            "net": request.net,
            "workdir": str(workdir) if workdir else None,
            "limits": {"memMB": request.mem_mb, "cpu": request.cpu, "timeoutMs": request.timeout_ms},
            **extra,
        }

    def _run(self, request: SandboxRequest, workdir: Path, on_chunk: ChunkSink | None) -> SandboxResult:
        if not workdir.is_dir():
            return self._boot_fail(request, f"workdir does not exist: {workdir}")
        if request.net and self.bwrap:
            return SandboxResult(
                exit=126,
                stdout="",
                stderr=NET_REFUSED,
                err_code="CMD_NONZERO",
                sandbox_ref=f"local:{self.isolation}",
                raw=self._raw(request, workdir, netRefused=True),
            )
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                self.command(request, workdir),
                cwd=workdir,
                env=self.environment(request),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as error:
            return self._boot_fail(request, f"sandbox failed to start: {error}")
        running = _Running(proc)
        with self._lock:
            self._running[request.task_key] = running
        streams = {"stdout": _Stream("stdout"), "stderr": _Stream("stderr")}
        sequence = _Counter()
        readers = [
            threading.Thread(target=_pump, args=(pipe, streams[name], on_chunk, sequence), daemon=True)
            for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))
        ]
        for reader in readers:
            reader.start()
        faults.hit("sandbox.during_command")
        status, usage = self._wait(running, request.timeout_ms / 1000, workdir)
        wall_ms = int((time.monotonic() - started) * 1000)
        for reader in readers:
            reader.join(timeout=5)
        with self._lock:
            if self._running.get(request.task_key) is running:
                del self._running[request.task_key]
        return self._result(request, workdir, running, streams, status, usage, wall_ms)

    def _wait(self, running: _Running, timeout_s: float, workdir: Path) -> tuple[int, Any]:
        """Wait for the command; kill the tree at the deadline or past the workspace growth limit; reap it
        with its resource usage.

        The leader is watched without being reaped (``WNOWAIT``), so its pid (= its process group)
        stays reserved while kodo kills what is left of the group.
        """
        pid = running.proc.pid
        exited = threading.Event()

        def watch() -> None:
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            exited.set()

        threading.Thread(target=watch, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        baseline, allowed = _tree_size(workdir), self.limits.workspace_growth_mb * MB
        while not exited.wait(max(0.0, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                running.timed_out = not running.canceled
            elif _tree_size(workdir) - baseline > allowed:
                running.over_quota = True
            else:
                continue
            _kill_tree(pid)
            exited.wait(30)
            break
        with running.lock:
            # Whatever the command left behind in its process group goes too (no process left behind).
            _kill_tree(pid, group_only=True)
            try:
                _pid, status, usage = os.wait4(pid, 0)
            except ChildProcessError:  # reaped elsewhere: the exit status is lost
                status, usage = 255 << 8, None
            running.done.set()
        running.proc.returncode = os.waitstatus_to_exitcode(status)
        return status, usage

    def _result(
        self,
        request: SandboxRequest,
        workdir: Path,
        running: _Running,
        streams: dict[str, _Stream],
        status: int,
        usage: Any,
        wall_ms: int,
    ) -> SandboxResult:
        signal_number = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        exit_code = 128 + signal_number if signal_number is not None else os.WEXITSTATUS(status)
        stdout, stderr = streams["stdout"].text(), streams["stderr"].text()
        if running.timed_out:
            exit_code = 124
            stderr += f"\nkodo: killed after the {request.timeout_ms} ms time limit\n"
        elif running.over_quota:
            stderr += f"\nkodo: killed: the workspace grew by more than {self.limits.workspace_growth_mb} MB\n"
        elif running.canceled:
            stderr += "\nkodo: canceled; the process tree was killed\n"
        if self.bwrap and exit_code == 1 and stderr.startswith("bwrap: ") and not stdout:
            return self._boot_fail(request, stderr.strip())
        code = classify_exit(
            exit_code,
            stderr=stderr,
            timed_out=running.timed_out,
            signal_number=signal_number,
            killed_by_kodo=running.canceled or running.timed_out or running.over_quota,
        )
        if running.canceled and code == "NONE":
            code = "CMD_NONZERO"
        if running.over_quota:
            code = "DISK_QUOTA"
        cpu_ms = int((usage.ru_utime + usage.ru_stime) * 1000) if usage is not None else 0
        mem_peak_mb = int(usage.ru_maxrss / 1024) if usage is not None else 0
        return SandboxResult(
            exit=exit_code,
            stdout=stdout,
            stderr=stderr,
            err_code=code,
            sandbox_ref=f"local:{self.isolation}:{running.proc.pid}",
            wall_ms=wall_ms,
            cpu_ms=cpu_ms,
            mem_peak_mb=mem_peak_mb,
            raw=self._raw(
                request,
                workdir,
                pid=running.proc.pid,
                signal=signal_number,
                canceled=running.canceled,
                timedOut=running.timed_out,
                truncatedBytes={name: s.dropped for name, s in streams.items() if s.dropped},
            ),
        )


def _user_tasks() -> int:
    """Processes and threads of this user now: what RLIMIT_NPROC counts (every one of the user's tasks)."""
    uid, count = os.getuid(), 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += sum(1 for _ in (entry / "task").iterdir())
    return count


def _tree_size(root: Path) -> int:
    """Bytes of the regular files under ``root`` (links not followed)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _working(bwrap: str | None) -> str | None:
    """``bwrap`` when it can create its namespaces here (a container may forbid user namespaces), else None."""
    if bwrap is None:
        return None
    probe = [bwrap, "--unshare-all", "--ro-bind", "/", "/", "--", "/bin/sh", "-c", "exit 0"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bwrap if done.returncode == 0 else None


def _exclude_from_git(workdir: Path) -> None:
    """Keep ``.kodo/`` out of the workspace's ``git status`` and diffs (its .git/info/exclude), once."""
    exclude = workdir / ".git" / "info" / "exclude"
    if not exclude.parent.is_dir():
        return
    text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
    if "/.kodo/" not in text.splitlines():
        exclude.write_text(text + ("" if text.endswith("\n") or not text else "\n") + "/.kodo/\n", encoding="utf-8")


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0

    def take(self) -> int:
        with self._lock:
            value, self._next = self._next, self._next + 1
            return value


def _pump(pipe: Any, stream: _Stream, on_chunk: ChunkSink | None, sequence: _Counter) -> None:
    """Read one pipe to its end: keep the first MAX_OUTPUT_BYTES, stream every chunk to ``on_chunk``."""
    with pipe:
        while chunk := pipe.read1(65536):
            if stream.size < MAX_OUTPUT_BYTES:
                kept = chunk[: MAX_OUTPUT_BYTES - stream.size]
                stream.chunks.append(kept)
                stream.size += len(kept)
                stream.dropped += len(chunk) - len(kept)
            else:
                stream.dropped += len(chunk)
            if on_chunk is not None:
                # A failing sink must not lose the command's output.
                with contextlib.suppress(Exception):
                    on_chunk(stream.name, sequence.take(), chunk.decode("utf-8", errors="replace"))


def _descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (by parent pid, from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(pid: int, *, group_only: bool = False) -> None:
    """SIGKILL the process group led by ``pid`` (and, unless ``group_only``, every descendant)."""
    victims = [] if group_only else _descendants(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for victim in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(victim, signal.SIGKILL)
