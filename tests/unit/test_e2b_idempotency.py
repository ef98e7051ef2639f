"""The E2B provider's idempotency key, against a stand-in for the ``e2b`` SDK (the real service is unreachable
here): the result is written into the sandbox's filesystem, the sandbox is kept until released, and a new
process finds it by metadata, reads the result back instead of running the command again, and kills it."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from kodo.adapters.sandbox import SandboxRequest
from kodo.adapters.sandbox.e2b import RESULT_DIRECTORY, E2BSandbox


@dataclass
class _Result:
    exit_code: int = 0
    stdout: str = "ran\n"
    stderr: str = ""


@dataclass
class _Files:
    data: dict[str, str] = field(default_factory=dict)

    def write(self, path: str, text: str) -> None:
        self.data[path] = text

    def read(self, path: str) -> str:
        if path not in self.data:
            raise FileNotFoundError(path)
        return self.data[path]


class _Commands:
    def __init__(self, owner: FakeSandbox) -> None:
        self.owner = owner

    def run(self, cmd: str, **_: Any) -> _Result:
        FakeSandbox.commands_run.append(cmd)
        return _Result()


class FakeSandbox:
    """A stand-in for ``e2b.Sandbox``: sandboxes live in a class-level registry (E2B's side)."""

    live: ClassVar[dict[str, FakeSandbox]] = {}
    commands_run: ClassVar[list[str]] = []

    def __init__(self, metadata: dict[str, str]) -> None:
        self.sandbox_id = f"sbx-{len(FakeSandbox.live) + 1}"
        self.metadata = metadata
        self.files = _Files()
        self.commands = _Commands(self)
        FakeSandbox.live[self.sandbox_id] = self

    @classmethod
    def create(cls, *, metadata: dict[str, str], **_: Any) -> FakeSandbox:
        return cls(metadata)

    @classmethod
    def list(cls, *, query: Any, **_: Any) -> Any:
        wanted = query.metadata
        found = [
            types.SimpleNamespace(sandbox_id=s.sandbox_id)
            for s in cls.live.values()
            if all(s.metadata.get(k) == v for k, v in wanted.items())
        ]
        return types.SimpleNamespace(next_items=lambda: found)

    @classmethod
    def connect(cls, sandbox_id: str, **_: Any) -> FakeSandbox:
        return cls.live[sandbox_id]

    def kill(self) -> bool:
        return FakeSandbox.live.pop(self.sandbox_id, None) is not None


@dataclass
class _Query:
    metadata: dict[str, str] | None = None


@pytest.fixture(autouse=True)
def fake_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("e2b")
    module.Sandbox = FakeSandbox  # type: ignore[attr-defined]
    module.SandboxQuery = _Query  # type: ignore[attr-defined]
    module.CommandExitException = type("CommandExitException", (Exception,), {})  # type: ignore[attr-defined]
    module.TimeoutException = type("TimeoutException", (Exception,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "e2b", module)
    FakeSandbox.live.clear()
    FakeSandbox.commands_run.clear()


def _request(execution_id: str) -> SandboxRequest:
    return SandboxRequest(task_key="task", cmd="make test", idempotency_key="key-e2b", execution_id=execution_id)


def test_a_finished_command_is_recalled_by_a_new_process_not_run_again() -> None:
    """The result lives in the kept sandbox; a fresh provider (a restarted worker) recalls it and kills it."""
    first = E2BSandbox("e2b_x")
    result = first.run(_request("e-1"))
    assert result.err_code == "NONE" and FakeSandbox.commands_run == ["make test"]
    (kept,) = FakeSandbox.live.values()
    assert f"{RESULT_DIRECTORY}/key-e2b.json" in kept.files.data and kept.metadata["kodoIdempotencyKey"] == "key-e2b"
    restarted = E2BSandbox("e2b_x")  # the worker died before recording the result
    stored = restarted.recall(_request("e-2"))
    assert stored is not None and stored.execution_id == "e-1" and stored.result.stdout == "ran\n"
    assert FakeSandbox.commands_run == ["make test"] and FakeSandbox.live == {}


def test_release_kills_the_kept_sandbox_and_nothing_is_left_to_recall() -> None:
    """Once kodo recorded the result, release kills the sandbox; a later recall finds nothing."""
    sandbox = E2BSandbox("e2b_x")
    sandbox.run(_request("e-1"))
    sandbox.release(_request("e-1"))
    assert FakeSandbox.live == {} and sandbox.recall(_request("e-2")) is None


def test_without_an_idempotency_key_the_sandbox_is_killed_at_once() -> None:
    """A request with no key keeps nothing: the sandbox is killed when the command ends, as before."""
    result = E2BSandbox("e2b_x").run(SandboxRequest(task_key="t", cmd="true"))
    assert result.raw["killed"] is True and FakeSandbox.live == {}
