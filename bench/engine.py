"""F6 figures: engine overhead per request, durable requests/s on SQLite, import time, memory.

Figures: engine.request.p50_us, engine.request.p99_us (open, hold, route, record,
settle with the in-memory store and an in-process fake call), engine.sqlite.c1.rps,
engine.sqlite.c16.rps, engine.sqlite.c64.rps (durable requests/s with 1/16/64
requests in flight), engine.import.s, engine.rss_1000_pairs.mb.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import figure
from _floors import Floors

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.testing.clock import counter_ids

CONFIG = """
[credentials.a]
provider = "openai"
[credentials.b]
provider = "openai"
[models.m]
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 2_000_000
[routes.chat]
[[routes.chat.chain]]
strategy = "round_robin"
members = [{ credential = "a", model = "m" }, { credential = "b", model = "m" }]
[accounts.team]
scope = "team"
limit = 1_000_000_000_000
"""


def one_request(engine: Engine) -> None:
    with engine.request(
        route="chat", caller_scope="u", accounts=("team",), input_tokens=100
    ) as req:
        for attempt in req.sync_attempts():
            attempt.succeeded(input_tokens=100, output_tokens=50)  # the in-process "call"


def bench_overhead(floors: Floors) -> None:
    engine = Engine.open("memory://", parse_config(CONFIG), clock=SystemClock(), ids=counter_ids())
    for _ in range(200):
        one_request(engine)
    samples = []
    for _ in range(3_000):
        began = time.perf_counter_ns()
        one_request(engine)
        samples.append((time.perf_counter_ns() - began) / 1_000)
    samples.sort()
    p50, p99 = statistics.median(samples), samples[int(len(samples) * 0.99)]
    figure("engine.request.p50_us", p50, "us")
    figure("engine.request.p99_us", p99, "us")
    floors.ratio("engine.request.p50_us", p50, "attrs_event_us")
    floors.ratio("engine.request.p99_us", p99, "attrs_event_us")


def bench_sqlite(concurrency: int, total: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine.open(
            f"sqlite:///{tmp}/engine.db",
            parse_config(CONFIG),
            clock=SystemClock(),
            ids=counter_ids(),
        )

        async def worker(count: int) -> None:
            for _ in range(count):
                async with engine.request(
                    route="chat", caller_scope="u", accounts=("team",), input_tokens=100
                ) as req:
                    async for attempt in req.attempts():
                        await asyncio.sleep(0)  # the provider call yields to other requests
                        attempt.succeeded(input_tokens=100, output_tokens=50)

        async def main() -> None:
            await asyncio.gather(*(worker(total // concurrency) for _ in range(concurrency)))

        began = time.perf_counter()
        asyncio.run(main())
        rate = (total // concurrency * concurrency) / (time.perf_counter() - began)
        engine.close()
        return rate


def bench_import(floors: Floors) -> None:
    samples = []
    for _ in range(3):
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import routeledger.adapters.engine.engine"], check=True
        )
        samples.append(time.perf_counter() - began)
    figure("engine.import.s", min(samples), "s")
    floors.ratio("engine.import.s", min(samples), "python_start_s")


def bench_memory(floors: Floors) -> None:
    members = ", ".join(f'{{ credential = "c{i}", model = "m{i % 10}" }}' for i in range(1000))
    creds = "\n".join(f'[credentials.c{i}]\nprovider = "openai"' for i in range(1000))
    models = "\n".join(f"[models.m{i}]" for i in range(10))
    text = f"{creds}\n{models}\n[routes.chat]\n[[routes.chat.chain]]\nmembers = [{members}]\n"
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork and
    # exec, so a child started by this (large) process would report our peak.
    script = (
        "import sys\n"
        "from routeledger.adapters.engine.config import parse_config\n"
        "from routeledger.adapters.engine.engine import Engine\n"
        "engine = Engine.open('memory://', parse_config(sys.stdin.read()))\n"
        "status = open('/proc/self/status').read().splitlines()\n"
        "print(next(line.split()[1] for line in status if line.startswith('VmHWM:')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], input=text, capture_output=True, text=True, check=True
    )
    rss = int(out.stdout.strip()) / 1024
    figure("engine.rss_1000_pairs.mb", rss, "MB")
    floors.ratio("engine.rss_1000_pairs.mb", rss, "python_rss_mb")


def main() -> None:
    """Ratios: the in-memory request in frozen-event constructions; a durable request's
    time (1 / rps) over one bare SQLite commit; import and RSS over a bare interpreter's."""
    floors = Floors("attrs_event_us", "sqlite_commit_us", "python_start_s", "python_rss_mb")
    bench_overhead(floors)
    for concurrency, total in ((1, 400), (16, 800), (64, 1280)):
        rps = bench_sqlite(concurrency, total)
        figure(f"engine.sqlite.c{concurrency}.rps", rps, "requests/s")
        floors.rate_ratio(f"engine.sqlite.c{concurrency}.rps", rps, "sqlite_commit_us")
    bench_import(floors)
    bench_memory(floors)
    floors.finish()


if __name__ == "__main__":
    main()
