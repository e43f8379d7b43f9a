"""``GET /metrics``: Prometheus text through prometheus-client.

Two kinds of series:

* **From the log** (the same on every worker and host, since each folds the
  whole log): a :class:`~routeledger.projections.metrics.Metrics` projection
  catches up with the store at each scrape and is exposed by a collector —
  requests received, attempts per credential and model, failures per credential, model and class,
  exhaustions per reason, scopes per availability status, holds open, and per
  account the amount reserved and spent.
* **From this process**: requests served by this server per route, result and
  status; request duration and time to first token per route; the engine's
  decision and group-commit latency and group sizes.

Every label value comes from the configuration or a closed set (routes,
credentials, models, accounts, failure classes, results, statuses), so the
series are bounded; a client's unknown model is counted under route ``-``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from routeledger.adapters.engine.engine import Engine
from routeledger.projections.metrics import Metrics

__all__ = ["UNKNOWN_ROUTE_LABEL", "ServerMetrics", "log_families"]

#: The route label of a request whose model names no route the client may use.
UNKNOWN_ROUTE_LABEL: Final = "-"
#: Buckets of request duration and time to first token, in seconds. Why: from a
#: cached answer (5 ms) to a long generation (5 min).
LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: Buckets of the engine's decision and commit latency, in seconds. Why: a pure
#: decision takes ~10-100 µs; a durable commit 0.2-5 ms; more is trouble.
ENGINE_BUCKETS_S: Final = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25)
#: Buckets of commands per group commit.
GROUP_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _LogCollector(Collector):
    """Series folded from the log: a :class:`Metrics` projection caught up at each scrape."""

    def __init__(self, engine: Engine, now_us: Callable[[], int]) -> None:
        self._engine = engine
        self._now_us = now_us
        self._metrics = Metrics()
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from log_families(self._caught_up(), self._now_us())

    def document(self, board: str, now_us: int) -> dict[str, Any]:
        """The availability (``status``) or ``budget`` board's JSON document, caught up."""
        with self._lock:
            metrics = self._caught_up()
            folded = metrics.availability if board == "status" else metrics.budget
            return folded.document(now_us)

    def _caught_up(self) -> Metrics:
        """The projection after reading what was appended since the last call (any process)."""
        metrics = self._metrics
        metrics.catch_up(self._engine.store.read_all(metrics.position, page=10_000))
        return metrics


def log_families(metrics: Metrics, now_us: int) -> Iterator[Metric]:
    """The metric families of the log's series, from ``metrics`` at ``now_us``."""
    yield from _log_counters(metrics)
    yield from _log_gauges(metrics, now_us)


def _log_counters(metrics: Metrics) -> Iterator[Metric]:
    yield _counter("routeledger_events", "Events in the log.", [], [((), metrics.events)])
    yield _counter(
        "routeledger_requests_received",
        "Requests received (every process of the log).",
        [],
        [((), metrics.requests)],
    )
    yield _counter(
        "routeledger_attempts",
        "Attempts routed, per credential and upstream model.",
        ["credential", "model"],
        [((c, m), n) for (c, m), n in metrics.attempts.items()],
    )
    yield _counter(
        "routeledger_failures",
        "Failed attempts, per credential, upstream model and failure class.",
        ["credential", "model", "class"],
        list(metrics.failures.items()),
    )
    yield _counter(
        "routeledger_exhausted",
        "Requests that ended with fallback exhausted, per reason.",
        ["reason"],
        [((k,), n) for k, n in metrics.exhausted.items()],
    )


def _log_gauges(metrics: Metrics, now_us: int) -> Iterator[Metric]:
    statuses: dict[str, int] = {}
    for row in metrics.availability.rows(now_us):
        statuses[row.status.value] = statuses.get(row.status.value, 0) + 1
    yield _gauge(
        "routeledger_scopes",
        "Pairs and credential-wide scopes seen in the log, per availability status now.",
        ["status"],
        [((k,), n) for k, n in statuses.items()],
    )
    yield _gauge(
        "routeledger_cooldowns_active",
        "Scopes cooling down or suspended now.",
        [],
        [((), metrics.availability.blocked_at(now_us))],
    )
    yield _gauge(
        "routeledger_holds_open",
        "Budget holds placed and not yet settled, refunded or expired.",
        [],
        [((), len(metrics.budget.holds))],
    )
    accounts = list(metrics.budget.accounts.values())
    for name, text, attr in (
        ("routeledger_budget_reserved", "Amount reserved by open holds.", "reserved"),
        ("routeledger_budget_spent", "Spend in the current period.", "spent"),
        (
            "routeledger_budget_spent_lifetime",
            "Spend since the account opened.",
            "lifetime_spent",
        ),
        ("routeledger_budget_limit", "The account's limit per period.", "limit"),
    ):
        yield _gauge(
            name,
            text,
            ["account", "unit"],
            [((a.account_id, a.unit.value), getattr(a, attr)) for a in accounts],
        )


def _counter(
    name: str, text: str, labels: list[str], series: list[tuple[tuple[str, ...], int]]
) -> Metric:
    family = CounterMetricFamily(name, text, labels=labels)
    for values, value in sorted(series):
        family.add_metric(list(values), value)
    return family


def _gauge(
    name: str, text: str, labels: list[str], series: list[tuple[tuple[str, ...], int]]
) -> Metric:
    family = GaugeMetricFamily(name, text, labels=labels)
    for values, value in sorted(series):
        family.add_metric(list(values), value)
    return family


class ServerMetrics:
    """The server's registry: the log's series and this process's own."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self.requests = Counter(
            "routeledger_server_requests",
            "Requests this server answered, per route, result and HTTP status.",
            ["route", "result", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "routeledger_request_duration_seconds",
            "Time from a request's arrival to its last byte, per route.",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.first_token = Histogram(
            "routeledger_time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first chunk, per route.",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.decision = Histogram(
            "routeledger_decision_seconds",
            "Time the engine took to decide (pure, under the runtime's lock).",
            buckets=ENGINE_BUCKETS_S,
            registry=registry,
        )
        self.commit = Histogram(
            "routeledger_commit_seconds",
            "Time one group commit took: decide, append durably, fold.",
            buckets=ENGINE_BUCKETS_S,
            registry=registry,
        )
        self.group = Histogram(
            "routeledger_group_commit_commands",
            "Commands (request entries and exits) recorded by one group commit.",
            buckets=GROUP_BUCKETS,
            registry=registry,
        )
        self.log = _LogCollector(engine, engine.clock.now_us)
        registry.register(self.log)
        engine.runtime.on_decided = self.decision.observe
        engine.committer.on_commit = self._committed

    def _committed(self, commands: int, seconds: float) -> None:
        self.group.observe(commands)
        self.commit.observe(seconds)
