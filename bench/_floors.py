"""Floors: the least a figure's unit of work can cost, measured in the same process run.

A figure alone swings 2-10x with the machine's load; the same figure divided by a
floor measured in the same process, a moment before and after, does not. Each
benchmark script makes a :class:`Floors` for the floors its figures stand on,
registers each figure's cost per unit (``ratio``), and calls ``finish`` last: the
floors are sampled again, their pooled medians printed as ``floor.<kind>``, and
every registered figure as ``<name>_ratio`` (its cost over the floor).

The floors:

* ``sqlite_commit_us`` - one WAL transaction inserting one row, on a connection made
  as the store makes it (autocommit mode, ``journal_mode=WAL``, the store's default
  ``synchronous`` level: NORMAL, README.md "Stores");
* ``postgres_commit_us`` - one committed one-row INSERT on the bench's PostgreSQL;
* ``attrs_event_us`` - constructing one frozen attrs event (``CooldownStarted``, 12
  fields), the unit every CPU-bound figure (decisions, folds, codec) is built from;
* ``python_start_s`` / ``python_rss_mb`` - a bare interpreter's start-up time and
  peak RSS (``python -c pass``), the floor of import time and resident memory.
"""

from __future__ import annotations

import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from routeledger.adapters.store.sqlite_log import SQLITE_SYNCHRONOUS_DEFAULT
from routeledger.core.routing.events import Clamp, CooldownStarted
from routeledger.core.routing.failures import FailureClass

#: Commits per sample of a commit floor. Why: ~100 durable commits (~20-50 ms on
#: SQLite, ~0.1-0.3 s on PostgreSQL) give a stable median without lengthening a run.
COMMITS_PER_SAMPLE = 100
#: Events per batch of the attrs floor, and batches per sample: ~25 ms in all.
EVENTS_PER_BATCH = 2_000
EVENT_BATCHES = 5
#: Fresh interpreters per sample of the start-up floors (~20 ms each).
STARTS_PER_SAMPLE = 3
_NOW_US = 1_800_000_000_000_000

#: Each floor's unit, as printed.
UNITS = {
    "sqlite_commit_us": "us",
    "postgres_commit_us": "us",
    "attrs_event_us": "us",
    "python_start_s": "s",
    "python_rss_mb": "MB",
}


def sqlite_commit_samples(directory: str) -> list[float]:
    """Microseconds of each of ``COMMITS_PER_SAMPLE`` one-row WAL commits."""
    path = Path(directory) / "floor.db"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS_DEFAULT}")
        conn.execute("CREATE TABLE IF NOT EXISTS floor (id INTEGER PRIMARY KEY, body BLOB)")
        body = b"x" * 200  # about one encoded event
        fresh = conn.execute("SELECT count(*) FROM floor").fetchone()[0] == 0
        samples = []
        # A fresh file's first commits grow the WAL (~20% slower): warmed up, as the store is.
        for _ in range(COMMITS_PER_SAMPLE * (2 if fresh else 1)):
            began = time.perf_counter_ns()
            conn.execute("BEGIN")
            conn.execute("INSERT INTO floor (body) VALUES (?)", (body,))
            conn.execute("COMMIT")
            samples.append((time.perf_counter_ns() - began) / 1_000)
        return samples[-COMMITS_PER_SAMPLE:]
    finally:
        conn.close()


def sqlite_synchronous(directory: str) -> int:
    """The ``synchronous`` level a connection made as the store makes it runs at."""
    conn = sqlite3.connect(Path(directory) / "floor.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS_DEFAULT}")
        level: int = conn.execute("PRAGMA synchronous").fetchone()[0]
        return level
    finally:
        conn.close()


def postgres_commit_samples(url: str) -> list[float]:
    """Microseconds of each of ``COMMITS_PER_SAMPLE`` committed one-row INSERTs."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS floor (id BIGSERIAL PRIMARY KEY, body BYTEA)")
        conn.commit()
        body = b"x" * 200
        fresh = conn.execute("SELECT count(*) FROM floor").fetchone() == (0,)
        samples = []
        for _ in range(COMMITS_PER_SAMPLE * (2 if fresh else 1)):
            began = time.perf_counter_ns()
            conn.execute("INSERT INTO floor (body) VALUES (%s)", (body,))
            conn.commit()
            samples.append((time.perf_counter_ns() - began) / 1_000)
        return samples[-COMMITS_PER_SAMPLE:]


def attrs_event_samples() -> list[float]:
    """Microseconds per frozen event, for each of ``EVENT_BATCHES`` batches."""
    samples = []
    for _ in range(EVENT_BATCHES):
        began = time.perf_counter_ns()
        for i in range(EVENTS_PER_BATCH):
            CooldownStarted(
                stream_id="pair:c1:m",
                version=i,
                at_us=_NOW_US,
                credential_id="c1",
                upstream_model="m",
                request_id="r",
                attempt_id="a",
                until_us=_NOW_US + 1_000,
                reason=FailureClass.RATE_LIMITED,
                level=0,
                hint_us=None,
                clamp=Clamp.NO_HINT,
            )
        samples.append((time.perf_counter_ns() - began) / 1_000 / EVENTS_PER_BATCH)
    return samples


def _bare_python() -> tuple[float, float]:
    """Seconds to start and stop a bare interpreter, and its peak RSS in MB."""
    script = (
        "status = open('/proc/self/status').read().splitlines()\n"
        "print(next(line.split()[1] for line in status if line.startswith('VmHWM:')))\n"
    )
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    return time.perf_counter() - began, int(out.stdout.strip()) / 1024


def python_start_samples() -> list[float]:
    return [_bare_python()[0] for _ in range(STARTS_PER_SAMPLE)]


def python_rss_samples() -> list[float]:
    return [_bare_python()[1]]


class Floors:
    """The floors one benchmark script stands on, and its figures' ratios to them."""

    def __init__(self, *kinds: str, postgres: str | None = None):
        self._tmp = tempfile.TemporaryDirectory(prefix="routeledger-floor-")
        directory = self._tmp.name
        measures: dict[str, Callable[[], list[float]]] = {
            "attrs_event_us": attrs_event_samples,
            "python_start_s": python_start_samples,
            "python_rss_mb": python_rss_samples,
        }
        measures["sqlite_commit_us"] = lambda: sqlite_commit_samples(directory)
        if postgres is not None:
            measures["postgres_commit_us"] = lambda: postgres_commit_samples(postgres)
        unknown = set(kinds) - set(measures)
        if unknown:
            raise ValueError(f"unknown floors {sorted(unknown)} (postgres_commit_us needs a URL)")
        self._measures = {kind: measures[kind] for kind in kinds}
        self._samples: dict[str, list[float]] = {kind: [] for kind in kinds}
        self._ratios: list[tuple[str, float, str]] = []
        self._directory = directory
        self.sample()

    def sample(self) -> None:
        """Measure every floor once more (a script calls it first and last: ``finish``)."""
        for kind, measure in self._measures.items():
            self._samples[kind].extend(measure())

    def value(self, kind: str) -> float:
        """The floor so far: the median of its pooled samples."""
        return statistics.median(self._samples[kind])

    def ratio(self, name: str, cost: float, kind: str) -> None:
        """Print ``<name>_ratio`` = ``cost`` (in the floor's unit) over the floor, at ``finish``."""
        self._ratios.append((name, cost, kind))

    def rate_ratio(self, name: str, rate: float, kind: str, *, per: float = 1.0) -> None:
        """``ratio`` for a rate figure: the cost of ``per`` items at ``rate`` items/s."""
        seconds = per / rate
        self.ratio(name, seconds if UNITS[kind] == "s" else seconds * 1e6, kind)

    def finish(self) -> dict[str, float]:
        """Sample again, print every floor and every registered ratio; the floors."""
        self.sample()
        values = {kind: self.value(kind) for kind in self._samples}
        for kind, value in values.items():
            print(f"BENCH floor.{kind} {value:.3f} {UNITS[kind]}", flush=True)
        if "sqlite_commit_us" in values:
            level = sqlite_synchronous(self._directory)
            print(
                f"# floor.sqlite_commit_us: synchronous={level} (1 = NORMAL, 2 = FULL)", flush=True
            )
        for name, cost, kind in self._ratios:
            print(f"BENCH {name}_ratio {cost / values[kind]:.3f} x", flush=True)
        self._tmp.cleanup()
        return values
