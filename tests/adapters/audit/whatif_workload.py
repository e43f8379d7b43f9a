"""A seeded gateway workload recorded through the public Engine API, for what-if tests.

Requests interleave (several are open at once, each a suspended generator on
the sync API), attempts fail and succeed as the seed says (429 with hints, 503,
timeouts, a caller that leaves mid-attempt, a process that dies with its hold
open), the fake clock runs over day boundaries (the team's daily budget rolls
over), an operator suspends and lifts pairs, sets the limit and releases a dead
process's hold, and the maintenance step runs now and then (rollovers, hold
expiries). Everything is recorded by :class:`Engine` on the given store.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Final

from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.lifecycle import RequestHandle
from routeledger.adapters.engine.operator import OperatorRefused
from routeledger.adapters.testing.clock import FakeClock, counter_ids
from routeledger.core.fold import Recorded
from routeledger.core.routing.failures import FailureClass

#: Two targets (a/m1, then b/m2 or c/m2 round robin); a daily team budget a few
#: requests deep (each holds 10 x 1 + 100 x 4 = 410 micros at most).
CONFIG: Final = """
[credentials.a]
provider = "openai"
[credentials.b]
provider = "openai"
[credentials.c]
provider = "openai"

[models.m1]
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 2_000_000
max_output_tokens = 100
[models.m2]
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 4_000_000
max_output_tokens = 100

[routes.chat]
[[routes.chat.chain]]
members = [{ credential = "a", model = "m1" }]
[[routes.chat.chain]]
strategy = "round_robin"
members = [{ credential = "b", model = "m2" }, { credential = "c", model = "m2" }]

[limits]
attempts_max = 4
wait_total_us_max = 5_000_000

[engine]
hold_ttl_us = 120_000_000
retention_horizon_us = 0  # requests stay suspended for days of fake time

[accounts.team]
scope = "team"
limit = 3_000
period = { kind = "day" }
"""

#: :data:`CONFIG` with G6's routing: a ranked pool, a slot cap on ``b`` and an rpm on ``a``'s
#: pair (configured limits), so what-if must re-decide slots, counts and latency too.
CONFIG_G6: Final = (
    CONFIG.replace('strategy = "round_robin"', 'strategy = "least_latency"')
    .replace(
        '[credentials.b]\nprovider = "openai"',
        '[credentials.b]\nprovider = "openai"\nmax_in_flight = 1',
    )
    .replace('{ credential = "a", model = "m1" }', '{ credential = "a", model = "m1", rpm = 4 }')
)

#: How attempts fail, with (status, hint_us) as an adapter would report them.
FAILURES: Final = (
    (FailureClass.RATE_LIMITED, 429, 1_000_000),
    (FailureClass.RATE_LIMITED, 429, None),
    (FailureClass.PROVIDER_UNAVAILABLE, 503, None),
    (FailureClass.TIMEOUT_BEFORE_RESPONSE, None, None),
)
DAY_S: Final = 24 * 3600


def _request(engine: Engine, rng: random.Random, dead: list[str]) -> Iterator[None]:
    """One request on the sync API, yielding between its steps (others run meanwhile)."""
    handle: RequestHandle = engine.request(
        route="chat", caller_scope="u", accounts=("team",), input_tokens=rng.randrange(1, 11)
    )
    handle.__enter__()
    yield
    for attempt in handle.sync_attempts():
        yield  # the attempt is in flight
        roll = rng.random()
        if roll < 0.04:  # the process dies: no outcome, no exit, the hold stays open
            dead.append(handle.request_id)
            return
        if roll < 0.1:  # the caller leaves mid-attempt (recorded as caller_cancelled)
            break
        if roll < 0.5:
            output = rng.randrange(1, 101)  # its time to first token follows from it
            attempt.succeeded(input_tokens=10, output_tokens=output, ttft_us=output * 1_000)
            continue
        failure, status, hint_us = FAILURES[rng.randrange(len(FAILURES))]
        attempt.failed(failure, status=status, hint_us=hint_us, detail="scripted")
    handle.__exit__(None, None, None)


def _operate(engine: Engine, rng: random.Random, dead: list[str], step: int) -> None:
    """One operator command, chosen by the seed."""
    roll = rng.random()
    who = {"actor": "ops", "reason": f"step {step}"}
    if roll < 0.35:
        engine.impose_block("a", "m1", duration_us=rng.randrange(1, 30) * 1_000_000, **who)
    elif roll < 0.7:
        engine.lift_blocks(**who)
    elif roll < 0.85:
        engine.change_limit("team", rng.choice((2_000, 3_000, 5_000)), **who)
    elif dead:
        hold = engine.state.budget.holds.get(dead.pop())
        if hold is not None and hold.status.value == "open":
            # An overdue hold is expired instead, and the release refused.
            with contextlib.suppress(OperatorRefused):
                engine.release_hold(hold.hold_id, **who)


def record(url: str, *, seed: int, steps: int = 160, config: str = CONFIG) -> list[Recorded]:
    """Record the workload of ``seed`` on the store at ``url`` under ``config``; what it recorded."""
    rng = random.Random(seed)
    clock = FakeClock()
    engine = Engine.open(url, parse_config(config), clock=clock, ids=counter_ids(f"s{seed}"))
    live: list[Iterator[None]] = []
    dead: list[str] = []
    try:
        for step in range(steps):
            roll = rng.random()
            if roll < 0.35 or not live:
                live.append(_request(engine, rng, dead))
            elif roll < 0.75:
                request = live[rng.randrange(len(live))]
                if next(request, StopIteration) is StopIteration:
                    live.remove(request)
            elif roll < 0.85:
                clock.advance(rng.choice((0.2, 1.5, 7.0, 200.0, DAY_S / 3)))
            elif roll < 0.93:
                engine.maintain()
            else:
                _operate(engine, rng, dead, step)
        while live:  # the open requests run to their ends (the dead ones stay dead)
            request = live.pop()
            for _ in request:
                pass
        clock.advance(DAY_S)
        engine.maintain()  # the dead processes' holds expire
        return list(engine.store.read_all(0))
    finally:
        engine.close()
