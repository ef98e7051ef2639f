"""Real kodo processes for end-to-end tests: start by command, wait for health, kill -9 or stop by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

_KODO_VARS = ("DATABASE_URL", "KODO_", "PORT", "ADMIN_PORT", "DBOS_", "OC_", "SBX_", "WF_", "CHAOS_", "INTENT_QUEUE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**env: str) -> dict[str, str]:
    """The parent's environment without any kodo setting, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_KODO_VARS)}
    return {**base, "KODO_QUEUE_POLLING_INTERVAL_SEC": "0.05", "KODO_SCHEDULED_TICK_CRON": "off", **env}


class KodoProcess:
    """One ``python -m kodo <command>`` child process with its own log file."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, health_url: str | None = None) -> None:
        self.command = command
        self.env = env
        self.log = log
        self.health_url = health_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> KodoProcess:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kodo", *self.command],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        if self.health_url:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"kodo {self.command} exited {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(self.health_url or "", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"kodo {self.command} not healthy in {timeout}s: {self.tail()}")

    def kill9(self) -> None:
        """SIGKILL, as a crash: no shutdown code runs."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def wait_killed(self, timeout: float = 120.0) -> None:
        """Wait for an armed fault point to kill the process (SIGKILL, exit -9); its log tail if it did not."""
        assert self.proc is not None
        assert self.proc.wait(timeout=timeout) == -9, self.tail()

    def restart_until_killed(self, fault_points: str, timeout: float = 120.0) -> None:
        """Start again with ``fault_points`` armed and wait for the fault to kill it (no health wait: it may die
        while recovering, before it answers)."""
        self.env["KODO_FAULT_POINTS"] = fault_points
        health, self.health_url = self.health_url, None
        self.start()
        self.health_url = health
        self.wait_killed(timeout)

    def restart_unarmed(self, timeout: float = 60.0) -> KodoProcess:
        """Start again with no fault point armed (the restart after a crash), waiting for health."""
        self.env.pop("KODO_FAULT_POINTS", None)
        return self.start(timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Spawner:
    """Starts ``kodo <command>`` processes on one ``KODO_HOME`` (and ``DATABASE_URL`` when given, else its
    embedded Postgres), each on free ports and with its own log, waiting for health; ``stop_all`` stops every
    one by PID. ``defaults`` go into each one's environment unless a call overrides them."""

    def __init__(self, logs: Path, home: Path, database_url: str | None = None, **defaults: str) -> None:
        self.logs = logs
        self.home = home
        self.database = {"DATABASE_URL": database_url} if database_url else {}
        self.defaults = defaults
        self.started: list[KodoProcess] = []

    def __call__(
        self,
        command: str,
        *,
        port: int | None = None,
        admin_port: int | None = None,
        args: tuple[str, ...] = (),
        **env: str,
    ) -> KodoProcess:
        port = port or free_port()
        admin_port = admin_port or free_port()
        places = {**self.database, "KODO_HOME": str(self.home), "PORT": str(port), "ADMIN_PORT": str(admin_port)}
        full_env = clean_env(**places, **{**self.defaults, **env})
        health_port = admin_port if command == "worker" else port
        process = KodoProcess(
            [command, *args],
            full_env,
            self.logs / f"{command}-{len(self.started)}.log",
            f"http://127.0.0.1:{health_port}/healthz",
        )
        process.port = port  # type: ignore[attr-defined]
        process.admin_port = admin_port  # type: ignore[attr-defined]
        self.started.append(process)
        return process.start()

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kodo", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def json_of(response: httpx.Response) -> Any:
    return response.json()
