"""Sandbox resource attacks against the local (bubblewrap) sandbox: a fork bomb, a 2 GB file, a /tmp filler, a
workspace filler, reading the host's /etc, and reaching kodo's own loopback services. Each is stopped by a limit
and reported; none reaches the host."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import make_settings
from kodo.adapters.sandbox import SandboxRequest
from kodo.adapters.sandbox.local import LocalSandbox, SandboxLimits
from kodo.errors import ConfigurationError
from kodo.main import build_sandbox

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
NOBODY = 65534
FORK_BOMB = "bomb() { bomb | bomb & }; bomb; sleep 6"


def _sandbox(**limits: int) -> LocalSandbox:
    box = LocalSandbox(limits=SandboxLimits(**limits))
    if box.isolation != "bwrap":
        pytest.skip("bubblewrap cannot create its namespaces here")
    return box


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    path.chmod(0o777)
    return path


def _tree_tasks(root: int) -> int:
    """Processes and threads in the tree under ``root`` (what the fork bomb grows)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    count, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            count += sum(1 for _ in Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    return count


@pytest.fixture
def open_workspace() -> Iterator[Path]:
    """A workspace an ordinary user can reach (pytest's tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="kodo-bomb-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_fork_bomb_stops_at_the_process_limit(open_workspace: Path) -> None:
    """bomb() { bomb | bomb & }; bomb — forks fail at RLIMIT_NPROC (user's processes + 64) and the tree dies at
    its time limit. RLIMIT_NPROC does not bind root, so kodo's sandbox code runs here as an ordinary user."""
    if os.getuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: RLIMIT_NPROC cannot be shown")
    script = (
        "import json, sys\n"
        "from kodo.adapters.sandbox import SandboxRequest\n"
        "from kodo.adapters.sandbox.local import LocalSandbox, SandboxLimits\n"
        "box = LocalSandbox(limits=SandboxLimits(processes=64))\n"
        f"r = box.run(SandboxRequest(task_key='bomb', cmd={FORK_BOMB!r}, workdir=sys.argv[1], timeout_ms=5000))\n"
        "print(json.dumps({'err': r.err_code, 'stderr': r.stderr[-3000:], 'isolation': r.raw['isolation']}))\n"
    )
    drop = [] if os.getuid() != 0 else ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    peak, done = [0], threading.Event()
    runner = subprocess.Popen(
        [*drop, sys.executable, "-c", script, str(open_workspace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_tasks(runner.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        stdout, stderr = runner.communicate(timeout=60)
    finally:
        done.set()
        sampler.join()
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, stderr
    finished = subprocess.CompletedProcess(runner.args, runner.returncode, stdout, stderr)
    result = json.loads(finished.stdout)
    assert result["isolation"] == "bwrap"
    assert result["err"] in {"TIMEOUT", "CMD_NONZERO"}
    assert "Resource temporarily unavailable" in result["stderr"]  # the kernel refused the forks
    # The user's other processes count against the limit too, so the tree stays at or under 64 + the runner's
    # own threads, bwrap and bash; without RLIMIT_NPROC it grows into the thousands.
    assert 0 < peak[0] <= 64 + 16, peak[0]


def test_a_2gb_file_fails_at_the_file_size_limit(workspace: Path) -> None:
    """head -c 2G /dev/zero > big: the write stops at RLIMIT_FSIZE with SIGXFSZ; the file never grows past it."""
    box = _sandbox(file_mb=16, workspace_growth_mb=4096)
    result = box.run(SandboxRequest(task_key="big", cmd="head -c 2G /dev/zero > big", workdir=str(workspace)))
    assert result.err_code == "CMD_NONZERO" and result.exit == 128 + 25  # SIGXFSZ
    assert (workspace / "big").stat().st_size == 16 * 1024 * 1024


def test_tmp_is_size_limited(workspace: Path) -> None:
    """Filling /tmp (a tmpfs in RAM) stops at SBX_TMP_MB: no space left on device."""
    box = _sandbox(tmp_mb=8)
    result = box.run(SandboxRequest(task_key="tmp", cmd="head -c 64M /dev/zero > /tmp/fill", workdir=str(workspace)))
    assert result.err_code == "CMD_NONZERO" and "No space left on device" in result.stderr


def test_workspace_growth_is_disk_quota(workspace: Path) -> None:
    """A command that keeps writing files into the workspace is killed past SBX_WORKSPACE_GROWTH_MB: DISK_QUOTA."""
    box = _sandbox(workspace_growth_mb=4)
    filler = "for i in $(seq 1 30); do head -c 2M /dev/zero > f$i; sleep 0.5; done"
    result = box.run(SandboxRequest(task_key="fill", cmd=filler, workdir=str(workspace), timeout_ms=60_000))
    assert result.err_code == "DISK_QUOTA", result.stderr
    assert "the workspace grew by more than 4 MB" in result.stderr
    assert not (workspace / "f30").exists()


def test_only_a_minimal_etc_is_visible(workspace: Path) -> None:
    """The host's /etc is not readable: only what commands need (passwd, hosts, certificates, ld.so, …)."""
    box = _sandbox()
    result = box.run(SandboxRequest(task_key="etc", cmd="ls /etc; cat /etc/passwd >/dev/null", workdir=str(workspace)))
    assert result.err_code == "NONE", result.stderr
    visible = set(result.stdout.split())
    assert "passwd" in visible and "ld.so.cache" in visible
    assert not visible & {"shadow", "gshadow", "fstab", "machine-id", "apt", "cron.d", "gitconfig", "hostname"}


@pytest.fixture
def kodo_port() -> Iterator[int]:
    """A listener on the host's loopback, as kodo's API and Postgres are."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        yield int(listener.getsockname()[1])


def test_net_cannot_reach_host_loopback(workspace: Path, kodo_port: int) -> None:
    """A task asking for the network is refused (saying why) instead of sharing the host's loopback."""
    box = _sandbox()
    probe = f"exec 3<>/dev/tcp/127.0.0.1/{kodo_port} && echo connected"
    result = box.run(SandboxRequest(task_key="net", cmd=probe, workdir=str(workspace), net=True))
    assert "connected" not in result.stdout and result.raw["netRefused"] is True
    assert "use SBX_PROVIDER=e2b" in result.stderr
    plain = box.run(SandboxRequest(task_key="net2", cmd=probe, workdir=str(workspace)))
    assert plain.err_code == "CMD_NONZERO" and "connected" not in plain.stdout


def test_default_net_with_the_local_sandbox_refuses_to_start(tmp_path: Path) -> None:
    """SBX_DEFAULT_NET=true with SBX_PROVIDER=local is a start-up error naming the reason."""
    settings = make_settings(
        "postgresql://unused@127.0.0.1/unused",
        tmp_path,
        SBX_MODE="live",
        SBX_PROVIDER="local",
        SBX_DEFAULT_NET="true",
    )
    with pytest.raises(ConfigurationError, match="kodo's API and Postgres"):
        build_sandbox(settings)
