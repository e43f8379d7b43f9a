"""Benchmark the routing core: next-step decisions, outcome recording, memory per pair.

Run: ``.venv/bin/python bench/route_decide.py``. Prints ``BENCH <name> <value> <unit>`` lines:

* ``route.decide.n{4,32,256,1024}.p50_us`` — median ``decide_next`` for a fresh
  request whose target pool has N members, half of them cooling down (chosen
  by a seeded shuffle, so blocked members are spread through the pool), for
  each of the first strategies in turn (priority, round-robin, weighted);
* ``route.decide.n256.p99_us`` — the 99th percentile of the same at N = 256;
* ``route.decide.<strategy>.n{4,256,1024}.p50_us`` — per strategy (the G6 ranked
  ones included: least_latency, lowest_cost, least_in_flight), half the pool
  cooling, every pair with a latency estimate, a quarter with attempts in
  flight, three prices; measured in interleaved rounds, and
  ``…_vs_round_robin`` the ratio to round-robin's median at the same size
  (target <= 2);
* ``route.outcome.p50_us`` — ``decide_outcome`` for a failure plus folding its events;
* ``route.pair.bytes`` — tracemalloc bytes per tracked pair over 100,000 cooled pairs.
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _floors import Floors

from routeledger.core.routing import (
    CredentialSpec,
    Failed,
    FailureClass,
    Member,
    ModelSpec,
    Policy,
    RecordOutcome,
    Route,
    RouteNext,
    StartRequest,
    Strategy,
    Target,
    decide_next,
    decide_outcome,
    decide_start,
    fold,
    initial,
)
from routeledger.core.routing.events import Clamp, CooldownStarted, RoutingEvent
from routeledger.core.routing.failures import FailureClass as FC
from routeledger.core.routing.state import RoutingState

NOW_US = 1_800_000_000_000_000
REQUESTS = 64


def _pool_policy(size: int, strategy: Strategy) -> Policy:
    creds = tuple(CredentialSpec(id=f"c{i}", provider="openai") for i in range(size))
    return Policy(
        credentials=creds,
        models=(ModelSpec(id="gpt-x"),),
        routes=(
            Route(
                alias="chat",
                chain=(
                    Target(
                        members=tuple(
                            Member(credential=f"c{i}", model="gpt-x", weight=1 + i % 3)
                            for i in range(size)
                        ),
                        strategy=strategy,
                    ),
                ),
            ),
        ),
    )


def _state(policy: Policy, size: int, rng: random.Random, *, cooled: bool = True) -> RoutingState:
    """``REQUESTS`` started requests; with ``cooled``, half the pool cooling down."""
    state = initial(policy)  # pools of >= 32 members get their readiness index
    cooling = rng.sample(range(size), size // 2) if cooled else []
    events: list[RoutingEvent] = [
        CooldownStarted(
            stream_id=f"pair:c{i}:gpt-x",
            version=1,
            at_us=NOW_US - 1_000,
            credential_id=f"c{i}",
            upstream_model="gpt-x",
            request_id="warmup",
            attempt_id="warmup",
            until_us=NOW_US + 60_000_000,
            reason=FC.RATE_LIMITED,
            level=0,
            hint_us=None,
            clamp=Clamp.NO_HINT,
        )
        for i in cooling
    ]
    fold(events, state)
    for r in range(REQUESTS):
        start = StartRequest(request_id=f"r{r}", route="chat", caller_scope="u", seed=r)
        fold(decide_start(policy, state, start, now_us=NOW_US), state)
    return state


def _decide_samples(size: int, rounds: int) -> list[float]:
    rng = random.Random(size)
    samples: list[float] = []
    for strategy in (Strategy.PRIORITY, Strategy.ROUND_ROBIN, Strategy.WEIGHTED):
        policy = _pool_policy(size, strategy)
        state = _state(policy, size, rng)
        if strategy is Strategy.ROUND_ROBIN:
            state.cursors["routes.chat.chain[0]"] = rng.randrange(size)
        commands = [RouteNext(request_id=f"r{r}", attempt_id="a1") for r in range(REQUESTS)]
        for _ in range(rounds):
            for command in commands:
                t0 = time.perf_counter_ns()
                decide_next(policy, state, command, now_us=NOW_US)
                samples.append((time.perf_counter_ns() - t0) / 1_000)
    return samples


def _ranked_world(size: int, strategy: Strategy) -> tuple[Policy, RoutingState]:
    """A pool of ``size`` with half cooling, latency estimates everywhere, some load in flight."""
    rng = random.Random(size * 31 + len(strategy.value))
    base = _pool_policy(size, strategy)
    models = tuple(
        ModelSpec(id=f"gpt-{k}", input_micros_per_mtok=100 * (k + 1), output_micros_per_mtok=300)
        for k in range(3)
    )
    target = base.routes[0].chain[0]
    members = tuple(
        Member(credential=m.credential, model=f"gpt-{i % 3}", weight=m.weight)
        for i, m in enumerate(target.members)
    )
    policy = Policy(
        credentials=base.credentials,
        models=models,
        routes=(Route(alias="chat", chain=(Target(members=members, strategy=strategy),)),),
    )
    state = _state(policy, size, rng)  # cools c<i>:gpt-x, which no member names now
    for i in rng.sample(range(size), size // 2):  # half the pool cooling, as above
        member = members[i]
        state.pairs.pop(f"pair:{member.credential}:gpt-x", None)
        fold(
            [
                CooldownStarted(
                    stream_id=f"pair:{member.credential}:{member.model}",
                    version=1,
                    at_us=NOW_US - 1_000,
                    credential_id=member.credential,
                    upstream_model=member.model,
                    request_id="warmup",
                    attempt_id="warmup",
                    until_us=NOW_US + 60_000_000,
                    reason=FC.RATE_LIMITED,
                    level=0,
                    hint_us=None,
                    clamp=Clamp.NO_HINT,
                )
            ],
            state,
        )
    for member in members:
        pair = f"pair:{member.credential}:{member.model}"
        state.latency[pair] = rng.randrange(50_000, 2_000_000)
        if rng.random() < 0.25:
            state.in_flight[pair] = rng.randrange(1, 5)
    return policy, state


def _strategy_medians(size: int, rounds: int) -> dict[Strategy, float]:
    """Median decision per strategy at ``size``, in interleaved rounds (noise hits all alike)."""
    worlds = {strategy: _ranked_world(size, strategy) for strategy in Strategy}
    samples: dict[Strategy, list[float]] = {strategy: [] for strategy in Strategy}
    commands = [RouteNext(request_id=f"r{r}", attempt_id="a1") for r in range(REQUESTS)]
    for _ in range(rounds):
        for strategy, (policy, state) in worlds.items():
            for command in commands:
                t0 = time.perf_counter_ns()
                decide_next(policy, state, command, now_us=NOW_US)
                samples[strategy].append((time.perf_counter_ns() - t0) / 1_000)
    return {strategy: statistics.median(values) for strategy, values in samples.items()}


def _outcome_samples(rounds: int) -> list[float]:
    policy = _pool_policy(4, Strategy.PRIORITY)
    samples: list[float] = []
    for r in range(rounds):
        state = initial()
        start = StartRequest(request_id=f"r{r}", route="chat", caller_scope="u")
        fold(decide_start(policy, state, start, now_us=NOW_US), state)
        fold(
            decide_next(
                policy, state, RouteNext(request_id=f"r{r}", attempt_id="a"), now_us=NOW_US
            ).events,
            state,
        )
        command = RecordOutcome(
            request_id=f"r{r}", attempt_id="a", outcome=Failed(failure=FailureClass.RATE_LIMITED)
        )
        t0 = time.perf_counter_ns()
        fold(decide_outcome(policy, state, command, now_us=NOW_US + 10), state)
        samples.append((time.perf_counter_ns() - t0) / 1_000)
    return samples


def _pair_bytes(pairs: int) -> float:
    events = [
        CooldownStarted(
            stream_id=f"pair:cred-{i:06d}:model-{i % 97:03d}",
            version=1,
            at_us=NOW_US,
            credential_id=f"cred-{i:06d}",
            upstream_model=f"model-{i % 97:03d}",
            request_id="r",
            attempt_id="a",
            until_us=NOW_US + 1_000_000,
            reason=FC.RATE_LIMITED,
            level=0,
            hint_us=None,
            clamp=Clamp.NO_HINT,
        )
        for i in range(pairs)
    ]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    state = fold(events)
    del events
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(state.pairs) == pairs
    return (after - before) / pairs


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    floors = Floors("attrs_event_us")  # ratios: a decision's cost in frozen-event constructions
    for size, rounds in ((4, 300), (32, 300), (256, 200), (1024, 100)):
        samples = _decide_samples(size, rounds)
        p50 = statistics.median(samples)
        print(f"BENCH route.decide.n{size}.p50_us {p50:.2f} us")
        floors.ratio(f"route.decide.n{size}.p50_us", p50, "attrs_event_us")
        if size == 256:
            p99 = _p(samples, 0.99)
    print(f"BENCH route.decide.n256.p99_us {p99:.2f} us")
    floors.ratio("route.decide.n256.p99_us", p99, "attrs_event_us")
    for size, rounds in ((4, 60), (256, 40), (1024, 20)):
        medians = _strategy_medians(size, rounds)
        base = medians[Strategy.ROUND_ROBIN]
        for strategy, p50 in medians.items():
            name = f"route.decide.{strategy.value}.n{size}"
            print(f"BENCH {name}.p50_us {p50:.2f} us")
            print(f"BENCH {name}.vs_round_robin {p50 / base:.2f} x")
    outcome = statistics.median(_outcome_samples(20_000))
    print(f"BENCH route.outcome.p50_us {outcome:.2f} us")
    floors.ratio("route.outcome.p50_us", outcome, "attrs_event_us")
    print(f"BENCH route.pair.bytes {_pair_bytes(100_000):.0f} bytes")
    floors.finish()


if __name__ == "__main__":
    main()
