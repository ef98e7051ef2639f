"""``kodo bench``: bounded, loopback-only benchmarks of a running kodo.

Scenarios (each repeated; min / median / max reported):

* ``burst``   — N runs over P partitions, plans approved as soon as they appear (or ``autoApprove``);
                runs/s from the first start to the last SUCCESS.
* ``latency`` — one run at a time: start → WAITING_INPUT, approve → SUCCESS (ms).
* ``api``     — the predecessor's k6 iteration (create → start → read header, queue depth, steps,
                an artifact) at fixed concurrency (per-request ms, overall and per route).
* ``hitl``    — reply → resume latency of parked runs.
* ``ceiling`` — the ``burst`` shape through the same worker, queues and partitions, but as the run's DBOS
                skeleton with empty bodies (``kodo.workflows.ceiling``): what DBOS alone allows here, the
                baseline to hold ``burst`` against in the same session.

Alongside: CPU seconds per run of the server process tree (when its PID is known), of worker processes
outside it (live ``app.executors`` on this host), of Postgres, of the bench client and of the whole
machine (``/proc/stat``: everything above plus whatever else ran), DBOS operations and
Postgres transactions per run (from ``dbos.operation_outputs`` and ``pg_stat_database``), and the
environment. Only loopback targets are accepted; every loop is bounded in count and time.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any
from urllib.parse import urlparse

import httpx
import sqlalchemy as sa
from dbos import DBOSClient, EnqueueOptions

from kodo.bench.figures import summarize, summary
from kodo.bench.probe import Probe, cpu_clock, listener_pid, machine_share, postmaster_of
from kodo.bench.soak import loopback_client, require_loopback
from kodo.errors import InvalidInput
from kodo.models import TERMINAL_HEADER_STATUSES
from kodo.settings import Settings
from kodo.store import measurements, oracles

SCENARIOS = ("burst", "latency", "api", "hitl", "ceiling")
# The skeleton's workflows (kodo.workflows.ceiling), enqueued by name like the API enqueues RunIntent.
CEILING_BEGIN, CEILING_RESUME = "CeilingBegin", "CeilingResume"
# The ceiling's continuation by shape: ``child`` is a run's today (its task a child workflow on sbxQ);
# ``inline`` is the continuation on sbxQ running its one task itself (kodo.workflows.ceiling).
CEILING_SHAPES = {"child": (CEILING_RESUME, "intentQ"), "inline": ("CeilingResumeInline", "sbxQ")}
API_ROUTES = ("intent", "start", "header", "queueDepth", "steps", "artifact")
TERMINAL = TERMINAL_HEADER_STATUSES  # a header's (and, in the ceiling, a skeleton workflow's) end
FOLLOW = ("poll", "wait")  # how burst and latency follow a run: re-read its header, or long-poll it
LONG_POLL_S = 20
WAITERS = 256  # burst --follow wait: runs followed at once (a thread and a connection each)


def partition_name(tag: str, index: int) -> str:
    """A repetition's own partitions: a queue's rate limit is per partition and counts the last minute's
    starts (kodo's default, as the predecessor's: 100 a minute), so partitions shared with the repetition
    before, or with the ceiling taken right before, would throttle this one and measure the limiter."""
    return f"{tag}-p{index}"


def start_body(intent_id: str, partition: str, *, auto: bool) -> dict[str, Any]:
    """``POST /api/runs``'s body; ``autoApprove`` only when set (the predecessor refuses fields it does not know)."""
    body: dict[str, Any] = {"intentId": intent_id, "queuePartitionKey": partition}
    return body | {"autoApprove": True} if auto else body


def run_id(answer: Any, intent_id: str) -> str:
    """The run's workflow id from ``POST /api/runs``'s answer (kodo's and the predecessor's say ``workflowID``)."""
    found = answer.get("workflowID") if isinstance(answer, dict) else None
    return str(found) if found else intent_id


def long_poll(http: httpx.Client, wid: str, until: str) -> dict[str, Any]:
    """``GET /api/runs/{wid}?until=…``: the header once the run gets there (or after ``LONG_POLL_S``)."""
    params = {"until": until, "timeoutS": str(LONG_POLL_S)}
    return dict(http.get(f"/api/runs/{wid}", params=params).raise_for_status().json())


class Bench:
    def __init__(
        self,
        base_url: str,
        engine: sa.Engine | None,
        settings: Settings,
        *,
        pid: int | None,
        port: int | None = None,
        timeout_s: float,
        dbos_client: Callable[[], DBOSClient],
        postmaster: int | None = None,
        poll_ms: int = 20,
    ) -> None:
        require_loopback(base_url)
        self.http = loopback_client(base_url, connections=64)
        self.engine, self.settings, self._connect = engine, settings, dbos_client
        self.probe = Probe(engine, pid, postmaster, port)
        self.poll_s = poll_ms / 1000
        self.polls_answered = 0  # burst: run headers read (answered 200) while the runs ran
        self.deadline = time.monotonic() + timeout_s
        self._client: DBOSClient | None = None

    def close(self) -> None:
        self.http.close()
        if self._client is not None:
            self._client.destroy()

    @property
    def client(self) -> DBOSClient:
        if self._client is None:  # only the ceiling enqueues workflows itself
            self._client = self._connect()
        return self._client

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError("benchmark time limit reached")

    def start(self, goal: str, partition: str, *, auto: bool) -> str:
        intent = self.http.post("/api/intents", json={"goal": goal, "inputs": {}, "constraints": {}})
        if intent.status_code != 201:
            raise RuntimeError(f"POST /api/intents answered {intent.status_code}: {intent.text[:200]}")
        intent_id = str(intent.json()["intentId"])
        body = start_body(intent_id, partition, auto=auto)
        started = self.http.post("/api/runs", json=body)
        if started.status_code != 201:
            raise RuntimeError(f"POST /api/runs answered {started.status_code}: {started.text[:200]}")
        return run_id(started.json(), intent_id)

    def status(self, wid: str) -> dict[str, Any]:
        return dict(self.http.get(f"/api/runs/{wid}").raise_for_status().json())

    def wait(
        self, wid: str, want: Callable[[dict[str, Any]], bool], interval: float = 0.01, until: str | None = None
    ) -> dict[str, Any]:
        """Read the run's header until ``want`` holds: every ``interval`` seconds, or with ``until`` (``input``
        or ``end``) as long-polls that the server answers when the run gets there."""
        while True:
            self._check_time()
            header = self.status(wid) if until is None else long_poll(self.http, wid, until)
            if want(header):
                return header
            if until is None:
                time.sleep(interval)

    def approve(self, wid: str) -> None:
        response = self.http.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "bench"})
        if response.status_code != 202:
            raise RuntimeError(f"approve-plan answered {response.status_code}")

    # --- scenarios --------------------------------------------------------------------------

    def burst(
        self, runs: int, partitions: int, *, auto: bool, tag: str, pollers: int = 4, follow: str = "poll"
    ) -> dict[str, Any]:
        """N runs over P partitions, each followed to its end (approving plans as they appear): ``follow="poll"``,
        ``pollers`` clients re-read every run's header in turn; ``"wait"``, one long-poll per run at a time."""
        before = self.probe.read()
        self.polls_answered = 0
        began = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            wids = list(
                pool.map(
                    lambda n: self.start(f"{tag} burst {n}", partition_name(tag, n % partitions), auto=auto),
                    range(runs),
                )
            )
        accepted = time.monotonic() - began
        if follow == "wait":
            outcomes = self._wait_all(wids)
            pollers = 0
        else:
            outcomes = self._poll_all(wids, pollers)
        elapsed = time.monotonic() - began
        return {
            "runs": runs,
            "failed": sum(status != "SUCCESS" for status in outcomes.values()),
            "follow": follow,
            "pollers": pollers,
            "seconds": round(elapsed, 2),
            "runsPerSecond": round(runs / elapsed, 2),
            "acceptSeconds": round(accepted, 2),  # every intent and run accepted (2N POSTs from 16 clients)
            "pollsAnswered": self.polls_answered,
            "pollsPerSecond": round(self.polls_answered / elapsed, 1),
            # every request the API answered during the burst: 2N to accept, the approvals, the polls
            "requestsPerSecond": round((2 * runs + (0 if auto else runs) + self.polls_answered) / elapsed, 1),
            **self.probe.per_run(before, self.probe.read(), runs),
        }

    def _poll_all(self, wids: list[str], pollers: int) -> dict[str, str]:
        """Each of ``pollers`` threads reads its share of the runs' headers in turn (each run at most every
        ``poll_ms``), approving plans as they appear, until every run has ended; returns each run's final status."""
        outcomes: dict[str, str] = {}
        lock = threading.Lock()

        def poll(share: list[str]) -> None:
            pending, approved = set(share), set()
            while pending:
                self._check_time()
                sweep = time.monotonic()
                for wid in list(pending):
                    header = self.status(wid)
                    with lock:
                        self.polls_answered += 1
                    if header["status"] in TERMINAL:
                        pending.discard(wid)
                        outcomes[wid] = header["status"]
                    elif header["nextAction"] == "APPROVE_PLAN" and wid not in approved:
                        self.approve(wid)
                        approved.add(wid)
                time.sleep(max(0.0, self.poll_s - (time.monotonic() - sweep)))

        with ThreadPoolExecutor(pollers) as pool:
            list(pool.map(poll, [wids[k::pollers] for k in range(pollers)]))
        return outcomes

    def _wait_all(self, wids: list[str]) -> dict[str, str]:
        """Every run followed by long-polls (``GET /api/runs/{id}?until=input``, then ``until=end`` once its plan
        is approved), one thread and one connection per run (at most ``WAITERS`` at once: the rest wait their
        turn); returns each run's final status."""
        threads = min(len(wids), WAITERS)
        with loopback_client(str(self.http.base_url), connections=threads, timeout=LONG_POLL_S + 15) as http:

            def follow(wid: str) -> str:
                until, approved = "input", False
                while True:
                    self._check_time()
                    header = long_poll(http, wid, until)
                    if header["status"] in TERMINAL:
                        return str(header["status"])
                    if header.get("nextAction") == "APPROVE_PLAN" and not approved:
                        answer = http.post(f"/api/runs/{wid}/approve-plan", json={"approvedBy": "bench"})
                        if answer.status_code != 202:
                            raise RuntimeError(f"approve-plan answered {answer.status_code}")
                        until, approved = "end", True

            with ThreadPoolExecutor(threads) as pool:
                statuses = list(pool.map(follow, wids))
        return dict(zip(wids, statuses, strict=True))

    def ceiling(self, runs: int, partitions: int, *, tag: str, shape: str = "child") -> dict[str, Any]:
        """``burst`` (approve-on-appear) as the run's DBOS skeleton: N CeilingBegin on intentQ over P
        partitions; as each one ends, its CeilingResume is enqueued (the approval), whose CeilingTask child
        runs on sbxQ; runs/s from the first enqueue to the last CeilingResume's end. ``shape="inline"``: the
        continuation is CeilingResumeInline on sbxQ, with no child."""
        resume_name, resume_queue = CEILING_SHAPES[shape]
        version = self.settings.app_version
        partitioned = {"intentQ": self.settings.intent_queue_partition, "sbxQ": self.settings.sbx_queue_partition}

        def enqueue(name: str, workflow_id: str, partition: str, *args: str) -> None:
            queue = resume_queue if name == resume_name else "intentQ"
            options: EnqueueOptions = {
                "workflow_name": name,
                "queue_name": queue,
                "workflow_id": workflow_id,
                "app_version": version,
            }
            if partitioned[queue]:
                options["queue_partition_key"] = partition
            self.client.enqueue(options, *args)

        before = self.probe.read()
        began = time.monotonic()
        partition_of = {f"{tag}:{n}": partition_name(tag, n % partitions) for n in range(runs)}
        for key, partition in partition_of.items():
            enqueue(CEILING_BEGIN, key, partition, key)
        begun, waiting_resumes = set(partition_of), set[str]()
        outcomes: dict[str, str] = {}
        engine = self.engine
        if engine is None:
            raise InvalidInput("the ceiling runs in kodo's own worker: it needs a kodo target")
        while begun or waiting_resumes:
            self._check_time()
            with engine.connect() as conn:
                rows = measurements.workflow_statuses(conn, [*begun, *waiting_resumes])
            for workflow_id, status in rows:
                if status not in TERMINAL:
                    continue
                if workflow_id in begun:
                    begun.discard(workflow_id)
                    if status == "SUCCESS":
                        enqueue(
                            resume_name,
                            f"{workflow_id}:resume",
                            partition_of[workflow_id],
                            workflow_id,
                            partition_of[workflow_id],
                        )
                        waiting_resumes.add(f"{workflow_id}:resume")
                    else:
                        outcomes[workflow_id] = status
                elif workflow_id in waiting_resumes:
                    waiting_resumes.discard(workflow_id)
                    outcomes[workflow_id.removesuffix(":resume")] = status
            time.sleep(0.02)
        elapsed = time.monotonic() - began
        return {
            "runs": runs,
            "shape": shape,
            "failed": sum(status != "SUCCESS" for status in outcomes.values()),
            "seconds": round(elapsed, 2),
            "runsPerSecond": round(runs / elapsed, 2),
            **self.probe.per_run(before, self.probe.read(), runs),
        }

    def latency(self, runs: int, *, tag: str, follow: str = "poll", auto: bool = False) -> dict[str, Any]:
        """One run at a time, each seen by re-reading the header every 10 ms (``follow="poll"``) or by a long-poll
        (``"wait"``): start → WAITING_INPUT, approve → SUCCESS and start → SUCCESS (the approval on sight counted);
        with ``auto``, runs that approve themselves (``autoApprove``): start → SUCCESS only. A run that does not
        end SUCCESS, or an ``auto`` run parked at its plan gate, fails the scenario: it would time something else."""
        to_gate: list[float] = []
        to_success: list[float] = []
        whole: list[float] = []
        waits = follow == "wait"
        before = self.probe.read()
        for n in range(runs):
            began = time.monotonic()
            wid = self.start(f"{tag} latency {n}", partition_name(tag, 0), auto=auto)
            if not auto:
                parked = self.wait(
                    wid,
                    lambda h: h["status"] == "WAITING_INPUT" or h["status"] in TERMINAL,
                    until="input" if waits else None,
                )
                if parked["status"] != "WAITING_INPUT":
                    raise RuntimeError(f"run {wid} ended {parked['status']} before its plan gate")
                gate_at = time.monotonic()
                to_gate.append((gate_at - began) * 1000)
                self.approve(wid)
            header = self.wait(
                wid,
                lambda h: h["status"] in TERMINAL or (auto and h.get("nextAction") == "APPROVE_PLAN"),
                until="end" if waits else None,
            )
            ended = time.monotonic()
            if header["status"] != "SUCCESS":
                raise RuntimeError(f"run {wid} ended {header['status']} (nextAction {header.get('nextAction')})")
            if not auto:
                to_success.append((ended - gate_at) * 1000)
            whole.append((ended - began) * 1000)
        timings = {} if auto else {"startToWaitingMs": summarize(to_gate), "approveToSuccessMs": summarize(to_success)}
        return {
            "follow": follow,
            "autoApprove": auto,
            **timings,
            "startToSuccessMs": summarize(whole),
            **self.probe.per_run(before, self.probe.read(), runs),
        }

    def api(self, loops: int, concurrency: int, *, tag: str, auto: bool = False, think_ms: int = 0) -> dict[str, Any]:
        """The predecessor's k6 iteration, ``loops`` times from ``concurrency`` clients: create an intent,
        start its run (partition ``<tag>-k6-part-p<n % 8>``: the predecessor's eight, this repetition's own),
        read its header, the queue depth, its steps and an artifact (the first one its steps list, else a
        missing one: 404). Each client then pauses ``think_ms`` (k6's ``sleep()`` between iterations; 0: a
        closed loop at full speed)."""
        samples: dict[str, list[float]] = {route: [] for route in API_ROUTES}
        unexpected: list[str] = []

        def call(route: str, method: str, path: str, expect: set[int], **kwargs: Any) -> httpx.Response:
            began = time.monotonic()
            response = self.http.request(method, path, **kwargs)
            samples[route].append((time.monotonic() - began) * 1000)
            if response.status_code not in expect:
                unexpected.append(f"{method} {path} answered {response.status_code}")
            return response

        def loop(n: int) -> None:
            self._check_time()
            goal = {"goal": f"{tag} api {n}", "inputs": {}, "constraints": {}}
            intent_id = str(call("intent", "POST", "/api/intents", {201}, json=goal).json()["intentId"])
            start = start_body(intent_id, partition_name(f"{tag}-k6-part", n % 8), auto=auto)
            wid = run_id(call("start", "POST", "/api/runs", {201}, json=start).json(), intent_id)
            call("header", "GET", f"/api/runs/{wid}", {200})
            call("queueDepth", "GET", "/api/ops/queue-depth?limit=10", {200})
            rows = call("steps", "GET", f"/api/runs/{wid}/steps", {200}).json()
            refs = [ref for row in rows for ref in row.get("artifactRefs", [])]
            uri = refs[0]["id"] if refs else "artifact://bench/missing"
            call("artifact", "GET", f"/api/artifacts/{uri}", {200, 404})
            time.sleep(think_ms / 1000)

        began = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(loop, range(loops)))
        elapsed = time.monotonic() - began
        if unexpected:
            raise RuntimeError(f"{len(unexpected)} unexpected answers, first: {unexpected[0]}")
        every = [sample for route in API_ROUTES for sample in samples[route]]
        return {
            "loops": loops,
            "concurrency": concurrency,
            "autoApprove": auto,
            "thinkMs": think_ms,
            "requestMs": summarize(every),
            "routeMs": {route: summarize(values) for route, values in samples.items()},
            "requestsPerSecond": round(len(every) / elapsed, 1),
        }

    def hitl(self, runs: int, *, tag: str) -> dict[str, Any]:
        wids = [self.start(f"{tag} hitl {n}", partition_name(tag, n % 8), auto=False) for n in range(runs)]
        for wid in wids:
            self.wait(wid, lambda h: h["status"] == "WAITING_INPUT", interval=0.05)
        samples = []
        for wid in wids:
            sent = time.monotonic()
            self.approve(wid)
            self.wait(wid, lambda h: h["status"] != "WAITING_INPUT")
            samples.append((time.monotonic() - sent) * 1000)
        for wid in wids:
            self.wait(wid, lambda h: h["status"] in TERMINAL, interval=0.05)
        return {"runs": runs, "replyToResumeMs": summarize(samples)}


def environment(base_url: str, engine: sa.Engine | None) -> dict[str, Any]:
    server = None
    if engine is not None:
        with engine.connect() as conn:
            server = measurements.server_version(conn)
    health = httpx.get(f"{base_url}/healthz", timeout=5).json()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "dbos": metadata.version("dbos"),
        "kodo": metadata.version("kodo"),
        "postgres": server,
        "target": base_url,
        "server": health,
    }


def _postmaster(engine: sa.Engine | None, postgres_port: int | None) -> int | None:
    """The benchmark's Postgres server process: found through kodo's own database when there is one, else by
    the TCP port it listens on; None counts every Postgres process of the machine."""
    found = None if engine is None else postmaster_of(engine)
    if found is None and postgres_port is not None:
        found = listener_pid(postgres_port)
    return found


def run_bench(
    base_url: str,
    engine: sa.Engine | None,
    settings: Settings,
    *,
    dbos_client: Callable[[], DBOSClient],
    scenario: str,
    repetitions: int,
    runs: int,
    partitions: int,
    concurrency: int,
    auto: bool,
    timeout_s: float,
    think_ms: int = 0,
    against: str | None = None,
    follow: str = "poll",
    poll_ms: int = 20,
    postgres_port: int | None = None,
    shape: str = "child",
) -> dict[str, Any]:
    """Run one scenario ``repetitions`` times; returns the per-repetition results and their spread.

    ``against="ceiling"`` (burst only) runs a ``ceiling`` repetition of the same size right before each
    burst repetition, and reports each burst's ``ratioToCeiling``: a ratio against a baseline taken
    moments earlier on the same machine holds still where a shared VM's absolute numbers drift.

    The target must be loopback (checked before the first request); the server's PID comes from its
    ``/healthz``, else from the process listening on its port, for the CPU figures. ``engine`` is kodo's
    database: None when the target is another server that speaks the same HTTP API (the predecessor), which
    skips what needs it (DBOS operations, commits, worker executors; the ceiling is refused).
    ``postgres_port``: the benchmark's Postgres, whose server process and backends are counted.
    """
    require_loopback(base_url)
    if scenario not in SCENARIOS:
        raise InvalidInput(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if not 1 <= repetitions <= 10 or not 1 <= runs <= 2000:
        raise InvalidInput("--reps must be 1..10 and --n 1..2000")
    if against is not None and (against != "ceiling" or scenario != "burst"):
        raise InvalidInput("--against ceiling applies to the burst scenario only")
    if follow not in FOLLOW or (follow != "poll" and scenario not in {"burst", "latency"}):
        raise InvalidInput("--follow is poll or wait, and wait applies to burst and latency only")
    if shape not in CEILING_SHAPES or (shape != "child" and scenario != "ceiling"):
        raise InvalidInput(f"--shape is one of {', '.join(CEILING_SHAPES)}, and applies to the ceiling only")
    if engine is None and (scenario == "ceiling" or against is not None):
        raise InvalidInput("the ceiling runs in kodo's own worker: it needs a kodo target")
    pid = httpx.get(f"{base_url}/healthz", timeout=5).json().get("pid")
    port = urlparse(base_url).port or 80
    bench = Bench(
        base_url,
        engine,
        settings,
        pid=pid if isinstance(pid, int) else listener_pid(port),
        port=port,
        timeout_s=timeout_s,
        dbos_client=dbos_client,
        postmaster=_postmaster(engine, postgres_port),
        poll_ms=poll_ms,
    )
    results: list[dict[str, Any]] = []
    try:
        for rep in range(repetitions):
            tag = f"bench-{scenario}-{int(time.time())}-{rep}"
            clock = cpu_clock()
            if scenario == "burst":
                baseline = bench.ceiling(runs, partitions, tag=f"{tag}-ceiling") if against else None
                result = bench.burst(runs, partitions, auto=auto, tag=tag, pollers=concurrency, follow=follow)
                if baseline is not None:
                    result |= {
                        "ceilingRunsPerSecond": baseline["runsPerSecond"],
                        "ratioToCeiling": round(result["runsPerSecond"] / baseline["runsPerSecond"], 3),
                    }
            elif scenario == "latency":
                result = bench.latency(runs, tag=tag, follow=follow, auto=auto)
            elif scenario == "api":
                result = bench.api(runs, concurrency, tag=tag, auto=auto, think_ms=think_ms)
            elif scenario == "ceiling":
                result = bench.ceiling(runs, partitions, tag=tag, shape=shape)
            else:
                result = bench.hitl(runs, tag=tag)
            results.append(result | machine_share(clock, cpu_clock()))
            if engine is not None:  # after the measurement: what the repetition left must hold every oracle
                results[-1]["oracles"] = held_oracles(engine, settings)
    finally:
        bench.close()
    return {
        "scenario": scenario,
        "repetitions": results,
        "summary": summary(scenario if against is None else f"{scenario}-{against}", results),
        "environment": environment(base_url, engine),
    }


def held_oracles(engine: sa.Engine, settings: Settings) -> dict[str, int]:
    """Each SQL oracle that returns rows, with how many (empty: every invariant holds after the repetition).
    The oracle that is true for a moment after each run ends gets 5 s to settle (kodo.store.oracles)."""
    with engine.connect() as conn:
        found = oracles.violations(conn, dead_after_s=settings.executor_dead_after_sec, settle_s=oracles.SETTLE_S)
    return {name: len(rows) for name, rows in found.items()}


def violated(repetitions: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """What labelled repetitions left violated, as ``label: oracle (N row(s))``; empty when every oracle held."""
    return [
        f"{label}: {name} ({count} row(s))"
        for label, repetition in repetitions
        for name, count in sorted(repetition.get("oracles", {}).items())
    ]
