"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import itertools
import os
import statistics
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

_COUNTER = itertools.count(1)


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
    """A fresh database on the throwaway PostgreSQL that bench/run.py started, if any.

    Each call creates a new database, so benchmarks never read each other's logs.
    """
    admin = os.environ.get("ROUTELEDGER_BENCH_POSTGRES_URL")
    if admin is None:
        return None
    import psycopg

    name = f"bench_{os.getpid()}_{next(_COUNTER)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
