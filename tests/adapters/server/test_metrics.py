"""The log's metric families through prometheus-client: counts equal the log's, labels escape."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from routeledger.adapters.server.metrics import log_families
from routeledger.adapters.store.eventstore import open_store
from routeledger.core.fold import fold_log
from routeledger.core.routing import events as rev
from routeledger.projections import Metrics, rebuild
from tests.projections.workload import build


class _Fixed(Collector):
    def __init__(self, metrics: Metrics, now_us: int) -> None:
        self.metrics, self.now_us = metrics, now_us

    def collect(self) -> list[Metric]:
        return list(log_families(self.metrics, self.now_us))


def _exposed(metrics: Metrics, now_us: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text, parsed back by prometheus-client's parser."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(metrics, now_us))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_exposed_counters_and_gauges_equal_counts_over_the_log() -> None:
    """D2 at the scrape: attempts, failures, events and holds exposed equal the raw log's."""
    with open_store("memory://") as store:
        build(store, requests=60, seed=11)
        log = list(store.read_all())
    metrics = rebuild(Metrics, log)
    samples = _exposed(metrics, max(r.event.at_us for r in log))
    attempts = Counter(
        (r.event.credential_id, r.event.upstream_model)
        for r in log
        if isinstance(r.event, rev.AttemptRouted)
    )
    for (credential, model), count in attempts.items():
        key = ("routeledger_attempts_total", (("credential", credential), ("model", model)))
        assert samples[key] == count
    failures = Counter(
        (r.event.credential_id, r.event.upstream_model, r.event.failure.value)
        for r in log
        if isinstance(r.event, rev.AttemptFailed)
    )
    for (credential, model, failure), count in failures.items():
        key = (("class", failure), ("credential", credential), ("model", model))
        assert samples[("routeledger_failures_total", key)] == count
    assert samples[("routeledger_events_total", ())] == len(log)
    assert samples[("routeledger_holds_open", ())] == len(fold_log(log).budget.open_holds)


def test_label_values_with_quotes_backslashes_and_newlines_round_trip() -> None:
    """A label value with ``"``, ``\\`` and a newline is escaped and parses back unchanged."""
    metrics = Metrics()
    metrics.attempts[('we"ird\\', "m\n1")] = 2
    samples = _exposed(metrics, 0)
    key = ("routeledger_attempts_total", (("credential", 'we"ird\\'), ("model", "m\n1")))
    assert samples[key] == 2
