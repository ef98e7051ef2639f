"""``GET /metrics``: Prometheus text from a per-app registry.

* Read at scrape time from SQL (database-wide, identical on every process): runs by status, step
  latency histograms, queue depth and oldest age per queue/partition/status, open gates and gate waits,
  sandbox runs and minutes.
* Kept by this process: HTTP request latency by method, route template and status.

Nothing lives at import time: :func:`build` makes a fresh ``CollectorRegistry`` for each app.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from kodo.api.access import requires
from kodo.api.answers import media
from kodo.models import RUN_STATUSES  # every status is exported, even at zero
from kodo.store import metrics as queries

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
log = structlog.get_logger("kodo.metrics")
router = APIRouter()


def _histogram(name: str, doc: str, label: str, rows: Iterable[queries.Histogram], bounds: tuple[float, ...]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for row in rows:
        buckets = [(str(bound), float(count)) for bound, count in zip(bounds, row.cumulative, strict=True)]
        family.add_metric([row.label], [*buckets, ("+Inf", float(row.count))], sum_value=row.total)
    return family


class SqlCollector(Collector):
    """Every database-backed series, computed by a handful of aggregate queries per scrape."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def describe(self) -> Iterable[Metric]:
        return []  # no query at registration time

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("kodo_metrics_database_up", "1 when the database answered this scrape's queries.")
        try:
            families = list(self._families())
        except Exception as error:
            log.warning("metrics queries failed", error=repr(error))
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        with self.engine.connect() as conn:
            by_status = queries.runs_by_status(conn)
            steps = queries.histogram(conn, queries.STEP_DURATIONS, queries.STEP_BUCKETS)
            gate_waits = queries.histogram(conn, queries.GATE_WAITS, queries.GATE_BUCKETS)
            queue_rows = queries.queue_rows(conn)
            open_gates = queries.open_gates(conn)
            sandbox = queries.sandbox_usage(conn)
            spend = queries.agent_spend(conn)
        runs = GaugeMetricFamily("kodo_runs", "Runs by app.runs status.", labels=["status"])
        for status in sorted(set(RUN_STATUSES) | set(by_status)):
            runs.add_metric([status], float(by_status.get(status, 0)))
        yield runs
        yield _histogram(
            "kodo_step_duration_seconds",
            "Product step attempts by duration (started to recorded), per step.",
            "step",
            steps,
            queries.STEP_BUCKETS,
        )
        depth = GaugeMetricFamily(
            "kodo_queue_workflows",
            "Workflows waiting (ENQUEUED, DELAYED) or running (PENDING), per queue, partition and status.",
            labels=["queue", "partition", "status"],
        )
        oldest = GaugeMetricFamily(
            "kodo_queue_oldest_age_seconds",
            "Age of the oldest such workflow, per queue, partition and status.",
            labels=["queue", "partition", "status"],
        )
        for row in queue_rows:
            depth.add_metric([row.queue, row.partition, row.status], float(row.workflows))
            oldest.add_metric([row.queue, row.partition, row.status], row.oldest_age_s)
        yield depth
        yield oldest
        gates = GaugeMetricFamily("kodo_gates_open", "Open human gates, per purpose.", labels=["purpose"])
        gate_age = GaugeMetricFamily(
            "kodo_gate_oldest_open_age_seconds", "How long the oldest open gate has waited.", labels=["purpose"]
        )
        for purpose, count, age in open_gates:
            gates.add_metric([purpose], float(count))
            gate_age.add_metric([purpose], age)
        yield gates
        yield gate_age
        yield _histogram(
            "kodo_gate_wait_seconds",
            "Resolved human gates by wait (opened to resolved), per purpose.",
            "purpose",
            gate_waits,
            queries.GATE_BUCKETS,
        )
        minutes = CounterMetricFamily(
            "kodo_sandbox_minutes", "Sandbox wall-clock minutes over every attempt.", labels=["provider"]
        )
        sbx_runs = CounterMetricFamily(
            "kodo_sandbox_runs", "Sandbox attempts by provider and errCode.", labels=["provider", "err_code"]
        )
        per_provider: dict[str, float] = {}
        for provider, err_code, count, used in sandbox:
            sbx_runs.add_metric([provider, err_code], float(count))
            per_provider[provider] = per_provider.get(provider, 0.0) + used
        for provider, used in sorted(per_provider.items()):
            minutes.add_metric([provider], used)
        yield minutes
        yield sbx_runs
        yield from _spend(spend)


def _spend(rows: list[tuple[str, str, int, int, int, float]]) -> Iterator[Metric]:
    """Agent tokens (by kind) and USD charged, per tenant and model, from the agent-call ledger."""
    tokens = CounterMetricFamily(
        "kodo_agent_tokens", "Agent-call tokens, per tenant, model and kind.", labels=["tenant", "model", "kind"]
    )
    cost = CounterMetricFamily("kodo_agent_cost_usd", "USD charged for agent calls.", labels=["tenant", "model"])
    for tenant, model, input_tokens, output_tokens, cached_tokens, usd in rows:
        for kind, count in (("input", input_tokens), ("output", output_tokens), ("cached", cached_tokens)):
            tokens.add_metric([tenant, model, kind], float(count))
        cost.add_metric([tenant, model], usd)
    yield tokens
    yield cost


@dataclass(frozen=True, slots=True)
class Metrics:
    """One app's registry and the series it observes itself."""

    registry: CollectorRegistry
    http: Histogram

    def render(self) -> bytes:
        return generate_latest(self.registry)


def build(engine: sa.Engine) -> Metrics:
    """A fresh registry: the SQL-backed series plus this app's HTTP latency histogram."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SqlCollector(engine))
    http = Histogram(
        "kodo_http_request_duration_seconds",
        "HTTP requests served by this process, by method, route template and status.",
        ["method", "route", "status"],
        buckets=HTTP_BUCKETS,
        registry=registry,
    )
    return Metrics(registry=registry, http=http)


@router.get(
    "/metrics", response_class=Response, responses=media(200, "text/plain", "Prometheus text exposition format")
)
@requires("viewer", scoping="cluster")
def metrics(request: Request) -> Response:
    """Prometheus exposition of this app's registry."""
    found: Metrics = request.app.state.metrics
    return Response(found.render(), media_type=CONTENT_TYPE_LATEST)
