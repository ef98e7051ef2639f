"""``kodo soak hitl``: a bounded load test of human gates against a running kodo on loopback.

N runs park at their plan gate; each gate then gets a burst of duplicate replies (same dedupe key,
sent concurrently): exactly one is the first (``isReplay`` false), the rest are replays; once the run
has ended the same reply is sent once more and must still be a replay (200, not 409). The report
counts errors, checks with SQL that each dedupe key has exactly one ledger row and each gate one
decision, and measures latency from reply to resume (the run leaving ``WAITING_INPUT``) and to SUCCESS.
"""

from __future__ import annotations

import ipaddress
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
import sqlalchemy as sa

from kodo.bench.figures import percentiles
from kodo.errors import InvalidInput
from kodo.models import TERMINAL_HEADER_STATUSES
from kodo.store import measurements

MAX_RUNS = 5000


def require_loopback(base_url: str) -> None:
    """Load tools only ever talk to this machine."""
    host = urlparse(base_url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise InvalidInput(f"load tools only talk to this machine: targets must be loopback addresses, not {host!r}")


# Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them: reusing one the server
# is closing at that moment fails with "connection reset by peer" (httpx's default expiry is also 5 s).
KEEPALIVE_S = 2.0


def loopback_client(base_url: str, *, connections: int, timeout: float = 30) -> httpx.Client:
    """An HTTP client for a load tool: loopback targets only, ``connections`` at most, short keep-alive."""
    require_loopback(base_url)
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=KEEPALIVE_S
    )
    return httpx.Client(base_url=base_url, timeout=timeout, limits=limits)


@dataclass
class SoakReport:
    runs: int
    duplicates: int
    partition: str
    errors: list[str] = field(default_factory=list)
    started: int = 0
    parked: int = 0
    succeeded: int = 0
    replays: int = 0
    late_replays: int = 0
    ledger_rows_per_key_max: int = 0
    decisions_per_gate_max: int = 0
    park_seconds: float = 0.0
    reply_to_resume_ms: dict[str, float] = field(default_factory=dict)
    reply_to_success_ms: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    return {**percentiles(samples, 1), "mean": round(statistics.fmean(samples), 1)}


def soak_hitl(
    base_url: str,
    engine: sa.Engine,
    *,
    runs: int,
    duplicates: int = 3,
    partition: str = "soak",
    timeout_s: float = 300.0,
    concurrency: int = 16,
) -> SoakReport:
    """Run the soak; bounded by ``runs`` (≤ 5000) and ``timeout_s``."""
    require_loopback(base_url)
    if not 1 <= runs <= MAX_RUNS:
        raise InvalidInput(f"--n must be between 1 and {MAX_RUNS}")
    report = SoakReport(runs=runs, duplicates=duplicates, partition=partition)
    began = time.monotonic()
    deadline = began + timeout_s
    tag = f"soak-{int(time.time())}"
    with loopback_client(base_url, connections=max(concurrency, 10)) as http, ThreadPoolExecutor(concurrency) as pool:

        def start(n: int) -> str | None:
            body = {"goal": f"{tag} run {n}", "inputs": {}, "constraints": {}}
            intent = http.post("/api/intents", json=body)
            if intent.status_code != 201:
                report.errors.append(f"intent {n}: {intent.status_code}")
                return None
            wid = str(intent.json()["intentId"])
            started = http.post("/api/runs", json={"intentId": wid, "queuePartitionKey": partition})
            if started.status_code != 201:
                report.errors.append(f"start {n}: {started.status_code} {started.text[:200]}")
                return None
            return wid

        wids = [w for w in pool.map(start, range(runs)) if w]
        report.started = len(wids)
        gates: dict[str, str] = {}
        while len(gates) < len(wids) and time.monotonic() < deadline:
            for wid in wids:
                if wid in gates:
                    continue
                listed = http.get(f"/api/runs/{wid}/gates").json()
                open_gate = next((g for g in listed if g["state"] == "PENDING"), None)
                if open_gate:
                    gates[wid] = open_gate["gateKey"]
            time.sleep(0.2)
        report.parked = len(gates)
        report.park_seconds = round(time.monotonic() - began, 2)

        sent_at: dict[str, float] = {}
        counting = threading.Lock()  # the counters are updated from the pool's threads

        def body(wid: str) -> dict[str, Any]:
            return {"payload": {"choice": "yes", "rationale": "soak"}, "dedupeKey": f"{tag}:{wid}", "origin": "manual"}

        def answer(wid: str) -> None:
            sent_at[wid] = time.monotonic()
            with ThreadPoolExecutor(duplicates) as burst:
                codes = list(
                    burst.map(
                        lambda _: http.post(f"/api/runs/{wid}/gates/{gates[wid]}/reply", json=body(wid)),
                        range(duplicates),
                    )
                )
            for response in codes:
                if response.status_code != 200:
                    report.errors.append(f"reply {wid}: {response.status_code} {response.text[:200]}")
            firsts = [r for r in codes if r.status_code == 200 and r.json()["isReplay"] is False]
            with counting:
                report.replays += sum(1 for r in codes if r.status_code == 200 and r.json()["isReplay"] is True)
            if len(firsts) != 1:
                report.errors.append(f"reply {wid}: {len(firsts)} first replies in a burst of {duplicates}")

        def answer_late(wid: str) -> None:
            """The same reply once more after the run ended: still a replay (200), never a 409."""
            response = http.post(f"/api/runs/{wid}/gates/{gates[wid]}/reply", json=body(wid))
            if response.status_code == 200 and response.json()["isReplay"] is True:
                with counting:
                    report.late_replays += 1
            else:
                report.errors.append(f"late reply {wid}: {response.status_code} {response.text[:200]}")

        list(pool.map(answer, list(gates)))
        resumed: dict[str, float] = {}
        finished: dict[str, float] = {}
        while len(finished) < len(gates) and time.monotonic() < deadline:
            for wid in gates:
                if wid in finished:
                    continue
                header = http.get(f"/api/runs/{wid}").json()
                now = time.monotonic()
                if header["status"] != "WAITING_INPUT" and wid not in resumed:
                    resumed[wid] = now
                if header["status"] in TERMINAL_HEADER_STATUSES:
                    finished[wid] = now
                    if header["status"] != "SUCCESS":
                        report.errors.append(f"run {wid}: {header['status']} {header.get('error')}")
            time.sleep(0.05)
        report.succeeded = sum(1 for wid in finished if f"run {wid}:" not in " ".join(report.errors))
        list(pool.map(answer_late, list(finished)))
        report.reply_to_resume_ms = _percentiles([(resumed[w] - sent_at[w]) * 1000 for w in resumed])
        report.reply_to_success_ms = _percentiles([(finished[w] - sent_at[w]) * 1000 for w in finished])
    with engine.connect() as conn:
        report.ledger_rows_per_key_max = measurements.most_replies_per_key(conn, f"{tag}:")
        report.decisions_per_gate_max = measurements.most_decisions_per_gate(conn, f"{tag} ")
    report.wall_seconds = round(time.monotonic() - began, 2)
    return report
