"""The engine's maintenance: periods roll over and abandoned holds expire with no call from
the gateway, each decided from engine time and recorded (docs/operations.md)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.results import BudgetRejected, Served
from routeledger.adapters.testing.clock import FakeClock, counter_ids
from routeledger.core.budget import events as bev
from routeledger.core.budget.values import HoldStatus
from tests.adapters.engine.test_engine import CONFIG

#: The team's limit per day is one request's worst-case estimate (10 x 1 + 100 x 4 micros).
DAILY = CONFIG.replace(
    "limit = 1_000", 'limit = 410\nperiod = { kind = "day", zone = "Europe/Paris" }'
)
DAY_S = 24 * 3600


def _serve_one(engine: Engine) -> Served | BudgetRejected:
    with engine.request(route="chat", caller_scope="u", accounts=("team",), input_tokens=10) as req:
        for attempt in req.sync_attempts():
            attempt.succeeded(input_tokens=10, output_tokens=100)
    assert isinstance(req.result, Served | BudgetRejected)
    return req.result


def test_a_daily_limit_spent_on_day_one_serves_again_on_day_two_without_the_loop() -> None:
    """T2 at admission: a request after the boundary rolls its account over first, so it is
    not refused for yesterday's spend, even with no maintenance step run."""
    clock = FakeClock()
    engine = Engine.open("memory://", parse_config(DAILY), clock=clock, ids=counter_ids())
    assert isinstance(_serve_one(engine), Served)
    assert isinstance(_serve_one(engine), BudgetRejected)  # the day's limit is spent
    clock.advance(DAY_S)
    assert isinstance(_serve_one(engine), Served)
    rolled = [r.event for r in engine.store.read_all() if isinstance(r.event, bev.PeriodRolledOver)]
    assert len(rolled) == 1 and rolled[0].closed_spent == 210  # 10 x 1 + 100 x 2 micros


def test_an_async_request_after_the_boundary_rolls_the_period_over_first() -> None:
    """The same on the async path (the roll's commit off the event loop)."""
    clock = FakeClock()
    engine = Engine.open("memory://", parse_config(DAILY), clock=clock, ids=counter_ids())
    assert isinstance(_serve_one(engine), Served)
    clock.advance(DAY_S)

    async def serve() -> object:
        async with engine.request(
            route="chat", caller_scope="u", accounts=("team",), input_tokens=10
        ) as req:
            async for attempt in req.attempts():
                attempt.succeeded(input_tokens=10, output_tokens=100)
        return req.result

    assert isinstance(asyncio.run(serve()), Served)


def test_a_maintenance_step_rolls_every_ended_period_once() -> None:
    """maintain() rolls the ended period over once; a second step records nothing."""
    clock = FakeClock()
    engine = Engine.open("memory://", parse_config(DAILY), clock=clock, ids=counter_ids())
    _serve_one(engine)
    assert engine.maintain().rolled == ()
    clock.advance(DAY_S)
    assert engine.maintain().rolled == ("team",)
    positions = engine.store.max_position()
    assert engine.maintain().rolled == () and engine.store.max_position() == positions
    assert engine.state.budget.accounts["team"].spent == 0


KILLED = textwrap.dedent(
    """
    import os, sys
    from routeledger.adapters.engine.config import parse_config
    from routeledger.adapters.engine.engine import Engine
    from routeledger.adapters.testing.clock import FakeClock
    from tests.adapters.engine.test_engine import CONFIG

    engine = Engine.open(sys.argv[1], parse_config(CONFIG), clock=FakeClock())
    request = engine.request(route="chat", caller_scope="u", accounts=("team",), input_tokens=10)
    request.__enter__()
    print(request.request_id, flush=True)
    os._exit(9)  # killed mid-request: the hold stays open in the log
    """
)


def test_a_hold_left_by_a_killed_process_is_expired_by_a_survivor_with_no_gateway_call(
    tmp_path: Path,
) -> None:
    """L5 for users: the surviving engine's maintenance thread expires the dead process's hold
    once its TTL passed in engine time, and its reservation is released."""
    store_url = f"sqlite:///{tmp_path}/shared.db"
    config = parse_config(CONFIG + "\n[engine]\nmaintenance_every_us = 20_000\n")
    clock = FakeClock()
    survivor = Engine.open(store_url, config, clock=clock, maintenance=True)
    try:
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        done = subprocess.run(
            [sys.executable, "-c", KILLED, store_url], capture_output=True, text=True, env=env
        )
        assert done.returncode == 9, done.stderr
        request_id = done.stdout.strip()
        deadline = time.monotonic() + 10
        while request_id not in survivor.state.budget.holds and time.monotonic() < deadline:
            time.sleep(0.02)  # the thread's steps catch up with the other process's append
        assert survivor.state.budget.holds[request_id].status is HoldStatus.OPEN
        clock.advance(survivor.hold_ttl_us() / 1_000_000 + 1)
        while survivor.state.budget.open_holds and time.monotonic() < deadline:
            time.sleep(0.02)
        assert survivor.state.budget.holds[request_id].status is HoldStatus.EXPIRED
        assert survivor.state.budget.accounts["team"].reserved == 0
    finally:
        survivor.close()
