"""The kodo that ``kodo chaos`` starts and breaks: its own ``KODO_HOME`` and embedded Postgres, and either the
split topology (``kodo api`` + ``kodo worker``) or a monolith (``kodo up``), each a subprocess on loopback that
can be started with fault points armed, killed with SIGKILL, and restarted. Processes are only ever stopped
by their own pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# Settings of the calling shell that must not leak into the processes chaos starts (they get their own).
_INHERITED_PREFIXES = ("DATABASE_URL", "KODO_", "PORT", "ADMIN_PORT", "DBOS_", "OC_", "SBX_", "WF_", "CHAOS_", "E2B_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sources(home: Path) -> Path:
    """Where chaos keeps the repository its runs clone: beside ``home``, since kodo refuses a repository inside
    its own KODO_HOME; it is the one KODO_REPO_ROOTS of the processes chaos starts."""
    return home.parent / f"{home.name}.sources"


def base_environment(home: Path) -> dict[str, str]:
    """The environment of every process chaos starts: its own home, the local sandbox, fast queue polling,
    and the one repository root it clones from."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
    return {
        **inherited,
        "KODO_HOME": str(home),
        "KODO_REPO_ROOTS": str(sources(home)),
        "SBX_MODE": "live",
        "SBX_PROVIDER": "local",
        "KODO_QUEUE_POLLING_INTERVAL_SEC": "0.05",
        "KODO_SCHEDULED_TICK_CRON": "off",
        "KODO_HOST": "127.0.0.1",
    }


def kodo(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one ``kodo`` command to its end with chaos's environment (``db up``, ``db down``)."""
    return subprocess.run(
        [sys.executable, "-m", "kodo", *args],
        env=base_environment(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Process:
    """One kodo process: ``role`` is up | api | worker."""

    role: str
    home: Path
    port: int
    admin_port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def health_url(self) -> str:
        port = self.admin_port if self.role == "worker" else self.port
        return f"http://127.0.0.1:{port}/healthz"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, faults: str | None = None, timeout: float = 90) -> None:
        """Start it (``faults`` armed via KODO_FAULT_POINTS) and wait until it answers /healthz."""
        env = base_environment(self.home) | {"PORT": str(self.port), "ADMIN_PORT": str(self.admin_port)}
        if faults:
            env["KODO_FAULT_POINTS"] = faults
        log = (self.home / f"chaos-{self.role}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kodo", self.role],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return  # died while starting (an armed point on the start-up path): the caller restarts it
            try:
                if httpx.get(self.health_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"kodo {self.role} did not become healthy in {timeout:.0f}s (see {self.home})")

    def kill9(self) -> None:
        """SIGKILL its whole session (the process and any command it ran), as a crash: no shutdown code runs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop within 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill9()


@dataclass
class Cluster:
    """The processes of one topology: ``split`` (api + worker) or ``monolith`` (up)."""

    home: Path
    topology: str = ""
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def api(self) -> Process:
        return self.processes["api"] if "api" in self.processes else self.processes["up"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    def process_for(self, kind: str) -> Process:
        """The process a kill of ``kind`` (worker | api | monolith) hits in this topology."""
        return self.processes["up"] if kind == "monolith" else self.processes[kind]

    def use(self, topology: str) -> None:
        """Switch to ``topology`` (stopping the other one's processes), everything started and healthy."""
        if topology != self.topology:
            self.stop()
            roles = ["api", "worker"] if topology == "split" else ["up"]
            port = free_port()
            self.processes = {role: Process(role, self.home, port, free_port()) for role in roles}
            self.topology = topology
        self.revive()

    def revive(self) -> list[str]:
        """Start every process that is not running (unarmed); returns the roles it had to start."""
        started = []
        for role, process in self.processes.items():
            if not process.alive():
                process.start()
                started.append(role)
        return started

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
