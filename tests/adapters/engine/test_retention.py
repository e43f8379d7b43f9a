"""The retention horizon: the live state keeps what happened inside it, the log keeps the rest."""

from __future__ import annotations

import pytest

from routeledger.adapters.engine.config import ConfigError, PolicyError, parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.store.canonical import state_hash
from routeledger.adapters.testing.clock import FakeClock, counter_ids
from routeledger.core.budget import events as bev
from routeledger.core.budget.values import HoldStatus, Usage
from routeledger.core.errors import CommandError, Retired
from routeledger.core.fold import fold_log
from routeledger.core.retention import ABANDONED_HORIZONS, RecordsRetired, retire_step_us
from routeledger.core.routing import FailureClass
from routeledger.core.routing.events import RequestReceived
from routeledger.core.time import US_PER_S
from tests.adapters.engine.test_engine import CONFIG

TTL_US = 60 * US_PER_S
HORIZON_US = 120 * US_PER_S


def _engine(limit: int = 1_000_000, horizon_us: int = HORIZON_US) -> tuple[Engine, FakeClock]:
    settings = (
        f"[engine]\nhold_ttl_us = {TTL_US}\nretention_horizon_us = {horizon_us}\n"
        "snapshot_every_events = 0\n\n[limits]"
    )
    text = CONFIG.replace("[limits]", settings).replace("limit = 1_000\n", f"limit = {limit}\n")
    clock = FakeClock()
    return Engine.open("memory://", parse_config(text), clock=clock, ids=counter_ids()), clock


def _serve(engine: Engine, request_id: str | None = None, *, fail: bool = False) -> object:
    with engine.request(
        route="chat", caller_scope="u", accounts=("team",), request_id=request_id
    ) as req:
        for attempt in req.sync_attempts():
            if fail and attempt.number == 1:
                attempt.failed(FailureClass.PROVIDER_UNAVAILABLE, status=503)
            else:
                attempt.succeeded(input_tokens=2, output_tokens=3)
    return req.result


def _past_the_horizon(engine: Engine, clock: FakeClock) -> None:
    clock.now += HORIZON_US + retire_step_us(HORIZON_US) + 1
    assert engine.maintain().retired_before_us is not None


def test_the_live_state_holds_the_horizons_traffic_not_the_history() -> None:
    """Requests, holds and command records in the state stay below 17/16 of a horizon's traffic
    however long the engine runs, and the live state still equals a fold of the whole log."""
    engine, clock = _engine()
    per_horizon = HORIZON_US // US_PER_S  # one request a second
    bound = per_horizon * 17 // 16 + 2
    sizes = []
    for n in range(6 * per_horizon):
        _serve(engine, fail=n % 7 == 0)
        clock.now += US_PER_S
        engine.maintain()
        state = engine.state
        sizes.append((len(state.routing.requests), len(state.budget.holds)))
    assert max(r for r, _ in sizes) <= bound and max(h for _, h in sizes) <= bound
    assert len(engine.state.budget.commands) <= bound + len(engine.state.budget.accounts)
    records = list(engine.store.read_all(0))
    retirements = [r.event for r in records if isinstance(r.event, RecordsRetired)]
    assert 4 * 16 <= len(retirements) <= 5 * 16  # one per step, once a horizon has passed
    assert state_hash(fold_log(records)) == state_hash(engine.state)  # D1 with retirements
    engine.state.check_invariants()


def test_a_repeated_request_id_is_a_no_op_within_the_horizon_and_refused_beyond() -> None:
    """X1: inside the horizon the same id changes no balance; beyond it the log still has it,
    so the id is refused with Retired and nothing is recorded."""
    engine, clock = _engine()
    _serve(engine, "dup")
    spent = engine.state.budget.accounts["team"].spent
    _serve(engine, "dup")
    records = [r.event for r in engine.store.read_all(0)]
    assert sum(isinstance(e, RequestReceived) for e in records) == 1
    assert sum(isinstance(e, bev.HoldPlaced) for e in records) == 1
    assert engine.state.budget.accounts["team"].spent == spent
    _past_the_horizon(engine, clock)
    assert "dup" not in engine.state.routing.requests and "dup" not in engine.state.budget.holds
    before = engine.store.max_position()
    with pytest.raises(Retired, match="'dup' is in the log but older than the retention horizon"):
        engine.request(route="chat", caller_scope="u", accounts=("team",), request_id="dup")
    assert engine.store.max_position() == before
    assert _serve(engine, "fresh") is not None  # a new id is served as ever


def test_a_budget_refusal_is_sticky_within_the_horizon_and_refused_beyond() -> None:
    """X2: a refused id stays refused after budget frees up, inside the horizon; beyond it the
    id is refused with Retired rather than decided again."""
    engine, clock = _engine(limit=100)
    assert type(_serve(engine, "poor")).__name__ == "BudgetRejected"
    engine.change_limit("team", 10**9, actor="ops", reason="more budget")
    assert type(_serve(engine, "poor")).__name__ == "BudgetRejected"
    _past_the_horizon(engine, clock)
    with pytest.raises(Retired):
        engine.request(route="chat", caller_scope="u", accounts=("team",), request_id="poor")


def _crashed(engine: Engine, request_id: str) -> None:
    """A request routed, then its process died: the handle never exits."""
    handle = engine.request(
        route="chat", caller_scope="u", accounts=("team",), request_id=request_id
    )
    handle.__enter__()
    next(iter(handle.sync_attempts()))


def _until(engine: Engine, clock: FakeClock, at_us: int) -> None:
    """Run the maintenance loop every 10 s of engine time up to ``at_us``."""
    while clock.now < at_us:
        clock.now = min(clock.now + 10 * US_PER_S, at_us)
        engine.maintain()


USAGE = Usage(cost_micros=8, tokens=5, requests=1)


def test_late_usage_is_booked_within_the_horizon_after_expiry() -> None:
    """L6: a usage callback after the hold expired (its process died) is booked late, once."""
    engine, clock = _engine()
    _crashed(engine, "late")
    expires = engine.state.budget.holds["late"].expires_at_us
    _until(engine, clock, expires + HORIZON_US - 20 * US_PER_S)
    assert engine.state.budget.holds["late"].status is HoldStatus.EXPIRED
    decision = engine.book_usage("late", USAGE, command_id="cb-1")
    assert decision.rejection is None and decision.events
    assert engine.state.budget.holds["late"].status is HoldStatus.LATE_BOOKED
    assert engine.state.budget.accounts["team"].spent == 8
    again = engine.book_usage("late", USAGE, command_id="cb-1")
    assert again.duplicate and not again.events  # X1 within the horizon
    assert engine.state.budget.accounts["team"].spent == 8


def test_late_usage_beyond_the_horizon_is_refused_with_retired() -> None:
    """L6 beyond the horizon: the expired hold left the state, so the callback is Retired and
    nothing is booked; an id the log never had is a CommandError."""
    engine, clock = _engine()
    _crashed(engine, "late")
    expires = engine.state.budget.holds["late"].expires_at_us
    _until(engine, clock, expires + HORIZON_US + 2 * retire_step_us(HORIZON_US))
    assert "late" not in engine.state.budget.holds
    before = engine.store.max_position()
    with pytest.raises(Retired, match="older than the retention horizon"):
        engine.book_usage("late", USAGE, command_id="cb-1")
    assert engine.store.max_position() == before
    assert engine.state.budget.accounts["team"].spent == 0
    with pytest.raises(CommandError, match="has no hold"):
        engine.book_usage("never", USAGE, command_id="cb-2")


def test_a_request_that_never_ended_is_retired_after_abandoned_horizons() -> None:
    """A request left mid-attempt by a dead process leaves the state after 8 horizons, not 1."""
    engine, clock = _engine()
    _crashed(engine, "dead")
    for _ in range(ABANDONED_HORIZONS - 1):
        clock.now += HORIZON_US
        engine.maintain()
    assert "dead" in engine.state.routing.requests
    clock.now += 2 * HORIZON_US
    engine.maintain()
    assert "dead" not in engine.state.routing.requests
    expires = engine.state.budget.holds["dead"].expires_at_us
    _until(engine, clock, expires + HORIZON_US + 2 * retire_step_us(HORIZON_US))
    assert "dead" not in engine.state.budget.holds  # expired at its TTL, then retired


def test_the_horizon_must_outlast_a_holds_ttl() -> None:
    """A horizon at or below hold_ttl_us is a configuration error naming the key; 0 keeps all."""
    with pytest.raises((ConfigError, PolicyError), match="retention_horizon_us"):
        _engine(horizon_us=TTL_US)
    engine, clock = _engine(horizon_us=0)
    _serve(engine)
    clock.now += 100 * HORIZON_US
    assert engine.maintain().retired_before_us is None
    assert len(engine.state.routing.requests) == 1
