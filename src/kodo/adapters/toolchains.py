"""Sandbox templates that install: a Python virtual environment per dependency hash, built once under
``$KODO_HOME/templates/<depsHash>/venv`` and reused by every later task (warm) — or, for a sandbox on
another machine (E2B), the same packages installed flat into ``$KODO_HOME/templates/<depsHash>/packages``
(``uv pip install --target``, scripts pointing at ``/usr/bin/python3``), which the adapter uploads into
each sandbox and puts on ``PYTHONPATH`` and ``PATH`` (:func:`ensure_packages`).

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
from collections.abc import Callable, Sequence
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
    path: Path  # the virtual environment (mount it read-only, ``<path>/bin`` first on PATH) or the packages
    built: bool  # True: built by this call (cold); False: reused (warm)
    build_ms: int
    layout: str = "venv"  # "venv" | "packages" (a ``--target`` directory: put it on PYTHONPATH, ``bin`` on PATH)


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

    def build(venv: Path, uv: str, log: list[str]) -> None:
        _run([uv, "venv", "--quiet", "--python", python, str(venv)], log)
        if deps:
            _run([uv, "pip", "install", "--python", str(venv / "bin" / "python"), *deps], log)

    return _ensure(root / deps_hash, "venv", ".kodo-ready", f"{deps_hash}\n", build)


def ensure_packages(root: Path, deps_hash: str, deps: Sequence[str], *, python: str = SYSTEM_PYTHON) -> Toolchain:
    """``deps`` installed flat into ``<root>/<deps_hash>/packages`` for ``python``'s version (reused when built):
    what an E2B sandbox gets uploaded; no network is needed in the sandbox."""

    def build(packages: Path, uv: str, log: list[str]) -> None:
        _run([uv, "pip", "install", "--target", str(packages), "--python", python, *deps], log)

    return _ensure(root / deps_hash, "packages", ".kodo-ready-packages", f"{deps_hash}\n", build)


def _ensure(home: Path, name: str, marker: str, stamp: str, build: Callable[[Path, str, list[str]], None]) -> Toolchain:
    """``home/name`` built by ``build`` under a file lock, once; ``home/marker`` says it is complete."""
    target, ready = home / name, home / marker
    if ready.exists():
        return Toolchain(target, built=False, build_ms=0, layout=name)
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent tasks of one host build it once
        if ready.exists():
            return Toolchain(target, built=False, build_ms=0, layout=name)
        started = time.monotonic()
        shutil.rmtree(target, ignore_errors=True)  # what a crashed build left
        log: list[str] = []
        uv = shutil.which("uv")
        try:
            if uv is None:
                raise ToolchainBuildError("uv is not installed on this host", "uv: not found on PATH")
            build(target, uv, log)
        except ToolchainBuildError:
            shutil.rmtree(target, ignore_errors=True)
            raise
        (home / f"build-{name}.log").write_text("\n".join(log) + "\n")
        ready.write_text(stamp)
        return Toolchain(target, built=True, build_ms=int((time.monotonic() - started) * 1000), layout=name)
