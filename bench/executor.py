"""G2 figures: what the executor adds to a bare streamed httpx call, over loopback.

The upstream is the fake provider in its own process (so this process's CPU
is the client's alone), answering at once with a 9-word streamed answer. In the
same run, in interleaved rounds: a bare httpx streamed call (the floor), the
executor (``stream_chat``, read to the end) on ``memory://`` and on SQLite.

Figures: executor.floor.c1.p50_us; executor.memory.c1.added_p50_us and
executor.sqlite.c1.added_p50_us (p50 minus the floor's); executor.memory.cpu_us_added
and executor.sqlite.cpu_us_added (process CPU per request minus the floor's);
executor.sqlite.c64.rps_ratio (requests/s at 64 in flight over the floor's);
executor.ttft.added_us (time to the first content delta minus the floor's).
SQLite runs at its default ``synchronous=normal``; executor.sqlite_full.c1.added_p50_us
and executor.sqlite_full.cpu_us_added show the same with ``synchronous=full`` (every
commit synced to disk, README.md "Stores").
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CHAT_BODY, ONE_ROUTE_CONFIG, fake_upstream, figure

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.http import Executor
from routeledger.adapters.testing.clock import counter_ids

ROUNDS = 5
SEQUENTIAL = 150
CONCURRENT = 64
CONCURRENT_TOTAL = 640
BODY = CHAT_BODY

CONFIG = ONE_ROUTE_CONFIG

Call = Callable[[], Awaitable[float]]  # one request; seconds to its first content delta


def _floor(client: httpx.AsyncClient, base: str) -> Call:
    payload = orjson.dumps({**BODY, "model": "m", "stream": True})

    async def call() -> float:
        began = time.perf_counter()
        first = 0.0
        async with client.stream(
            "POST",
            base + "/chat/completions",
            content=payload,
            headers={"Content-Type": "application/json"},
        ) as response:
            async for chunk in response.aiter_bytes():
                if not first and b'"content":"' in chunk.replace(b'"content":""', b""):
                    first = time.perf_counter() - began
        return first

    return call


def _executor(executor: Executor) -> Call:
    async def call() -> float:
        began = time.perf_counter()
        first = 0.0
        async for event in executor.stream_chat(
            BODY, route="chat", caller_scope="u", accounts=("team",)
        ):
            if not first and event.text:
                first = time.perf_counter() - began
        return first

    return call


async def _sequential(call: Call, count: int) -> tuple[list[float], list[float], float]:
    """Latencies (s), times to first delta (s) and process CPU per request (s)."""
    latencies, firsts = [], []
    cpu = time.process_time()
    for _ in range(count):
        began = time.perf_counter()
        firsts.append(await call())
        latencies.append(time.perf_counter() - began)
    return latencies, firsts, (time.process_time() - cpu) / count


async def _throughput(call: Call, concurrency: int, total: int) -> float:
    left = iter(range(total))

    async def worker() -> None:
        for _ in left:
            await call()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - began)


async def _main(base: str, tmp: str) -> None:
    config = parse_config(CONFIG.format(base=base))
    engines = {
        "memory": Engine.open("memory://", config, clock=SystemClock(), ids=counter_ids()),
        "sqlite": Engine.open(
            f"sqlite:///{tmp}/executor.db", config, clock=SystemClock(), ids=counter_ids()
        ),
        "sqlite_full": Engine.open(
            f"sqlite:///{tmp}/full.db?synchronous=full",
            config,
            clock=SystemClock(),
            ids=counter_ids(),
        ),
    }
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    async with httpx.AsyncClient(limits=limits) as client:
        calls = {"floor": _floor(client, base)}
        executors = {name: Executor(engine) for name, engine in engines.items()}
        calls.update({name: _executor(executor) for name, executor in executors.items()})
        for call in calls.values():  # warm up connections, caches and the SQLite file
            await _sequential(call, 20)
        p50: dict[str, list[float]] = {name: [] for name in calls}
        ttft: dict[str, list[float]] = {name: [] for name in calls}
        cpu: dict[str, list[float]] = {name: [] for name in calls}
        rps: dict[str, list[float]] = {"floor": [], "sqlite": []}
        for _ in range(ROUNDS):
            for name, call in calls.items():
                latencies, firsts, per_request = await _sequential(call, SEQUENTIAL)
                p50[name].append(statistics.median(latencies))
                ttft[name].append(statistics.median(firsts))
                cpu[name].append(per_request)
            for name in rps:
                rps[name].append(await _throughput(calls[name], CONCURRENT, CONCURRENT_TOTAL))
        for executor in executors.values():
            await executor.aclose()

    def med(values: list[float]) -> float:
        return statistics.median(values) * 1e6

    floor, floor_cpu, floor_ttft = med(p50["floor"]), med(cpu["floor"]), med(ttft["floor"])
    figure("executor.floor.c1.p50_us", floor, "us")
    figure("floor.httpx_stream_us", floor, "us")
    ratios = []
    for name in ("memory", "sqlite", "sqlite_full"):
        added, added_cpu = med(p50[name]) - floor, med(cpu[name]) - floor_cpu
        figure(f"executor.{name}.c1.added_p50_us", added, "us")
        figure(f"executor.{name}.cpu_us_added", added_cpu, "us")
        ratios += [(f"executor.{name}.c1.added_p50_us", added / floor)]
        ratios += [(f"executor.{name}.cpu_us_added", added_cpu / floor_cpu)]
    ratio = statistics.median(rps["sqlite"]) / statistics.median(rps["floor"])
    figure("executor.sqlite.c64.rps_ratio", ratio, "ratio")
    added_ttft = med(ttft["memory"]) - floor_ttft
    figure("executor.ttft.added_us", added_ttft, "us")
    ratios.append(("executor.ttft.added_us", added_ttft / floor_ttft))
    for name, value in ratios:  # the added cost over the floor's own (p50, CPU, TTFT)
        figure(f"{name}_ratio", value, "x")


def main() -> None:
    child, base = fake_upstream()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(_main(base, tmp))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
