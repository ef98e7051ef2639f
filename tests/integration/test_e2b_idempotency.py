"""The E2B provider's idempotency key, kill and time limit, with the real ``e2b`` SDK against the loopback stand-in
of E2B (``tests/e2b_service.py``): the result is written into the sandbox's filesystem, the sandbox is kept until
released, and a new process finds it by metadata (E2B's list), reads the result back (envd) instead of running the
command again, and kills it; a kill ends the sandbox mid-command; a command over its time limit is TIMEOUT."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2b_service import E2BService, running
from kodo.adapters.sandbox import SandboxRequest, SandboxResult
from kodo.adapters.sandbox.e2b import KEY_METADATA, RESULT_DIRECTORY, E2BSandbox


@pytest.fixture
def sdk(tmp_path: Path) -> Iterator[E2BService]:
    with running(tmp_path / "e2b") as service:
        yield service


def keyed(execution_id: str) -> SandboxRequest:
    return SandboxRequest(task_key="task", cmd="echo ran", idempotency_key="key-e2b", execution_id=execution_id)


def user_commands(sdk: E2BService, cmd: str) -> list[str]:
    return [ran for ran, _ in sdk.calls.commands if ran == cmd]


def test_a_finished_command_is_recalled_by_a_new_process_not_run_again(sdk: E2BService) -> None:
    """The result lives in the kept sandbox; a fresh provider (a restarted worker) recalls it and kills it."""
    result = E2BSandbox(**sdk.connection()).run(keyed("e-1"))
    assert result.err_code == "NONE" and result.stdout == "ran\n" and user_commands(sdk, "echo ran") == ["echo ran"]
    (kept,) = sdk.sandboxes.values()
    assert kept.metadata[KEY_METADATA] == "key-e2b"
    assert kept.host_path(f"{RESULT_DIRECTORY}/key-e2b.json").is_file()
    restarted = E2BSandbox(**sdk.connection())  # the worker died before recording the result
    stored = restarted.recall(keyed("e-2"))
    assert stored is not None and stored.execution_id == "e-1" and stored.result.stdout == "ran\n"
    assert user_commands(sdk, "echo ran") == ["echo ran"] and sdk.sandboxes == {}


def test_release_kills_the_kept_sandbox_and_nothing_is_left_to_recall(sdk: E2BService) -> None:
    """Once kodo recorded the result, release kills the sandbox; a later recall finds nothing."""
    sandbox = E2BSandbox(**sdk.connection())
    sandbox.run(keyed("e-1"))
    sandbox.release(keyed("e-1"))
    assert sdk.sandboxes == {} and E2BSandbox(**sdk.connection()).recall(keyed("e-2")) is None


def test_without_an_idempotency_key_the_sandbox_is_killed_at_once(sdk: E2BService) -> None:
    """A request with no key keeps nothing: the sandbox is killed when the command ends."""
    result = E2BSandbox(**sdk.connection()).run(SandboxRequest(task_key="t", cmd="true"))
    assert result.raw["killed"] is True and sdk.sandboxes == {} and len(sdk.calls.killed) == 1


def test_kill_ends_the_running_command_with_its_sandbox(sdk: E2BService) -> None:
    """kill(task_key) (an operator's cancel) kills the sandbox mid-command: the run returns, not ``NONE``."""
    adapter = E2BSandbox(**sdk.connection())
    outcome: list[SandboxResult] = []
    runner = threading.Thread(
        target=lambda: outcome.append(adapter.run(SandboxRequest(task_key="long", cmd="sleep 60; echo done"))),
    )
    runner.start()
    deadline = time.monotonic() + 30
    while not any(cmd == "sleep 60; echo done" for cmd, _ in sdk.calls.commands) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert adapter.kill("long") is True
    runner.join(timeout=30)
    (result,) = outcome
    assert result.err_code != "NONE" and "done" not in result.stdout
    assert sdk.sandboxes == {}


def test_a_command_over_its_time_limit_is_timeout(sdk: E2BService) -> None:
    """timeout_ms bounds the command's stream: TIMEOUT, and the stand-in's process is gone with the stream."""
    request = SandboxRequest(task_key="slow", cmd="sleep 30", timeout_ms=1000)
    result = E2BSandbox(**sdk.connection()).run(request)
    assert result.err_code == "TIMEOUT", result
