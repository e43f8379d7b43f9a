"""bench/compare.py ``decide``: one routing decision, LiteLLM against RouteLedger."""

from __future__ import annotations

import argparse
import random
import time
import warnings
from collections.abc import Callable

from _compare_common import show, show_ratio
from route_decide import NOW_US, REQUESTS, _pool_policy, _state

from routeledger.core.routing import RouteNext, Strategy, decide_next

SIZES = (4, 32, 256, 1024)
#: Seconds of calls per timed batch. Why: long enough to average out the timer and
#: short enough that a round of 8 pools x 3 subjects stays under ~2 s.
BATCH_S = 0.04
MESSAGES = [{"role": "user", "content": "Say something."}]
Call = Callable[[], object]


def _routeledger(size: int, cooled: bool) -> Call:
    """A weighted pick (RouteLedger's shuffle) for one of 64 started requests, in turn."""
    policy = _pool_policy(size, Strategy.WEIGHTED)
    state = _state(policy, size, random.Random(size), cooled=cooled)
    commands = [RouteNext(request_id=f"r{r}", attempt_id="a1") for r in range(REQUESTS)]
    turn = iter(range(1 << 62))

    def call() -> object:
        return decide_next(policy, state, commands[next(turn) % REQUESTS], now_us=NOW_US)

    return call


def _litellm(size: int, cooled: bool, strategy: str) -> Call:
    """``Router.get_available_deployment`` on ``size`` deployments of one model group."""
    from litellm import Router

    models = [
        {
            "model_name": "chat",
            "litellm_params": {
                "model": "openai/gpt-x",
                "api_key": f"sk-{i}",
                "api_base": "http://127.0.0.1:9/v1",
            },
            "model_info": {"id": f"c{i}"},
        }
        for i in range(size)
    ]
    router = Router(model_list=models, routing_strategy=strategy)
    if cooled:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cache = router.cooldown_cache
        for i in random.Random(size).sample(range(size), size // 2):
            cache.add_deployment_to_cooldown(f"c{i}", Exception("429"), 429, 3_600.0)

    def call() -> object:
        return router.get_available_deployment(model="chat", messages=MESSAGES)

    return call


def _batch(call: Call, count: int) -> float:
    """Mean microseconds per call over ``count`` calls."""
    began = time.perf_counter_ns()
    for _ in range(count):
        call()
    return (time.perf_counter_ns() - began) / 1_000 / count


def _count(call: Call, seconds: float) -> int:
    _batch(call, 2)  # warm up
    return max(3, min(20_000, int(seconds * 1e6 / _batch(call, 3))))


def _pool(size: int, cooled: bool, args: argparse.Namespace) -> None:
    subjects = {"routeledger": _routeledger(size, cooled)}
    if not args.routeledger_only:
        subjects["shuffle"] = _litellm(size, cooled, "simple-shuffle")
        subjects["latency"] = _litellm(size, cooled, "latency-based-routing")
    seconds = BATCH_S / (4 if args.quick else 1)
    counts = {name: _count(call, seconds) for name, call in subjects.items()}
    rounds = 2 if args.quick else 5
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(rounds):
        for name, call in subjects.items():
            samples[name].append(_batch(call, counts[name]))
    label = f"decide.n{size}" + (".cooled" if cooled else "")
    for name, values in samples.items():
        show(f"compare.{label}.{name}_us", values, "us")
    for name in ("shuffle", "latency"):
        if name in samples:
            show_ratio(f"{label}.{name}", samples[name], samples["routeledger"])


def run(args: argparse.Namespace) -> None:
    for size in SIZES:
        for cooled in (False, True):
            _pool(size, cooled, args)
