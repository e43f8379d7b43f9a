"""G5 soak: one engine on SQLite for many requests; memory, latency and snapshots stay flat.

One process drives ``Engine.request`` at full speed on a SQLite store (every
request a durable commit), as a gateway's request path does, while the
engine's maintenance thread runs as in production (expiring holds, retiring
records past the horizon, taking and pruning snapshots from its replica,
freezing long-lived objects out of the cyclic GC: ``gc_freeze = true``). Engine time is a
virtual clock that moves ``STEP_US`` per request (100 requests/s of engine
time), so the retention horizon is reached after ``HORIZON_US / STEP_US``
requests instead of minutes of wall time; wall-clock latency is measured.

Per window of ``--window`` requests it prints the RSS, p50/p99/max latency,
throughput, the live state's request and hold counts and the newest
snapshot's size. Figures (after the first window, which includes warm-up and
filling the horizon):

* ``soak.rss_growth_mb_per_100k``: RSS growth from the end of the first window
  to the end of the last, per 100k requests (target <= 5);
* ``soak.max_over_p99``: the worst request over p99, across every window
  after the first, snapshots included (target <= 20);
* ``soak.snapshot_mb``: the newest snapshot's size at the end (flat: see the
  per-window column);
* ``soak.throughput_ratio``: the last window's requests/s over the second
  window's (target >= 0.9);
* ``soak.floor.max_over_p99``: the same ratio for ``--window`` bare one-event
  SQLite appends on the same disk (no engine): the disk's own stalls, the floor
  the engine's ratio is read against on a shared, noisy machine.

Usage: ``python bench/soak.py [--requests N] [--window N]``; ``make bench``
runs 4 windows of 25k; the 1M-request table in ``bench/README.md`` is
``--requests 1000000``.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import figure
from engine import CONFIG as ENGINE_CONFIG
from engine import one_request

from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.store.eventstore import open_store
from routeledger.adapters.store.snapshots import SNAPSHOT_STREAM
from routeledger.adapters.testing.clock import counter_ids

#: Engine time per request, in µs (100 requests/s of engine time).
STEP_US = 10_000
#: The horizon the soak runs under, in µs of engine time: 6,000 requests.
HORIZON_US = 60_000_000

#: The soak's engine settings in front of bench/engine.py's gateway (two members, one account).
CONFIG = (
    f"""
[engine]
hold_ttl_us = 30_000_000
retention_horizon_us = {HORIZON_US}
snapshot_every_events = 10_000
snapshots_kept = 3
maintenance_every_us = 100_000
gc_freeze = true

[limits]
deadline_us = 5_000_000
wait_total_us_max = 1_000_000

[timeouts]
total_us = 5_000_000
"""
    + ENGINE_CONFIG
)


class VirtualClock:
    """Engine time that moves only when the driver says (read by the maintenance thread too)."""

    def __init__(self) -> None:
        self.now = 1_767_225_600_000_000
        self._lock = threading.Lock()

    def now_us(self) -> int:
        return self.now

    def tick(self) -> None:
        with self._lock:
            self.now += STEP_US

    def sleep(self, seconds: float) -> None:  # pragma: no cover - no waits in this workload
        self.now += round(seconds * 1_000_000)


def rss_mb() -> float:
    """The process's current resident set size, in MB (from /proc)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def newest_snapshot_mb(url: str) -> float:
    with open_store(url) as store:
        latest = store.latest_snapshot(SNAPSHOT_STREAM)
    return len(latest.payload) / 1e6 if latest is not None else 0.0


def run(requests: int, window: int) -> None:
    directory = tempfile.mkdtemp(prefix="routeledger-soak-")
    url = f"sqlite:///{Path(directory) / 'soak.db'}"
    clock = VirtualClock()
    engine = Engine.open(
        url, parse_config(CONFIG), clock=clock, ids=counter_ids("s"), maintenance=True
    )
    rows = []
    print(
        "window  requests  rss_mb  p50_us  p99_us  max_us  req/s  live_requests  live_holds"
        "  snapshot_mb",
        flush=True,
    )
    gc.collect()
    for index in range(requests // window):
        samples = []
        began = time.perf_counter()
        for _ in range(window):
            t0 = time.perf_counter_ns()
            one_request(engine)
            samples.append(time.perf_counter_ns() - t0)
            clock.tick()
        elapsed = time.perf_counter() - began
        samples.sort()
        state = engine.state
        row = {
            "requests": (index + 1) * window,
            "rss": rss_mb(),
            "p50": samples[len(samples) // 2] / 1000,
            "p99": samples[int(len(samples) * 0.99)] / 1000,
            "max": samples[-1] / 1000,
            "rps": window / elapsed,
            "live_requests": len(state.routing.requests),
            "live_holds": len(state.budget.holds),
            "snapshot": newest_snapshot_mb(url),
        }
        rows.append(row)
        print(
            f"{index + 1:>6}  {row['requests']:>8}  {row['rss']:>6.1f}  {row['p50']:>6.0f}  "
            f"{row['p99']:>6.0f}  {row['max']:>6.0f}  {row['rps']:>5.0f}  "
            f"{row['live_requests']:>13}  {row['live_holds']:>10}  {row['snapshot']:>11.2f}",
            flush=True,
        )
    steps = engine._maintenance.steps if engine._maintenance is not None else 0
    engine.close()
    print(f"maintenance steps: {steps}; store: {url}", flush=True)
    report(rows, window)
    floor_max_over_p99(Path(directory) / "floor.db", window)


def floor_max_over_p99(path: Path, appends: int) -> None:
    """Worst over p99 of single-event durable appends: the store alone, no engine."""
    from routeledger.core.retention import RecordsRetired

    samples = []
    with open_store(f"sqlite:///{path}") as store:
        for n in range(appends):
            event = RecordsRetired(
                stream_id=f"floor:{n}",
                version=1,
                at_us=1_767_225_600_000_000,
                before_us=0,
                abandoned_before_us=0,
                horizon_us=0,
            )
            t0 = time.perf_counter_ns()
            store.append([event])
            samples.append(time.perf_counter_ns() - t0)
    samples.sort()
    p99 = samples[int(len(samples) * 0.99)]
    print(
        f"floor: {appends} appends p50 {samples[len(samples) // 2] / 1000:.0f} us "
        f"p99 {p99 / 1000:.0f} us max {samples[-1] / 1000:.0f} us",
        flush=True,
    )
    figure("soak.floor.max_over_p99", samples[-1] / p99, "x")


def report(rows: list[dict[str, float]], window: int) -> None:
    if len(rows) < 2:
        raise SystemExit("soak: need at least two windows (--requests >= 2 x --window)")
    later = rows[1:]
    growth = (rows[-1]["rss"] - rows[0]["rss"]) / ((len(rows) - 1) * window) * 100_000
    figure("soak.rss_growth_mb_per_100k", growth, "MB")
    worst = max(row["max"] for row in later)
    p99 = statistics.median(row["p99"] for row in later)
    figure("soak.max_over_p99", worst / p99, "x")
    figure("soak.snapshot_mb", rows[-1]["snapshot"], "MB")
    figure("soak.throughput_ratio", rows[-1]["rps"] / rows[1]["rps"], "x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=25_000)
    args = parser.parse_args()
    run(args.requests, args.window)


if __name__ == "__main__":
    main()
