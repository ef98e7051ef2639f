"""``kodo bench scale``: the burst's throughput against the number of worker processes.

For each count K (default 1, 2 and 4) and each repetition, in alternating order (every K once, then again),
it starts a fresh ``kodo up --workers K`` of its own: a new data directory (its own embedded Postgres), free
loopback ports, the same environment otherwise. It waits for ``/healthz``, runs one ``burst`` repetition
against it (``kodo.bench.bench``), stops the processes by PID and the database, and removes the directory.
The report gives runs/s per K (min / median / max), the speed-up against the first K, CPU per run of the
server's processes and of Postgres, how busy the machine was, and what bounds the curve: the machine's
cores when it was busy (a 2-core machine runs out of CPU before it runs out of workers), else the waits.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from kodo.bench.bench import run_bench
from kodo.bench.figures import spread
from kodo.database import EmbeddedPostgres
from kodo.errors import InvalidInput
from kodo.settings import Settings
from kodo.store import create_engine

START_TIMEOUT_S = 180  # a loaded machine's first initdb and migrations
BUSY = 90.0  # the machine's busy share (%) from which the curve is bounded by its cores


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(home: Path, port: int, admin_port: int) -> dict[str, str]:
    """This process's environment for the server under test, on its own data directory and ports (never
    DATABASE_URL: each repetition has its own fresh embedded Postgres)."""
    env = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "DBOS__VMID"}}
    return env | {"KODO_HOME": str(home), "PORT": str(port), "ADMIN_PORT": str(admin_port)}


class Server:
    """One ``kodo up --workers K`` on a fresh data directory, stopped by PID."""

    def __init__(self, workers: int, root: Path) -> None:
        self.home = Path(tempfile.mkdtemp(prefix=f"scale-{workers}-", dir=root))
        self.port = _free_port()
        env = _environment(self.home, self.port, _free_port())
        self.log = (self.home / "server.log").open("wb")
        command = [sys.executable, "-m", "kodo", "up", "--workers", str(workers)]
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kodo up exited {self.process.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"kodo up did not answer /healthz within {START_TIMEOUT_S} s: {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        """The end of its log (the directory is removed when it stops)."""
        text = (self.home / "server.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        EmbeddedPostgres(self.home).stop()
        shutil.rmtree(self.home, ignore_errors=True)


def bound(curve: list[dict[str, Any]]) -> str:
    """What bounds the curve, from the measured figures (the busiest point's machine share)."""
    busiest = max(curve, key=lambda point: point.get("cpuBusyPercent", 0))
    busy = busiest.get("cpuBusyPercent", 0)
    if busy >= BUSY:
        return (
            f"the machine's {os.cpu_count()} cores: {busy}% busy at {busiest['workers']} worker(s) (steal "
            f"{busiest.get('cpuStealPercent')}%); more processes share the same CPU, each run costs "
            f"{busiest.get('machineCpuSecondsPerRun')} s of it"
        )
    return f"waits, not CPU: the machine was at most {busy}% busy (queue polling, commits, the client's polls)"


def run_scale(
    settings: Settings,
    *,
    workers: tuple[int, ...],
    repetitions: int,
    runs: int,
    partitions: int,
    concurrency: int,
    poll_ms: int,
    timeout_s: float,
) -> dict[str, Any]:
    """The burst (one repetition at a time) against ``kodo up --workers K`` for each K, alternating."""
    if not workers or any(not 1 <= count <= 16 for count in workers) or not 1 <= repetitions <= 10:
        raise InvalidInput("--workers takes counts from 1 to 16, --reps 1..10")
    root = Path(tempfile.mkdtemp(prefix="kodo-bench-scale-"))
    results: dict[int, list[dict[str, Any]]] = {count: [] for count in workers}
    try:
        for _rep in range(repetitions):
            for count in workers:
                server = Server(count, root)
                try:
                    server.wait_healthy()
                    engine_url = EmbeddedPostgres(server.home).start()  # running already: its URL
                    engine = create_engine(engine_url, pool_size=2)
                    try:
                        report = run_bench(
                            server.base,
                            engine,
                            settings,
                            dbos_client=_no_client,
                            scenario="burst",
                            repetitions=1,
                            runs=runs,
                            partitions=partitions,
                            concurrency=concurrency,
                            auto=False,
                            timeout_s=timeout_s,
                            poll_ms=poll_ms,
                            postgres_port=_port_of(engine_url),
                        )
                    finally:
                        engine.dispose()
                    results[count].append(report["repetitions"][0])
                finally:
                    server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return _report(results, runs=runs, partitions=partitions, poll_ms=poll_ms)


def _report(results: dict[int, list[dict[str, Any]]], **shape: int) -> dict[str, Any]:
    curve = []
    for count, reps in results.items():
        point: dict[str, Any] = {"workers": count, "runsPerSecond": spread([rep["runsPerSecond"] for rep in reps])}
        figures = ("cpuSecondsPerRun", "workerCpuSecondsPerRun", "postgresCpuSecondsPerRun", "machineCpuSecondsPerRun")
        for figure in (*figures, "pollsPerSecond"):
            values = [rep[figure] for rep in reps if isinstance(rep.get(figure), int | float)]
            if values:
                point[figure] = round(statistics.median(values), 4)
        for figure in ("cpuBusyPercent", "cpuStealPercent"):
            values = [rep[figure] for rep in reps if figure in rep]
            if values:
                point[figure] = round(statistics.median(values), 1)
        curve.append(point)
    first = curve[0]["runsPerSecond"]["median"]
    for point in curve:
        point["speedup"] = round(point["runsPerSecond"]["median"] / first, 2) if first else None
    return {
        "scenario": "scale",
        **shape,
        "curve": curve,
        "boundBy": bound(curve),
        "repetitions": {str(count): reps for count, reps in results.items()},
        "cpus": os.cpu_count(),
    }


def _no_client() -> Any:
    raise InvalidInput("the scale scenario runs bursts only")


def _port_of(url: str) -> int | None:
    from sqlalchemy.engine import make_url

    return make_url(url).port
