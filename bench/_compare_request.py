"""bench/compare.py ``request`` and ``failover``: LiteLLM and RouteLedger over loopback HTTP."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
from _common import CHAT_BODY, ONE_ROUTE_CONFIG, fake_upstream
from _compare_common import show, show_ratio
from _floors import Floors
from serve import CLIENT_KEY, _gateway

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.http import Executor
from routeledger.adapters.testing.clock import counter_ids

#: One request, streamed (True) or not; returns once the whole answer is read.
Call = Callable[[bool], Awaitable[object]]
CONCURRENCY = (1, 16, 64)
#: In-flight limit of the gateway's client: the highest concurrency measured.
CONNECTIONS = 64
#: Sequential requests a subject makes before the next one takes its turn.
SEQUENTIAL_BLOCK = 2
MESSAGES = CHAT_BODY["messages"]


def _floor(client: httpx.AsyncClient, base: str) -> Call:
    """A bare httpx POST to the upstream, the whole body read."""
    payloads = {s: orjson.dumps({**CHAT_BODY, "model": "m", "stream": s}) for s in (False, True)}
    headers = {"Content-Type": "application/json"}

    async def call(stream: bool) -> object:
        url = base + "/chat/completions"
        async with client.stream("POST", url, content=payloads[stream], headers=headers) as r:
            r.raise_for_status()
            async for _ in r.aiter_bytes():
                pass
        return None

    return call


def _executor(executor: Executor) -> Call:
    async def call(stream: bool) -> object:
        ask: dict[str, Any] = {"route": "chat", "caller_scope": "u", "accounts": ("team",)}
        if not stream:
            return await executor.chat(CHAT_BODY, **ask)
        async for _ in executor.stream_chat(CHAT_BODY, **ask):
            pass
        return None

    return call


def _served(client: httpx.AsyncClient, root: str) -> Call:
    """``routeledger serve``'s ``/v1/chat/completions``, the whole body read."""
    payloads = {s: orjson.dumps({**CHAT_BODY, "model": "chat", "stream": s}) for s in (False, True)}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"}

    async def call(stream: bool) -> object:
        url = root + "/v1/chat/completions"
        async with client.stream("POST", url, content=payloads[stream], headers=headers) as r:
            r.raise_for_status()
            async for _ in r.aiter_bytes():
                pass
        return None

    return call


def _litellm_router(deployments: list[tuple[str, str]], **settings: Any) -> Any:
    """A LiteLLM Router of one model group ``chat``: (api_base, api_key) per deployment."""
    from litellm import Router

    models = [
        {
            "model_name": "chat",
            "litellm_params": {"model": "openai/m", "api_base": base, "api_key": key},
            "model_info": {"id": f"d{i}"},
        }
        for i, (base, key) in enumerate(deployments)
    ]
    return Router(model_list=models, **settings)


def _litellm(router: Any) -> Call:
    async def call(stream: bool) -> object:
        if not stream:
            return await router.acompletion(model="chat", messages=MESSAGES, max_tokens=64)
        answer = await router.acompletion(
            model="chat", messages=MESSAGES, max_tokens=64, stream=True
        )
        async for _ in answer:
            pass
        return None

    return call


async def _latencies(call: Call, stream: bool, count: int) -> list[float]:
    """Microseconds of each of ``count`` requests one after the other."""
    latencies = []
    for _ in range(count):
        began = time.perf_counter_ns()
        await call(stream)
        latencies.append((time.perf_counter_ns() - began) / 1_000)
    return latencies


async def _sequential(
    subjects: dict[str, Call], order: list[str], stream: bool, count: int
) -> dict[str, float]:
    """p50 microseconds of ``count`` sequential requests per subject, the subjects taking
    turns every ``SEQUENTIAL_BLOCK`` requests (a load change hits them all alike)."""
    latencies: dict[str, list[float]] = {name: [] for name in order}
    for _ in range(max(1, count // SEQUENTIAL_BLOCK)):
        for name in order:
            latencies[name] += await _latencies(subjects[name], stream, SEQUENTIAL_BLOCK)
    return {name: statistics.median(values) for name, values in latencies.items()}


async def _concurrent(call: Call, stream: bool, concurrency: int, total: int) -> float:
    """Microseconds per request (elapsed over ``total``) at ``concurrency`` in flight."""
    left = iter(range(total))

    async def worker() -> None:
        for _ in left:
            await call(stream)

    began = time.perf_counter_ns()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.perf_counter_ns() - began) / 1_000 / total


@contextlib.asynccontextmanager
async def _subjects(
    base: str, tmp: str, args: argparse.Namespace
) -> AsyncIterator[dict[str, Call]]:
    config = parse_config(ONE_ROUTE_CONFIG.format(base=base))
    engines = {
        "memory": Engine.open("memory://", config, clock=SystemClock(), ids=counter_ids()),
        "sqlite": Engine.open(
            f"sqlite:///{tmp}/compare.db", config, clock=SystemClock(), ids=counter_ids()
        ),
    }
    executors = {name: Executor(engine) for name, engine in engines.items()}
    gateway, root = _gateway(tmp, base, workers=1)
    # The floor's client has the executor's default limits (100 connections, 20 kept
    # alive), so both meet the upstream alike. One client each: httpx's limits are per
    # client, and one full of idle gateway connections made the floor reconnect.
    http = config.http
    client = httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=http.max_connections,
            max_keepalive_connections=http.max_keepalive_connections,
        ),
        timeout=60,
    )
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    gateway_client = httpx.AsyncClient(limits=limits, timeout=60)
    try:
        subjects = {"floor": _floor(client, base)}
        if not args.routeledger_only:
            subjects["litellm"] = _litellm(_litellm_router([(base, "sk-bench")]))
        subjects.update({name: _executor(executor) for name, executor in executors.items()})
        subjects["serve"] = _served(gateway_client, root)
        yield subjects
    finally:
        await client.aclose()
        await gateway_client.aclose()
        for executor in executors.values():
            await executor.aclose()
        for engine in engines.values():
            engine.close()
        gateway.send_signal(signal.SIGINT)
        gateway.wait(timeout=30)


def _sizes(args: argparse.Namespace) -> tuple[int, int, dict[int, int]]:
    """Rounds, sequential requests per round, total requests per concurrency."""
    if args.quick:
        return 1, 8, {16: 32, 64: 64}
    return 4, 50, {16: 160, 64: 320}


async def _measure(subjects: dict[str, Call], args: argparse.Namespace) -> dict[str, list[float]]:
    """Microseconds per request, per ``c<N>.<plain|stream>.<subject>``, one per round."""
    rounds, sequential, totals = _sizes(args)
    names = list(subjects)
    for call in subjects.values():  # connections, caches, the SQLite file, the gateway
        for stream in (False, True):
            await _latencies(call, stream, 4 if args.quick else 15)
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # no subject always first
        for stream in (False, True):
            kind = "stream" if stream else "plain"
            p50s = await _sequential(subjects, order, stream, sequential)
            for name, value in p50s.items():
                samples.setdefault(f"c1.{kind}.{name}", []).append(value)
            for concurrency in CONCURRENCY[1:]:
                for name in order:
                    total = totals[concurrency]
                    value = await _concurrent(subjects[name], stream, concurrency, total)
                    samples.setdefault(f"c{concurrency}.{kind}.{name}", []).append(value)
    return samples


def _report(samples: dict[str, list[float]]) -> None:
    """Per mode: the floor, each subject's time and added time, and LiteLLM's ratios."""
    for concurrency in CONCURRENCY:
        for kind in ("plain", "stream"):
            mode = f"c{concurrency}.{kind}"
            what = "p50_us" if concurrency == 1 else "us_per_request"
            floor = samples[f"{mode}.floor"]
            show(f"compare.request.{mode}.floor.{what}", floor, "us")
            added: dict[str, list[float]] = {}
            for key, values in samples.items():
                name = key.rsplit(".", 1)[1]
                if key.startswith(mode + ".") and name != "floor":
                    show(f"compare.request.{mode}.{name}.{what}", values, "us")
                    added[name] = [v - f for v, f in zip(values, floor, strict=True)]
                    show(f"compare.request.{mode}.{name}.added_us", added[name], "us")
            # Sequential: the time added over the floor. In flight: the time per request
            # (the inverse of throughput); the fake upstream, one process with a thread per
            # connection, serves fewer connections faster, so an added time can be < 0.
            ours = added if concurrency == 1 else samples
            for name in ("memory", "sqlite", "serve"):
                if "litellm" in added:
                    key = name if concurrency == 1 else f"{mode}.{name}"
                    theirs = added["litellm"] if concurrency == 1 else samples[f"{mode}.litellm"]
                    show_ratio(f"request.{mode}.{name}", theirs, ours[key])


def _stop(upstream: subprocess.Popen[bytes]) -> None:
    """Stop the fake provider: closing its stdin, then killing it if a client's idle
    keep-alive connection (LiteLLM's clients are never closed) holds it up."""
    assert upstream.stdin is not None
    upstream.stdin.close()
    try:
        upstream.wait(timeout=3)
    except subprocess.TimeoutExpired:
        upstream.kill()
        upstream.wait(timeout=10)


async def run(args: argparse.Namespace) -> None:
    upstream, base = fake_upstream()
    try:
        # RouteLedger on SQLite commits twice per request: its other floor.
        floors = Floors("sqlite_commit_us")
        with tempfile.TemporaryDirectory() as tmp:
            async with _subjects(base, tmp, args) as subjects:
                samples = await _measure(subjects, args)
        _report(samples)
        floors.finish()
    finally:
        _stop(upstream)


FAILOVER_CONFIG = """
[credentials.limited]
provider = "openai"
base_url = "{base}"
secret_env = "BENCH_KEY_LIMITED"
[credentials.ok]
provider = "openai"
base_url = "{base}"
secret_env = "BENCH_KEY_OK"
[models.m]
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 2_000_000
[routes.chat]
[[routes.chat.chain]]
strategy = "weighted"
members = [{{ credential = "limited", model = "m" }}, {{ credential = "ok", model = "m" }}]
[accounts.team]
scope = "team"
limit = 1_000_000_000_000
"""
#: Seconds of the 429's ``Retry-After``, and between two requests. Why: a round
#: (40 requests, ~2.5 s) outlasts the hint twice, so each router shows what it does
#: when the hint runs out (probe the limited deployment again, or keep away).
RETRY_AFTER_S = 1
GAP_S = 0.05
LIMITED_KEY, OK_KEY = "sk-bench-limited", "sk-bench-ok"


async def _failover_once(name: str, base: str, requests: int) -> tuple[float, float]:
    """Upstream calls and microseconds per served request, from a fresh router/engine."""
    root = base.removesuffix("/v1")
    async with httpx.AsyncClient() as control:
        (await control.post(root + "/_fake/reset")).raise_for_status()
        if name == "litellm":
            call = _litellm(_litellm_router([(base, LIMITED_KEY), (base, OK_KEY)], num_retries=2))
            closing: Executor | None = None
        else:
            config = parse_config(FAILOVER_CONFIG.format(base=base))
            engine = Engine.open("memory://", config, clock=SystemClock(), ids=counter_ids())
            closing = Executor(engine)
            call = _executor(closing)
        served, elapsed = 0, 0.0
        for _ in range(requests):
            began = time.perf_counter_ns()
            with contextlib.suppress(Exception):
                await call(False)
                served += 1
            elapsed += (time.perf_counter_ns() - began) / 1_000
            await asyncio.sleep(GAP_S)
        if closing is not None:
            await closing.aclose()
        attempts = (await control.get(root + "/_fake/attempts")).json()["attempts"]
    if not served:
        raise RuntimeError(f"failover: {name} served no request")
    return len(attempts) / served, elapsed / served


async def run_failover(args: argparse.Namespace) -> None:
    os.environ.update(BENCH_KEY_LIMITED=LIMITED_KEY, BENCH_KEY_OK=OK_KEY)
    scripts = {LIMITED_KEY: f"rate_limited:{RETRY_AFTER_S}", OK_KEY: "ok"}
    upstream, base = fake_upstream(scripts)
    names = ["routeledger"] + ([] if args.routeledger_only else ["litellm"])
    calls: dict[str, list[float]] = {name: [] for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        for r in range(2 if args.quick else 5):
            for name in names[r % 2 :] + names[: r % 2]:
                per_served, us = await _failover_once(name, base, 10 if args.quick else 40)
                calls[name].append(per_served)
                times[name].append(us)
    finally:
        _stop(upstream)
    for name in names:
        show(f"compare.failover.{name}.calls_per_served", calls[name], "calls")
        show(f"compare.failover.{name}.us_per_served", times[name], "us")
    if "litellm" in names:
        show_ratio("failover.calls", calls["litellm"], calls["routeledger"])
        show_ratio("failover.time", times["litellm"], times["routeledger"])
