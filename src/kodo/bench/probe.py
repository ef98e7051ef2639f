"""What a benchmark repetition costs: CPU seconds of the server's process tree, of worker processes outside
it, of Postgres, of the bench client and of the whole machine (from ``/proc``), plus DBOS operations and
Postgres commits (from the database), read before and after and turned into figures per run."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kodo.store import measurements


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:  # utime + stime, plus cutime + cstime: children that exited and were reaped
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / ticks


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command name) of every process on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if fields is not None:
            found.append((int(entry.name), int(fields[1]), name))
    return found


def cpu_clock() -> tuple[int, int, int] | None:
    """The machine's CPU time so far from ``/proc/stat``: (busy, steal, total) jiffies; None off Linux."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq, steal, sum(fields)


def machine_share(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> dict[str, float]:
    """How busy the whole machine was during a repetition (``cpuBusyPercent``), and how much of its time the
    hypervisor gave to other guests (``cpuStealPercent``: on a shared VM, the noise in the numbers)."""
    if before is None or after is None or after[2] <= before[2]:
        return {}
    total = after[2] - before[2]
    return {
        "cpuBusyPercent": round(100 * (after[0] - before[0]) / total, 1),
        "cpuStealPercent": round(100 * (after[1] - before[1]) / total, 1),
    }


def server_tree(pid: int, processes: list[tuple[int, int, str]]) -> list[int]:
    """The server process and its descendants (``kodo up --workers N`` spawns its workers as children)."""
    tree, grew = {pid}, True
    while grew:
        grew = False
        for child, parent, _ in processes:
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sorted(tree)


def worker_processes(engine: sa.Engine, server: list[int], processes: list[tuple[int, int, str]]) -> list[int]:
    """Live worker executors on this machine (``app.executors``) outside the server's own tree, with their
    descendants: in the split topology, the processes of ``kodo worker [--processes N]``."""
    with engine.connect() as conn:
        registered = measurements.live_executor_pids(conn, socket.gethostname())
    alive = {pid for pid, _, _ in processes}
    found: set[int] = set()
    for pid in sorted(registered & alive - set(server)):
        found.update(server_tree(pid, processes))
    return sorted(found - set(server))


def _postgres_name(name: str) -> bool:
    """A Postgres process's command name (a server started as ``postmaster`` and its backends keep that one)."""
    return name in {"postgres", "postmaster"} or name.startswith("postgres:")


def postgres_processes(processes: list[tuple[int, int, str]], postmaster: int | None = None) -> list[int]:
    """The benchmark's Postgres: the server ``postmaster`` and its backends when known (a shared machine runs
    other clusters too), else every Postgres process on this machine."""
    if postmaster is not None:
        return server_tree(postmaster, processes)
    return [pid for pid, _, name in processes if _postgres_name(name)]


def _is_postgres(pid: int) -> bool:
    try:
        return _postgres_name(Path(f"/proc/{pid}/comm").read_text().strip())
    except OSError:
        return False


def postmaster_of(engine: sa.Engine) -> int | None:
    """The server process of ``engine``'s Postgres when it runs on this machine: the parent of one of its
    backends (an embedded Postgres listens on a Unix socket only, with no TCP port to find it by). Its tree,
    with the CPU of the backends it reaped, is the database's CPU, whatever else runs on the machine."""
    with engine.connect() as conn:
        backend = measurements.backend_pid(conn)
        fields = _stat(backend)  # read while the backend lives
    if fields is None or not _is_postgres(backend):
        return None  # another machine (or another PID namespace)
    parent = int(fields[1])
    return parent if _is_postgres(parent) else None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # state LISTEN
                inodes.add(fields[9])
    return inodes


def _listeners(port: int) -> dict[int, int]:
    """Each process holding a socket that listens on TCP ``port`` of this machine, with its parent's PID."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return {}
    holders: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:
            continue
        links = set()
        for descriptor in descriptors:
            try:  # a descriptor closed since the listing (the listing's own, in this process) is skipped
                links.add(os.readlink(descriptor))
            except OSError:
                continue
        fields = _stat(int(entry.name))
        if links & wanted and fields is not None:
            holders[int(entry.name)] = int(fields[1])
    return holders


def listener_pids(port: int) -> list[int]:
    """Every process listening on TCP ``port`` of this machine: one, or each process of a server that serves
    one port from several (``SO_REUSEPORT``, or children sharing their parent's socket)."""
    return sorted(_listeners(port))


def listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` of this machine (the root one, when children share the socket):
    how the load tools find a server that does not say its PID, and a database server's postmaster."""
    holders = _listeners(port)
    roots = sorted(pid for pid, parent in holders.items() if parent not in holders)
    return roots[0] if roots else None


def rss_mb(pid: int) -> float | None:
    """A process's resident memory in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Probe:
    """Counters read before and after a repetition: CPU of the server's processes, of the worker processes
    outside it, of Postgres, of this client and of the whole machine; DBOS operations, Postgres commits."""

    engine: sa.Engine | None  # kodo's database; None for another server (no DBOS or commit counts)
    pid: int | None
    postmaster: int | None = None  # the benchmark's Postgres server process, when known
    port: int | None = None  # the server's port: every process listening on it is the server's too
    worker_pids: list[int] = field(default_factory=list)  # as of the last read

    def read(self) -> dict[str, float]:
        found: dict[str, float] = {}
        if self.engine is not None:
            with self.engine.connect() as conn:
                counted = measurements.counters(conn)
            found = {"operations": float(counted.operations), "commits": float(counted.commits)}
        processes = _processes()  # one /proc snapshot per read
        found["postgresCpu"] = _cpu_seconds(postgres_processes(processes, self.postmaster))
        tree: list[int] = []
        serving: set[int] = set()
        if self.pid is not None and _stat(self.pid) is not None:
            # `kodo up --api-processes N`: N API processes on one port (SO_REUSEPORT), /healthz answered by any
            serving = {self.pid, *([] if self.port is None else listener_pids(self.port))}
            tree = sorted({pid for root in serving for pid in server_tree(root, processes)})
            found["cpu"] = _cpu_seconds(tree)
            found["serverProcesses"] = float(len(tree))
        workers = [] if self.engine is None else worker_processes(self.engine, tree, processes)
        found["workerCpu"], found["workerProcesses"] = _cpu_seconds(workers), float(len(workers))
        # Worker processes: `kodo up --workers N`'s children, or the split topology's `kodo worker` processes.
        self.worker_pids = [pid for pid in tree if pid not in serving] + workers
        own = os.times()
        found["clientCpu"] = own.user + own.system
        clock = cpu_clock()
        if clock is not None:
            found["machineCpu"] = clock[0] / os.sysconf("SC_CLK_TCK")
        return found

    def per_run(self, before: dict[str, float], after: dict[str, float], runs: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "operations" in before and "operations" in after:  # kodo's database only
            out["dbosOperationsPerRun"] = round((after["operations"] - before["operations"]) / runs, 1)
            out["postgresCommitsPerRun"] = round((after["commits"] - before["commits"]) / runs, 1)
        if "cpu" in before and "cpu" in after:  # the server process tree
            out["cpuSecondsPerRun"] = round((after["cpu"] - before["cpu"]) / runs, 4)
        for name in ("postgresCpu", "workerCpu", "clientCpu", "machineCpu"):
            if name in before and name in after:
                out[f"{name}SecondsPerRun"] = round((after[name] - before[name]) / runs, 4)
        if after.get("workerProcesses"):
            out["workerProcesses"] = int(after["workerProcesses"])
        if "serverProcesses" in after:
            out["serverProcesses"] = int(after["serverProcesses"])
        rss = None if self.pid is None else rss_mb(self.pid)
        if rss is not None:
            out["serverRssMB"] = round(rss, 1)
        worker_rss = [round(value, 1) for value in map(rss_mb, self.worker_pids) if value is not None]
        if worker_rss:
            out["workerRssMB"] = worker_rss
        return out
