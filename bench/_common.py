"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def figure(name: str, value: float, unit: str) -> None:
    """Print one figure in the form ``make bench`` collects."""
    print(f"BENCH {name} {value:.3f} {unit}", flush=True)


def per_call_us(fn: Callable[[], object], *, calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of the mean time per call, in microseconds."""
    samples = []
    for _ in range(repeats):
        began = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - began) / calls / 1_000)
    return statistics.median(samples)


def postgres_url() -> str | None:
    """The URL of the throwaway PostgreSQL that bench/run.py started, if any."""
    return os.environ.get("ROUTELEDGER_BENCH_POSTGRES_URL")
