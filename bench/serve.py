"""G3 figures: what ``routeledger serve`` adds to a bare HTTP call, over loopback.

The upstream is the fake provider in its own process and ``routeledger serve
--workers 2`` runs as a user runs it (its own processes, on SQLite); the client
is httpx in this process. In the same run, in interleaved rounds: a bare httpx
POST to the upstream's ``/chat/completions`` (the floor) and the same body
through the gateway's ``/v1/chat/completions``, non-streamed.

Figures: serve.floor.c1.p50_us; serve.sqlite.c1.p50_us and
serve.sqlite.c1.added_p50_us (p50 minus the floor's, target <= 2,000 us);
serve.floor.c64.rps, serve.sqlite.c64.rps and serve.sqlite.c64.rps_ratio
(64 in flight, target >= 0.6); serve.rss_mb_1k and serve.rss_mb (the gateway's
process tree after 1,000 and 10,000 requests: growth shows as their difference).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CHAT_BODY, ONE_ROUTE_CONFIG, fake_upstream, figure

ROUNDS = 5
SEQUENTIAL = 100
CONCURRENT = 64
CONCURRENT_TOTAL = 640
RSS_REQUESTS = (1_000, 10_000)
CLIENT_KEY = "sk-bench-client"
BODY = CHAT_BODY

CONFIG = (
    ONE_ROUTE_CONFIG
    + """
[clients.bench]
key_env = "BENCH_CLIENT_KEY"
caller_scope = "team:bench"
accounts = ["team"]
[server]
body_bytes_max = 65_536
"""
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _gateway(tmp: str, base: str, workers: int = 2) -> tuple[subprocess.Popen[bytes], str]:
    """``routeledger serve --workers N`` on SQLite; its root URL once ready."""
    config = Path(tmp) / "gateway.toml"
    config.write_text(CONFIG.format(base=base))
    port = _free_port()
    command = [str(Path(sys.executable).parent / "routeledger"), "serve", "--config", str(config)]
    command += ["--store", f"sqlite:///{tmp}/serve.db", "--port", str(port)]
    command += ["--workers", str(workers), "--log-level", "warning"]
    env = {**os.environ, "BENCH_CLIENT_KEY": CLIENT_KEY}
    process = subprocess.Popen(command, env=env)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(root + "/readyz", timeout=1).status_code == 200:
                return process, root
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("routeledger serve did not become ready in 60 s")


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, from /proc, in MB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
        )
        todo.extend(int(child) for child in children)
    return total / 1024


async def _sequential(client: httpx.AsyncClient, url: str, body: bytes, count: int) -> float:
    """Median latency of ``count`` requests one after the other, in seconds."""
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        response = await client.post(url, content=body)
        response.raise_for_status()
        latencies.append(time.perf_counter() - began)
    return statistics.median(latencies)


async def _throughput(client: httpx.AsyncClient, url: str, body: bytes, total: int) -> float:
    left = iter(range(total))

    async def worker() -> None:
        for _ in left:
            (await client.post(url, content=body)).raise_for_status()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENT)))
    return total / (time.perf_counter() - began)


async def _measure(base: str, root: str, gateway_pid: int) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"}
    targets = {
        "floor": (base + "/chat/completions", orjson.dumps({**BODY, "model": "m"})),
        "sqlite": (root + "/v1/chat/completions", orjson.dumps({**BODY, "model": "chat"})),
    }
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30) as client:
        for url, body in targets.values():  # warm up connections, workers, the SQLite file
            await _sequential(client, url, body, 30)
        p50: dict[str, list[float]] = {name: [] for name in targets}
        rps: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(ROUNDS):
            for name, (url, body) in targets.items():
                p50[name].append(await _sequential(client, url, body, SEQUENTIAL))
            for name, (url, body) in targets.items():
                rps[name].append(await _throughput(client, url, body, CONCURRENT_TOTAL))
        floor, served = (statistics.median(p50[n]) * 1e6 for n in ("floor", "sqlite"))
        figure("serve.floor.c1.p50_us", floor, "us")
        figure("floor.httpx_call_us", floor, "us")
        figure("serve.sqlite.c1.p50_us", served, "us")
        figure("serve.sqlite.c1.added_p50_us", served - floor, "us")
        figure("serve.sqlite.c1.p50_us_ratio", served / floor, "x")
        figure("serve.sqlite.c1.added_p50_us_ratio", (served - floor) / floor, "x")
        floor_rps, served_rps = (statistics.median(rps[n]) for n in ("floor", "sqlite"))
        figure("serve.floor.c64.rps", floor_rps, "req/s")
        figure("serve.sqlite.c64.rps", served_rps, "req/s")
        figure("serve.sqlite.c64.rps_ratio", served_rps / floor_rps, "ratio")
        url, body = targets["sqlite"]
        done = ROUNDS * (SEQUENTIAL + CONCURRENT_TOTAL) + 30
        for mark, name in zip(RSS_REQUESTS, ("serve.rss_mb_1k", "serve.rss_mb"), strict=True):
            if mark > done:
                await _throughput(client, url, body, mark - done)
                done = mark
            figure(name, _tree_rss_mb(gateway_pid), "MB")


def main() -> None:
    upstream, base = fake_upstream()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            gateway, root = _gateway(tmp, base)
            try:
                asyncio.run(_measure(base, root, gateway.pid))
            finally:
                gateway.send_signal(signal.SIGINT)
                gateway.wait(timeout=30)
    finally:
        assert upstream.stdin is not None
        upstream.stdin.close()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
