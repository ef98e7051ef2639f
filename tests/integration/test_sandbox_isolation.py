"""The local sandbox really isolates: no network, no writes outside the workspace, no process left behind.

Each command is a real ``bash -lc`` under bubblewrap (``SBX_PROVIDER=local``). Processes are found
on the host by a unique marker in their argv (``exec -a``), so "nothing left behind" is checked
against the host's own process table, and every check first sees the marker alive.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kodo.adapters.sandbox import SandboxRequest, SandboxResult
from kodo.adapters.sandbox.local import LocalSandbox
from kodo.errors import ConfigurationError
from kodo.main import build_sandbox
from kodo.settings import load_settings

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


@pytest.fixture
def sandbox(tmp_path: Path) -> LocalSandbox:
    built = build_sandbox(load_settings({"SBX_MODE": "live", "SBX_PROVIDER": "local", "KODO_HOME": str(tmp_path)}))
    assert isinstance(built, LocalSandbox)
    return built


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on the host's loopback that answers every connection with "hello"."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    server.close()


def marked(marker: str) -> list[int]:
    """Host pids whose command line carries ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {check}")


def spawn_tree(marker: str) -> str:
    """A command that leaves a background child, a setsid'd grandchild and a foreground sleeper."""
    return (
        f"(exec -a {marker}-bg sleep 300) & "
        f"setsid bash -c 'exec -a {marker}-daemon sleep 300' & "
        f"exec -a {marker}-fg sleep 300"
    )


def connect_cmd(port: int) -> str:
    return (
        'python3 -c \'import socket; s = socket.create_connection(("127.0.0.1", '
        f"{port}), timeout=3); print(s.recv(5).decode())'"
    )


@needs_bwrap
def test_posture_says_bwrap(sandbox: LocalSandbox, workspace: Path) -> None:
    """With bwrap installed the provider reports isolation "bwrap", in its posture and every result."""
    assert sandbox.posture()["isolation"] == "bwrap"
    result = sandbox.run(SandboxRequest(task_key="p", cmd="true", workdir=str(workspace)))
    assert result.raw["isolation"] == "bwrap" and result.err_code == "NONE"


@needs_bwrap
def test_no_network_without_net(sandbox: LocalSandbox, workspace: Path, listener: int) -> None:
    """A sandboxed command cannot reach a listener on the host's loopback; net=true is refused, saying why."""
    blocked = sandbox.run(SandboxRequest(task_key="n1", cmd=connect_cmd(listener), workdir=str(workspace)))
    assert blocked.err_code == "CMD_NONZERO" and "hello" not in blocked.stdout
    assert "Error" in blocked.stderr
    refused = sandbox.run(SandboxRequest(task_key="n2", cmd=connect_cmd(listener), workdir=str(workspace), net=True))
    assert refused.err_code == "CMD_NONZERO" and refused.raw["netRefused"] is True
    assert "hello" not in refused.stdout and "reach kodo's API and Postgres on loopback" in refused.stderr


def test_without_bwrap_the_network_is_open_and_posture_says_none(workspace: Path, listener: int) -> None:
    """Without bubblewrap the command runs unisolated, and says so: isolation "none"."""
    bare = LocalSandbox(use_bwrap=False)
    assert bare.posture()["isolation"] == "none"
    result = bare.run(SandboxRequest(task_key="n3", cmd=connect_cmd(listener), workdir=str(workspace)))
    assert result.raw["isolation"] == "none" and result.stdout.strip() == "hello"


@needs_bwrap
def test_cannot_write_outside_the_workspace(sandbox: LocalSandbox, workspace: Path, tmp_path: Path) -> None:
    """Writes land only in the workspace: system dirs are read-only, other host paths are not there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret\n")
    script = "; ".join(
        [
            "echo ws > in-workspace.txt",
            f"cat {outside}/secret.txt",
            f"echo x > {outside}/new.txt",
            "touch /usr/kodo-escape",
            "touch /etc/kodo-escape",
            "ls /root",
            "echo scratch > /tmp/scratch.txt",
            "true",
        ]
    )
    result = sandbox.run(SandboxRequest(task_key="w", cmd=script, workdir=str(workspace)))
    assert result.err_code == "NONE"
    assert (workspace / "in-workspace.txt").read_text() == "ws\n"
    assert "host secret" not in result.stdout
    assert "Read-only file system" in result.stderr
    assert not (outside / "new.txt").exists()
    assert not Path("/usr/kodo-escape").exists() and not Path("/etc/kodo-escape").exists()
    assert not Path("/tmp/scratch.txt").exists()


@needs_bwrap
def test_time_limit_kills_the_whole_tree(sandbox: LocalSandbox, workspace: Path) -> None:
    """At its time limit the command and every process it started (even setsid'd ones) are gone."""
    marker = "kodo-marker-" + secrets.token_hex(6)
    results: list[SandboxResult] = []
    runner = threading.Thread(
        target=lambda: results.append(
            sandbox.run(SandboxRequest(task_key="t", cmd=spawn_tree(marker), workdir=str(workspace), timeout_ms=4000))
        )
    )
    runner.start()
    wait_for(lambda: len(marked(marker)) >= 3)
    runner.join(timeout=20)
    assert results and results[0].err_code == "TIMEOUT" and results[0].exit == 124
    wait_for(lambda: marked(marker) == [], timeout=5)


def test_time_limit_kills_the_tree_without_bwrap_too(workspace: Path) -> None:
    """Unisolated, the process group and every descendant are killed at the time limit."""
    bare = LocalSandbox(use_bwrap=False)
    marker = "kodo-marker-" + secrets.token_hex(6)
    results: list[SandboxResult] = []
    runner = threading.Thread(
        target=lambda: results.append(
            bare.run(SandboxRequest(task_key="t2", cmd=spawn_tree(marker), workdir=str(workspace), timeout_ms=4000))
        )
    )
    runner.start()
    wait_for(lambda: len(marked(marker)) >= 3)
    runner.join(timeout=20)
    assert results and results[0].err_code == "TIMEOUT"
    wait_for(lambda: marked(marker) == [], timeout=5)


@needs_bwrap
def test_kill_stops_a_running_task_tree(sandbox: LocalSandbox, workspace: Path) -> None:
    """LocalSandbox.kill(task_key) kills the running command's tree at once; the result says canceled."""
    marker = "kodo-marker-" + secrets.token_hex(6)
    results: list[SandboxResult] = []
    request = SandboxRequest(task_key="cancel-me", cmd=spawn_tree(marker), workdir=str(workspace), timeout_ms=120_000)
    runner = threading.Thread(target=lambda: results.append(sandbox.run(request)))
    runner.start()
    wait_for(lambda: len(marked(marker)) >= 3)
    assert sandbox.running() == ["cancel-me"]
    started = time.monotonic()
    assert sandbox.kill("cancel-me") is True
    runner.join(timeout=20)
    assert time.monotonic() - started < 10
    assert results and results[0].raw["canceled"] is True and results[0].err_code == "CMD_NONZERO"
    wait_for(lambda: marked(marker) == [], timeout=5)
    assert sandbox.kill("cancel-me") is False and sandbox.running() == []


@needs_bwrap
def test_memory_limit_is_oom(sandbox: LocalSandbox, workspace: Path) -> None:
    """A command allocating past mem_mb fails with OOM (terminal), not CMD_NONZERO."""
    cmd = "python3 -c 'x = bytearray(1024 * 1024 * 1024)'"
    result = sandbox.run(SandboxRequest(task_key="m", cmd=cmd, workdir=str(workspace), mem_mb=256))
    assert result.err_code == "OOM", result.stderr


@needs_bwrap
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_memory_limit_lets_node_start_and_still_stops_its_heap(sandbox: LocalSandbox, workspace: Path) -> None:
    """Node (which reserves gigabytes of address space) runs under the default limit; a runaway heap is OOM."""
    ok = sandbox.run(SandboxRequest(task_key="node", cmd="node -e 'console.log(6*7)'", workdir=str(workspace)))
    assert ok.err_code == "NONE" and ok.stdout == "42\n", ok.stderr
    hog = "node -e 'const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1))'"
    result = sandbox.run(SandboxRequest(task_key="hog", cmd=hog, workdir=str(workspace), mem_mb=256))
    assert result.err_code == "OOM", result.stderr[-500:]


@needs_bwrap
def test_environment_is_clean(sandbox: LocalSandbox, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kodo's own environment (secrets included) does not leak into the command; the request's env does."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    result = sandbox.run(SandboxRequest(task_key="e", cmd="env", workdir=str(workspace), env={"KODO_TASK": "yes"}))
    assert "sk-should-not-leak" not in result.stdout and "KODO_TASK=yes" in result.stdout


def test_missing_workdir_is_boot_fail(sandbox: LocalSandbox, tmp_path: Path) -> None:
    """A workdir that does not exist is an infrastructure failure (BOOT_FAIL, retried), not the command's."""
    result = sandbox.run(SandboxRequest(task_key="b", cmd="true", workdir=str(tmp_path / "nope")))
    assert result.err_code == "BOOT_FAIL"


def test_microsandbox_is_not_supported(tmp_path: Path) -> None:
    """SBX_PROVIDER=microsandbox stops at build time with a ConfigurationError naming SBX_PROVIDER."""
    settings = load_settings({"SBX_MODE": "live", "SBX_PROVIDER": "microsandbox", "KODO_HOME": str(tmp_path)})
    with pytest.raises(ConfigurationError, match="SBX_PROVIDER=microsandbox is not supported"):
        build_sandbox(settings)
