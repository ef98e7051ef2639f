"""A stand-in for the ``e2b`` SDK at its Python boundary (the real service is unreachable from here).

``install(monkeypatch, root)`` puts a module named ``e2b`` into ``sys.modules``; the adapter imports
``Sandbox``, ``SandboxQuery``, ``CommandExitException`` and ``TimeoutException`` from it at call time. Each
sandbox's filesystem is a real directory under ``root`` (sandbox path ``/home/user/x`` → ``<root>/<id>/home/user/x``)
and ``commands.run`` really runs the command with ``bash -c`` in the mapped ``cwd``: a command that edits or
creates files changes that directory, as it would change an E2B sandbox's. Signatures follow e2b 2.x:
``files.write(path, data)``, ``files.write_files([{"path": …, "data": …}])``,
``files.read(path, format="text"|"bytes")``, ``files.make_dir(path)``,
``commands.run(cmd, envs=, cwd=, on_stdout=, on_stderr=, timeout=)`` (a non-zero exit raises
``CommandExitException``), ``Sandbox.create/list/connect``, ``sandbox.kill()``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest


class CommandExitException(Exception):
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        super().__init__(f"exit {exit_code}")
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


class TimeoutException(Exception):
    pass


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str


@dataclass
class SandboxQuery:
    metadata: dict[str, str] | None = None


@dataclass
class Calls:
    """What the sandboxes were asked to do, in order (shared by every sandbox, i.e. E2B's side)."""

    commands: list[tuple[str, str | None]] = field(default_factory=list)  # (cmd, cwd)
    writes: list[str] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # files per write_files request
    created: int = 0


class _Files:
    def __init__(self, owner: StandInSandbox) -> None:
        self.owner = owner

    def write(self, path: str, data: str | bytes, **_: Any) -> None:
        target = self.owner.host_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        StandInSandbox.calls.writes.append(path)

    def write_files(self, files: list[dict[str, Any]], **_: Any) -> None:
        StandInSandbox.calls.batches.append(len(files))
        for entry in files:
            self.write(entry["path"], entry["data"])

    def read(self, path: str, format: str = "text", **_: Any) -> str | bytearray:
        data = self.owner.host_path(path).read_bytes()  # FileNotFoundError: the SDK raises its NotFound
        return bytearray(data) if format == "bytes" else data.decode("utf-8")

    def make_dir(self, path: str, **_: Any) -> bool:
        self.owner.host_path(path).mkdir(parents=True, exist_ok=True)
        return True


class _Commands:
    def __init__(self, owner: StandInSandbox) -> None:
        self.owner = owner

    def run(
        self,
        cmd: str,
        envs: dict[str, str] | None = None,
        cwd: str | None = None,
        on_stdout: Any = None,
        on_stderr: Any = None,
        timeout: float | None = 60,
        **_: Any,
    ) -> CommandResult:
        StandInSandbox.calls.commands.append((cmd, cwd))
        directory = self.owner.host_path(cwd or "/home/user")
        directory.mkdir(parents=True, exist_ok=True)
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.owner.host_path("/home/user"))}
        completed = subprocess.run(
            ["bash", "-c", cmd],
            cwd=directory,
            env=environment | (envs or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if on_stdout is not None and completed.stdout:
            on_stdout(completed.stdout)
        if on_stderr is not None and completed.stderr:
            on_stderr(completed.stderr)
        if completed.returncode != 0:
            raise CommandExitException(completed.returncode, completed.stdout, completed.stderr)
        return CommandResult(0, completed.stdout, completed.stderr)


class StandInSandbox:
    """``e2b.Sandbox``: sandboxes live in a class-level registry, each with a directory of its own."""

    root: ClassVar[Path]
    live: ClassVar[dict[str, StandInSandbox]] = {}
    calls: ClassVar[Calls] = Calls()

    def __init__(self, metadata: dict[str, str]) -> None:
        StandInSandbox.calls.created += 1
        self.sandbox_id = f"sbx-{StandInSandbox.calls.created}"
        self.metadata = metadata
        self.directory = StandInSandbox.root / self.sandbox_id
        self.directory.mkdir(parents=True)
        self.files = _Files(self)
        self.commands = _Commands(self)
        StandInSandbox.live[self.sandbox_id] = self

    def host_path(self, path: str) -> Path:
        return self.directory / path.lstrip("/")

    @classmethod
    def create(cls, *, metadata: dict[str, str] | None = None, **_: Any) -> StandInSandbox:
        return cls(metadata or {})

    @classmethod
    def list(cls, *, query: SandboxQuery, **_: Any) -> Any:
        wanted = query.metadata or {}
        found = [
            types.SimpleNamespace(sandbox_id=sandbox.sandbox_id)
            for sandbox in cls.live.values()
            if all(sandbox.metadata.get(key) == value for key, value in wanted.items())
        ]
        return types.SimpleNamespace(next_items=lambda: found)

    @classmethod
    def connect(cls, sandbox_id: str, **_: Any) -> StandInSandbox:
        return cls.live[sandbox_id]

    def kill(self) -> bool:
        return StandInSandbox.live.pop(self.sandbox_id, None) is not None


def install(monkeypatch: pytest.MonkeyPatch, root: Path) -> type[StandInSandbox]:
    """Make ``import e2b`` return the stand-in, with sandboxes' directories under ``root``; a fresh registry."""
    module = types.ModuleType("e2b")
    module.Sandbox = StandInSandbox  # type: ignore[attr-defined]
    module.SandboxQuery = SandboxQuery  # type: ignore[attr-defined]
    module.CommandExitException = CommandExitException  # type: ignore[attr-defined]
    module.TimeoutException = TimeoutException  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "e2b", module)
    monkeypatch.setattr(StandInSandbox, "root", root, raising=False)
    monkeypatch.setattr(StandInSandbox, "live", {})
    monkeypatch.setattr(StandInSandbox, "calls", Calls())
    return StandInSandbox
