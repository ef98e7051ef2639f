"""Contract suite for the Sandbox port (SPEC §8, reference §10): every implementation must pass it.

Add an implementation by appending to ``IMPLEMENTATIONS``. Every sandbox runs a succeeding and a
failing command and reports SBXRes-shaped results; ``magic`` sandboxes (the mock) also honour the
predecessor's magic commands. ``local-bwrap`` is the real local provider as ``SBX_MODE=live
SBX_PROVIDER=local`` builds it (skipped with a reason when ``bwrap`` is not installed; ``.ci/run``
installs it); ``local-none`` is the same provider without bubblewrap; ``e2b-standin`` is the E2B provider with
the real ``e2b`` SDK against the loopback stand-in of E2B's API (``tests/e2b_service.py``). ``live-env`` runs the
provider the environment names only with ``KODO_LIVE_SANDBOX=1`` (``KODO_LIVE_SANDBOX_PROVIDER``,
default ``local``), e.g. against E2B with a real key.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2b_service import E2BService
from kodo.adapters.sandbox import Sandbox, SandboxRequest, SandboxResult
from kodo.adapters.sandbox.e2b import E2BSandbox
from kodo.adapters.sandbox.local import LocalSandbox
from kodo.adapters.sandbox.mock import MockSandbox
from kodo.models import RETRYABLE_SANDBOX_CODES

ERR_CODES = {
    "NONE", "BOOT_FAIL", "CMD_NONZERO", "TIMEOUT", "OOM", "NET_FAIL", "UPLOAD_FAIL", "DOWNLOAD_FAIL", "DISK_QUOTA"
}  # fmt: skip
SBXRES_KEYS = {"exit", "stdout", "stderr", "filesOut", "metrics", "sandboxRef", "errCode", "taskKey", "raw"}


@dataclass(frozen=True)
class SandboxImpl:
    name: str
    build: Callable[[Path], Sandbox]
    ok_cmd: str
    fail_cmd: str
    magic: bool = False
    real: bool = False


def _live_sandbox(tmp: Path) -> Sandbox:
    from kodo.main import build_sandbox
    from kodo.settings import load_settings

    provider = os.environ.get("KODO_LIVE_SANDBOX_PROVIDER", "local")
    env = {**os.environ, "SBX_MODE": "live", "SBX_PROVIDER": provider, "KODO_HOME": str(tmp)}
    return build_sandbox(load_settings(env))


def _local_sandbox(tmp: Path) -> Sandbox:
    from kodo.main import build_sandbox
    from kodo.settings import load_settings

    return build_sandbox(load_settings({"SBX_MODE": "live", "SBX_PROVIDER": "local", "KODO_HOME": str(tmp)}))


STAND_INS: list[E2BService] = []  # started by ``_e2b_standin``, stopped after each test (``_stop_stand_ins``)


def _e2b_standin(tmp: Path) -> Sandbox:
    """The E2B provider with the real SDK against the loopback stand-in of E2B (``tests/e2b_service.py``)."""
    service = E2BService(tmp / "e2b")
    STAND_INS.append(service)
    service.start()
    return E2BSandbox(**service.connection())


@pytest.fixture(autouse=True)
def _stop_stand_ins() -> Iterator[None]:
    yield
    while STAND_INS:
        STAND_INS.pop().stop()


IMPLEMENTATIONS = [
    pytest.param(SandboxImpl("mock", lambda tmp: MockSandbox(), "echo test0", "FAIL_ME test0", magic=True), id="mock"),
    pytest.param(
        SandboxImpl("local-bwrap", _local_sandbox, "echo test0", "exit 3", real=True),
        id="local-bwrap",
        marks=pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"),
    ),
    pytest.param(
        SandboxImpl("local-none", lambda tmp: LocalSandbox(use_bwrap=False), "echo test0", "exit 3", real=True),
        id="local-none",
    ),
    pytest.param(
        SandboxImpl("e2b-standin", _e2b_standin, "echo test0", "exit 3"),
        id="e2b-standin",
        marks=pytest.mark.skipif(shutil.which("bwrap") is None, reason="the E2B stand-in runs commands under bwrap"),
    ),
    pytest.param(
        SandboxImpl("live-env", _live_sandbox, "echo test0", "exit 3"),
        id="live-env",
        marks=pytest.mark.skipif(os.environ.get("KODO_LIVE_SANDBOX") != "1", reason="set KODO_LIVE_SANDBOX=1"),
    ),
]
MAGIC = [p for p in IMPLEMENTATIONS if p.values[0].magic]
REAL = [p for p in IMPLEMENTATIONS if p.values[0].real]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> SandboxImpl:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sandbox(impl: SandboxImpl, tmp_path: Path) -> Sandbox:
    return impl.build(tmp_path)


@pytest.fixture(params=MAGIC)
def magic_sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Sandbox:
    impl: SandboxImpl = request.param
    return impl.build(tmp_path)


def req(cmd: str, task_key: str = "tk-1", **extra: Any) -> SandboxRequest:
    return SandboxRequest(task_key=task_key, cmd=cmd, **extra)


# --- the contract: every implementation ---------------------------------------------------------


def test_success_is_exit_0_and_err_code_none(sandbox: Sandbox, impl: SandboxImpl) -> None:
    """A succeeding command reports exit 0 and errCode NONE."""
    result = sandbox.run(req(impl.ok_cmd))
    assert isinstance(result, SandboxResult)
    assert result.exit == 0
    assert result.err_code == "NONE"
    assert "test0" in result.stdout


def test_failing_command_is_cmd_nonzero(sandbox: Sandbox, impl: SandboxImpl) -> None:
    """A command exiting non-zero reports CMD_NONZERO with its non-zero exit (terminal, not retried)."""
    result = sandbox.run(req(impl.fail_cmd))
    assert result.err_code == "CMD_NONZERO"
    assert result.exit != 0
    assert "CMD_NONZERO" not in RETRYABLE_SANDBOX_CODES


def test_as_json_has_the_sbxres_keys(sandbox: Sandbox, impl: SandboxImpl) -> None:
    """as_json is SBXRes: exit, stdout, stderr, filesOut, metrics{wallMs,cpuMs,memPeakMB}, sandboxRef, ..."""
    for cmd in (impl.ok_cmd, impl.fail_cmd):
        body = sandbox.run(req(cmd, task_key="tk-json")).as_json("tk-json")
        assert set(body) == SBXRES_KEYS
        assert set(body["metrics"]) == {"wallMs", "cpuMs", "memPeakMB"}
        assert all(isinstance(v, int) and v >= 0 for v in body["metrics"].values())
        assert body["taskKey"] == "tk-json"
        assert body["errCode"] in ERR_CODES
        assert isinstance(body["exit"], int)
        assert isinstance(body["stdout"], str) and isinstance(body["stderr"], str)
        assert isinstance(body["sandboxRef"], str) and body["sandboxRef"]
        assert isinstance(body["raw"], dict)
        assert isinstance(body["filesOut"], list)


def test_files_out_carry_path_and_matching_sha256(sandbox: Sandbox, impl: SandboxImpl) -> None:
    """Every output file has a path and a 64-hex sha256 that matches its inline content."""
    result = sandbox.run(req(impl.ok_cmd))
    for item in result.files_out:
        assert isinstance(item["path"], str) and item["path"]
        assert re.fullmatch(r"[0-9a-f]{64}", item["sha256"])
        if isinstance(item.get("inline"), str):
            assert item["sha256"] == hashlib.sha256(item["inline"].encode("utf-8")).hexdigest()


def test_results_are_independent_per_call(sandbox: Sandbox, impl: SandboxImpl) -> None:
    """A failure does not poison the next call on the same sandbox object."""
    assert sandbox.run(req(impl.fail_cmd)).err_code == "CMD_NONZERO"
    assert sandbox.run(req(impl.ok_cmd)).err_code == "NONE"


def test_output_is_streamed_to_the_sink(sandbox: Sandbox, impl: SandboxImpl) -> None:
    """Every sandbox hands its stdout to the on_chunk sink too: the chunks add up to the stdout."""
    chunks: list[tuple[str, int, str]] = []
    result = sandbox.run(req(impl.ok_cmd), on_chunk=lambda *chunk: chunks.append(chunk))
    assert "".join(text for stream, _, text in chunks if stream == "stdout") == result.stdout
    assert sorted(seq for _, seq, _ in chunks) == list(range(len(chunks)))


def test_kill_of_an_idle_task_is_false(sandbox: Sandbox, impl: SandboxImpl) -> None:
    """kill(task_key) answers False when that task has nothing running (before and after a run)."""
    assert sandbox.kill("tk-never-ran") is False
    sandbox.run(req(impl.ok_cmd, task_key="tk-done"))
    assert sandbox.kill("tk-done") is False


def test_sandbox_declares_a_provider(sandbox: Sandbox) -> None:
    """Each sandbox names its provider (recorded in the artifact index)."""
    assert isinstance(sandbox.provider, str) and sandbox.provider


# --- real command runners (the local provider, with and without bubblewrap) --------------------


@pytest.fixture(params=REAL)
def real_sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Sandbox:
    impl: SandboxImpl = request.param
    return impl.build(tmp_path)


def test_real_command_output_and_stderr(real_sandbox: Sandbox) -> None:
    """The command really runs in bash: its stdout, stderr and exit code come back as they were."""
    result = real_sandbox.run(req("echo $((6*7)); echo oops >&2; exit 5"))
    assert (result.exit, result.err_code) == (5, "CMD_NONZERO")
    assert result.stdout == "42\n" and "oops" in result.stderr
    assert result.wall_ms >= 0 and result.raw["isolation"] in {"bwrap", "none"}


def test_real_command_runs_in_the_workdir(real_sandbox: Sandbox, tmp_path: Path) -> None:
    """The request's workdir is the command's working directory, and files it writes there stay."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "input.txt").write_text("from the host\n")
    result = real_sandbox.run(req("pwd; cat input.txt; echo made > output.txt", workdir=str(workspace)))
    assert result.err_code == "NONE", result.stderr
    assert result.stdout == f"{workspace}\nfrom the host\n"
    assert (workspace / "output.txt").read_text() == "made\n"


def test_real_command_over_its_time_limit_is_timeout(real_sandbox: Sandbox) -> None:
    """A command still running at timeoutMs is killed and reported TIMEOUT (terminal)."""
    started = time.monotonic()
    result = real_sandbox.run(req("sleep 30", timeout_ms=500))
    assert result.err_code == "TIMEOUT" and result.exit == 124
    assert time.monotonic() - started < 10


def test_real_command_streams_its_output(real_sandbox: Sandbox) -> None:
    """Output chunks reach the sink as they are produced, numbered, per stream."""
    chunks: list[tuple[str, int, str]] = []
    real_sandbox.run(req("echo one; sleep 0.2; echo two >&2"), on_chunk=lambda *c: chunks.append(c))
    assert sorted(c[0] for c in chunks) == ["stderr", "stdout"]
    assert sorted(c[1] for c in chunks) == [0, 1]
    assert {c[0]: c[2] for c in chunks} == {"stdout": "one\n", "stderr": "two\n"}


# --- magic commands (the mock) ------------------------------------------------------------------


@pytest.mark.parametrize("cmd", ["echo test0", "pytest -q", "echo FAIL_ME", "x"])
def test_mock_success_output(magic_sandbox: Sandbox, cmd: str) -> None:
    """Any non-magic first word succeeds: stdout "OK: <cmd>\\n", one out.json with the right sha256."""
    result = magic_sandbox.run(req(cmd))
    assert (result.exit, result.err_code, result.stderr) == (0, "NONE", "")
    assert result.stdout == f"OK: {cmd}\n"
    assert result.sandbox_ref == "mock-runner"
    assert (result.wall_ms, result.cpu_ms, result.mem_peak_mb) == (1, 1, 1)
    assert result.files_out == [{"path": "out.json", "inline": "{}", "sha256": hashlib.sha256(b"{}").hexdigest()}]
    assert result.raw["mock"] is True
    assert result.raw["provider"] == "mock"


@pytest.mark.parametrize("cmd", ["FAIL_ME", "FAIL_ME test0", "FAIL_ME  test1 --flag"])
def test_mock_fail_me_is_cmd_nonzero(magic_sandbox: Sandbox, cmd: str) -> None:
    """FAIL_ME as the first word → CMD_NONZERO, exit 1, every time."""
    for _ in range(3):
        result = magic_sandbox.run(req(cmd))
        assert (result.exit, result.err_code) == (1, "CMD_NONZERO")
        assert result.stdout == ""
        assert result.files_out == []


@pytest.mark.parametrize("cmd", ["INFRA_FAIL", "INFRA_FAIL test0"])
def test_mock_infra_fail_is_boot_fail_every_time(magic_sandbox: Sandbox, cmd: str) -> None:
    """INFRA_FAIL → BOOT_FAIL on every call (retryable; exhausts the step's retries)."""
    for _ in range(6):
        result = magic_sandbox.run(req(cmd))
        assert result.err_code == "BOOT_FAIL"
        assert result.exit != 0
    assert "BOOT_FAIL" in RETRYABLE_SANDBOX_CODES


def test_mock_flaky_infra_fail_twice_then_success(magic_sandbox: Sandbox) -> None:
    """FLAKY_INFRA_FAIL → BOOT_FAIL for the first two calls of a task key, then success."""
    codes = [magic_sandbox.run(req("FLAKY_INFRA_FAIL test0", task_key="flaky-a")).err_code for _ in range(5)]
    assert codes == ["BOOT_FAIL", "BOOT_FAIL", "NONE", "NONE", "NONE"]
    last = magic_sandbox.run(req("FLAKY_INFRA_FAIL test0", task_key="flaky-a"))
    assert last.exit == 0
    assert last.stdout == "OK: FLAKY_INFRA_FAIL test0\n"


def test_mock_flaky_counts_per_task_key(magic_sandbox: Sandbox) -> None:
    """Each task key gets its own two flaky failures."""
    a1 = magic_sandbox.run(req("FLAKY_INFRA_FAIL", task_key="k-a")).err_code
    b1 = magic_sandbox.run(req("FLAKY_INFRA_FAIL", task_key="k-b")).err_code
    a2 = magic_sandbox.run(req("FLAKY_INFRA_FAIL", task_key="k-a")).err_code
    a3 = magic_sandbox.run(req("FLAKY_INFRA_FAIL", task_key="k-a")).err_code
    b2 = magic_sandbox.run(req("FLAKY_INFRA_FAIL", task_key="k-b")).err_code
    b3 = magic_sandbox.run(req("FLAKY_INFRA_FAIL", task_key="k-b")).err_code
    assert (a1, a2, a3) == ("BOOT_FAIL", "BOOT_FAIL", "NONE")
    assert (b1, b2, b3) == ("BOOT_FAIL", "BOOT_FAIL", "NONE")


def test_mock_flaky_counter_is_thread_safe(magic_sandbox: Sandbox) -> None:
    """Concurrent calls for one task key still fail exactly twice (the counter is locked)."""
    codes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def call() -> None:
        barrier.wait()
        code = magic_sandbox.run(req("FLAKY_INFRA_FAIL", task_key="k-threads")).err_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes).count("BOOT_FAIL") == 2
    assert codes.count("NONE") == 14


@pytest.mark.parametrize("timeout_ms", [1, 250, 300_000])
def test_mock_timeout_me_is_timeout(magic_sandbox: Sandbox, timeout_ms: int) -> None:
    """TIMEOUT_ME → TIMEOUT (terminal) with wallMs = the request's timeoutMs."""
    result = magic_sandbox.run(req("TIMEOUT_ME test0", timeout_ms=timeout_ms))
    assert result.err_code == "TIMEOUT"
    assert result.exit != 0
    assert result.wall_ms == timeout_ms
    assert "TIMEOUT" not in RETRYABLE_SANDBOX_CODES


def test_mock_magic_words_are_case_sensitive_first_words(magic_sandbox: Sandbox) -> None:
    """Only the exact first word is magic: "fail_me" or a later FAIL_ME succeeds."""
    assert magic_sandbox.run(req("fail_me")).err_code == "NONE"
    assert magic_sandbox.run(req("run INFRA_FAIL")).err_code == "NONE"


def test_mock_empty_command_succeeds(magic_sandbox: Sandbox) -> None:
    """An empty command has no magic word and succeeds."""
    result = magic_sandbox.run(req(""))
    assert (result.exit, result.err_code) == (0, "NONE")


def test_mock_as_json_values(magic_sandbox: Sandbox) -> None:
    """The mock's SBXRes carries its real values under the camelCase keys."""
    body = magic_sandbox.run(req("echo hi", task_key="tk-9")).as_json("tk-9")
    assert body["exit"] == 0
    assert body["errCode"] == "NONE"
    assert body["stdout"] == "OK: echo hi\n"
    assert body["sandboxRef"] == "mock-runner"
    assert body["metrics"] == {"wallMs": 1, "cpuMs": 1, "memPeakMB": 1}
    assert body["filesOut"][0]["path"] == "out.json"
    assert body["raw"]["cmd"] == "echo hi"


# --- the request ------------------------------------------------------------------------------


def test_request_as_json_is_sbxreq_shaped() -> None:
    """SandboxRequest.as_json has the SBXReq fields with the predecessor's defaults."""
    body = SandboxRequest(task_key="tk", cmd="echo").as_json()
    assert body == {
        "taskKey": "tk",
        "cmd": "echo",
        "workdir": None,
        "env": {},
        "timeoutMs": 300_000,
        "limits": {"cpu": 1, "memMB": 512},
        "net": False,
        "envRef": "local-python-3.11",
        "filesIn": [],
    }
