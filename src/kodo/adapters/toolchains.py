"""Sandbox templates that install: a Python virtual environment per dependency hash, built once under
``$KODO_HOME/templates/<depsHash>/venv`` and reused by every later task (warm).

Built with ``uv venv`` on the system interpreter (``/usr/bin/python3``: the one the bubblewrap sandbox
sees, since it binds ``/usr`` only) and ``uv pip install <deps>`` from whatever registries the machine
reaches. The build happens in place (scripts carry the environment's path in their ``#!`` line) under a
file lock, and a ``.kodo-ready`` marker is written last: concurrent tasks build it once, and a half-built
environment (a crash mid-build) is never used — the next task removes it and builds again. A failed build
raises :class:`ToolchainBuildError` with the build log; nothing is left behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
BUILD_TIMEOUT_S = 600


class ToolchainBuildError(RuntimeError):
    """The environment could not be built; ``log`` is what the build printed."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True, slots=True)
class Toolchain:
    path: Path  # the virtual environment: mount it read-only, put ``<path>/bin`` first on PATH
    built: bool  # True: built by this call (cold); False: reused (warm)
    build_ms: int


def _run(argv: list[str], log: list[str]) -> None:
    log.append("$ " + " ".join(argv))
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.append(str(error))
        raise ToolchainBuildError(f"{argv[0]} failed: {error}", "\n".join(log)) from error
    log.extend(part for part in (done.stdout.strip(), done.stderr.strip()) if part)
    if done.returncode != 0:
        raise ToolchainBuildError(f"{' '.join(argv[:3])} exited {done.returncode}", "\n".join(log))


def ensure(root: Path, deps_hash: str, deps: Sequence[str], *, python: str = SYSTEM_PYTHON) -> Toolchain:
    """The environment for ``deps`` (keyed by ``deps_hash``): reused when built, else built now."""
    home = root / deps_hash
    venv, ready = home / "venv", home / ".kodo-ready"
    if ready.exists():
        return Toolchain(venv, built=False, build_ms=0)
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent tasks of one host build it once
        if ready.exists():
            return Toolchain(venv, built=False, build_ms=0)
        started = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)  # what a crashed build left
        log: list[str] = []
        uv = shutil.which("uv")
        try:
            if uv is None:
                raise ToolchainBuildError("uv is not installed on this host", "uv: not found on PATH")
            _run([uv, "venv", "--quiet", "--python", python, str(venv)], log)
            if deps:
                _run([uv, "pip", "install", "--python", str(venv / "bin" / "python"), *deps], log)
        except ToolchainBuildError:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        (home / "build.log").write_text("\n".join(log) + "\n")
        ready.write_text(f"{deps_hash}\n")
        return Toolchain(venv, built=True, build_ms=int((time.monotonic() - started) * 1000))
