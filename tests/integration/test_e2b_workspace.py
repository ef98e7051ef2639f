"""The E2B provider with the run's workspace: our adapter and the real ``e2b`` SDK against the loopback stand-in of
E2B's HTTP API and envd (``tests/e2b_service.py``: sandboxes are directories, commands really run): upload before
the command, the command in the workspace with its output streamed, changed and new files back as ``filesOut``,
the size bounds refused with terminal codes, and the idempotent recall keeping them."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2b_service import E2BService, running
from kodo.adapters.sandbox import SandboxRequest
from kodo.adapters.sandbox.e2b import E2BSandbox
from kodo.adapters.sandbox.e2b_workspace import WORKSPACE_DIRECTORY, WorkspaceLimits, workspace_files
from kodo.models import RETRYABLE_SANDBOX_CODES

BINARY = b"\x00\x01\xff not text"


@pytest.fixture
def sdk(tmp_path: Path) -> Iterator[E2BService]:
    """The stand-in on 127.0.0.1 for this test, stopped after it."""
    with running(tmp_path / "e2b") as service:
        yield service


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace as a run's clone looks: files, a sub-directory and ``.git`` internals."""
    root = tmp_path / "workspace"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.txt").write_text("original\n")
    (root / "sub" / "b.txt").write_text("untouched\n")
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def adapter(service: E2BService, *, limits: WorkspaceLimits) -> E2BSandbox:
    """Our adapter with the real SDK pointed at the stand-in."""
    return E2BSandbox(**service.connection(), limits=limits)


def limits(upload: int = 1 << 20, count: int = 10, size: int = 1 << 20) -> WorkspaceLimits:
    return WorkspaceLimits(upload_max_bytes=upload, files_out_max_count=count, files_out_max_bytes=size)


def request(workspace: Path, cmd: str, **fields: str) -> SandboxRequest:
    return SandboxRequest(task_key="task", cmd=cmd, workdir=str(workspace), **fields)


def test_the_workspace_is_uploaded_and_the_command_runs_in_it(sdk: E2BService, workspace: Path) -> None:
    """Every file but ``.git`` is written under /home/user/workspace first; the command's cwd is that directory."""
    result = adapter(sdk, limits=limits()).run(request(workspace, "cat a.txt sub/b.txt && pwd"))
    assert result.err_code == "NONE", result
    assert sorted(sdk.calls.writes) == [f"{WORKSPACE_DIRECTORY}/a.txt", f"{WORKSPACE_DIRECTORY}/sub/b.txt"]
    assert sdk.calls.commands[0] == ("cat a.txt sub/b.txt && pwd", WORKSPACE_DIRECTORY)
    assert result.stdout.startswith("original\nuntouched\n") and result.stdout.rstrip().endswith("/home/user/workspace")
    assert result.files_out == [] and result.raw["uploadedFiles"] == 2
    assert sdk.calls.batches == [2] and result.raw["uploadBatches"] == 1  # one write_files request


def test_output_is_streamed_as_it_is_written_and_the_exit_code_comes_back(sdk: E2BService, workspace: Path) -> None:
    """envd's Start stream reaches the chunk sink in order, per stream; the result holds the whole output and exit."""
    chunks: list[tuple[str, int, str]] = []
    cmd = "echo one; echo oops >&2; sleep 0.2; echo two; exit 4"
    result = adapter(sdk, limits=limits()).run(request(workspace, cmd), on_chunk=lambda *chunk: chunks.append(chunk))
    assert (result.err_code, result.exit) == ("CMD_NONZERO", 4)
    assert (result.stdout, result.stderr) == ("one\ntwo\n", "oops\n")
    assert "".join(text for stream, _, text in chunks if stream == "stdout") == "one\ntwo\n"
    assert "".join(text for stream, _, text in chunks if stream == "stderr") == "oops\n"
    assert [number for _, number, _ in chunks] == sorted(number for _, number, _ in chunks)
    assert sdk.sandboxes == {} and len(sdk.calls.killed) == 1  # no idempotency key: killed at once


def test_a_large_workspace_is_uploaded_in_batches(
    sdk: E2BService, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files go up in write_files requests of about UPLOAD_BATCH_BYTES each, every file exactly once."""
    monkeypatch.setattr("kodo.adapters.sandbox.e2b_workspace.UPLOAD_BATCH_BYTES", 1)
    (workspace / "c.txt").write_text("third file\n")
    result = adapter(sdk, limits=limits()).run(request(workspace, "cat c.txt"))
    assert result.err_code == "NONE" and result.stdout == "third file\n"
    assert sdk.calls.batches == [1, 1, 1] and len(set(sdk.calls.writes)) == 3


def test_a_changed_and_a_new_file_come_back_with_their_exact_bytes(sdk: E2BService, workspace: Path) -> None:
    """filesOut holds what the command changed or created (text inline, binary as base64), not the rest."""
    cmd = "echo changed > a.txt && mkdir -p made && printf '\\000\\001\\377 not text' > made/new.bin"
    result = adapter(sdk, limits=limits()).run(request(workspace, cmd))
    assert result.err_code == "NONE", result
    assert [entry["path"] for entry in result.files_out] == ["a.txt", "made/new.bin"]
    changed, created = result.files_out
    assert changed["inline"] == "changed\n" and changed["sha256"] == hashlib.sha256(b"changed\n").hexdigest()
    assert base64.b64decode(created["contentBase64"]) == BINARY and created["bytes"] == len(BINARY)
    assert workspace_files(result.files_out) == [("a.txt", b"changed\n"), ("made/new.bin", BINARY)]
    assert (workspace / "a.txt").read_text() == "original\n"  # the adapter never writes the local workspace


def test_a_deleted_file_comes_back_as_a_deletion(sdk: E2BService, workspace: Path) -> None:
    """A file the command removed is a ``deleted`` filesOut entry (no content) after the changed ones; the rest of
    the uploaded files, and ``.git`` (never uploaded), are not reported."""
    result = adapter(sdk, limits=limits()).run(request(workspace, "rm sub/b.txt && echo changed > a.txt"))
    assert result.err_code == "NONE", result
    assert workspace_files(result.files_out) == [("a.txt", b"changed\n"), ("sub/b.txt", None)]
    assert result.files_out[1] == {
        "path": "sub/b.txt",
        "workspace": True,
        "deleted": True,
        "sha256": "absent",
        "bytes": 0,
    }
    assert (workspace / "sub" / "b.txt").exists()  # the adapter never writes the local workspace


def test_deleted_files_count_against_the_files_out_bound(sdk: E2BService, workspace: Path) -> None:
    """Deleting more files than SBX_E2B_FILES_OUT_MAX_COUNT allows is FILES_OUT_TOO_LARGE, nothing comes back."""
    result = adapter(sdk, limits=limits(count=1)).run(request(workspace, "rm a.txt sub/b.txt"))
    assert result.err_code == "FILES_OUT_TOO_LARGE" and result.files_out == []
    assert "changed or deleted 2 files" in result.stderr


def test_a_failing_command_still_brings_its_changes_back(sdk: E2BService, workspace: Path) -> None:
    """A non-zero exit is CMD_NONZERO and the files it changed still come back (the run's rollback restores them)."""
    result = adapter(sdk, limits=limits()).run(request(workspace, "echo half > a.txt; exit 3"))
    assert (result.err_code, result.exit) == ("CMD_NONZERO", 3)
    assert workspace_files(result.files_out) == [("a.txt", b"half\n")]


def test_a_workspace_over_the_limit_is_refused_and_nothing_runs(sdk: E2BService, workspace: Path) -> None:
    """WORKSPACE_TOO_LARGE (terminal): no sandbox is created, nothing is uploaded, no command runs."""
    result = adapter(sdk, limits=limits(upload=12)).run(request(workspace, "touch ran"))
    assert result.err_code == "WORKSPACE_TOO_LARGE" and "SBX_E2B_UPLOAD_MAX_MB" in result.stderr
    assert "WORKSPACE_TOO_LARGE" not in RETRYABLE_SANDBOX_CODES
    assert (sdk.calls.created, sdk.calls.writes, sdk.calls.commands) == (0, [], [])


def test_too_many_changed_files_bring_none_back(sdk: E2BService, workspace: Path) -> None:
    """Over SBX_E2B_FILES_OUT_MAX_COUNT: FILES_OUT_TOO_LARGE (terminal) and filesOut stays empty."""
    result = adapter(sdk, limits=limits(count=2)).run(request(workspace, "touch x y z"))
    assert result.err_code == "FILES_OUT_TOO_LARGE" and result.files_out == []
    assert "FILES_OUT_TOO_LARGE" not in RETRYABLE_SANDBOX_CODES and sdk.sandboxes == {}


def test_changed_files_over_the_byte_bound_bring_none_back(sdk: E2BService, workspace: Path) -> None:
    """Over SBX_E2B_FILES_OUT_MAX_MB (here 100 bytes): FILES_OUT_TOO_LARGE and filesOut stays empty."""
    result = adapter(sdk, limits=limits(size=100)).run(request(workspace, "head -c 200 /dev/zero > big"))
    assert result.err_code == "FILES_OUT_TOO_LARGE" and result.files_out == []


def test_an_upload_failure_is_upload_fail_and_retryable(sdk: E2BService, workspace: Path) -> None:
    """envd answering the upload with 502 is UPLOAD_FAIL (the task retries it); the command does not run."""
    sdk.refuse_uploads = True
    result = adapter(sdk, limits=limits()).run(request(workspace, "touch ran"))
    assert result.err_code == "UPLOAD_FAIL" and "UPLOAD_FAIL" in RETRYABLE_SANDBOX_CODES
    assert sdk.calls.commands == [] and sdk.sandboxes == {}


def test_a_recalled_result_keeps_its_files_and_the_command_runs_once(sdk: E2BService, workspace: Path) -> None:
    """With an idempotency key, a restarted worker recalls the kept result, filesOut included, without a rerun."""
    keyed = request(workspace, "echo changed > a.txt", idempotency_key="key-ws", execution_id="e-1")
    first = adapter(sdk, limits=limits()).run(keyed)
    assert first.err_code == "NONE" and len(sdk.sandboxes) == 1
    restarted = adapter(sdk, limits=limits())
    stored = restarted.recall(request(workspace, "echo changed > a.txt", idempotency_key="key-ws", execution_id="e-2"))
    assert stored is not None and stored.execution_id == "e-1"
    assert workspace_files(stored.result.files_out) == [("a.txt", b"changed\n")]
    user_commands = [cmd for cmd, _ in sdk.calls.commands if cmd == "echo changed > a.txt"]
    assert user_commands == ["echo changed > a.txt"] and sdk.sandboxes == {}
