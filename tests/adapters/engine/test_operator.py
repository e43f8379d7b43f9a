"""Operator commands through the public Engine API: each an Origin.ADMIN record with actor and
reason, idempotent by command id, and routing sees the change at the very next request."""

from __future__ import annotations

from pathlib import Path

import pytest

from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.operator import OperatorRefused, UnknownTarget
from routeledger.adapters.engine.results import BudgetRejected, Served
from routeledger.core.budget import events as bev
from routeledger.core.budget.values import HoldStatus
from routeledger.core.errors import CommandError, UsageError
from routeledger.core.events import Origin
from routeledger.core.operator import OperatorActed, OperatorAction
from routeledger.core.routing import FailureClass
from routeledger.core.routing import events as rev
from routeledger.core.routing.state import Status, status_at
from tests.adapters.engine.test_engine import make_engine

HOUR_US = 3_600_000_000


def _serve(engine: Engine, fail_on: str | None = None) -> tuple[object, list[str]]:
    """One request; attempts on credential ``fail_on`` answer 401. Returns result and path."""
    path = []
    with engine.request(route="chat", caller_scope="u", accounts=("team",), input_tokens=10) as req:
        for attempt in req.sync_attempts():
            path.append(attempt.credential_id)
            if attempt.credential_id == fail_on:
                attempt.failed(FailureClass.AUTH_ERROR, status=401)
            else:
                attempt.succeeded(input_tokens=10, output_tokens=10)
    return req.result, path


def _records(engine: Engine) -> list[OperatorActed]:
    return [r.event for r in engine.store.read_all() if isinstance(r.event, OperatorActed)]


def test_an_operator_clears_a_suspension_and_the_next_request_routes_there() -> None:
    """A 401 suspends credential a for an hour; lift_blocks makes the very next request use it."""
    engine, _clock = make_engine()
    _result, path = _serve(engine, fail_on="a")
    assert path == ["a", "b"]
    assert _serve(engine)[1] == ["b"]  # a is suspended: the fallback serves
    result = engine.lift_blocks("a", actor="ops@example", reason="key rotated upstream")
    assert result.action is OperatorAction.LIFT_BLOCKS and result.target == "cred:a"
    assert result.effects == 1 and not result.duplicate
    served, path = _serve(engine)
    assert isinstance(served, Served) and path == ["a"]
    (record,) = _records(engine)
    assert record.actor == "ops@example" and record.reason == "key rotated upstream"
    assert type(record).ORIGIN is Origin.ADMIN and rev.BlockLifted.ORIGIN is Origin.ADMIN


def test_a_repeated_command_id_is_carried_out_once_and_another_order_under_it_is_refused() -> None:
    """X1 for operators: the same id again appends nothing; the id with another order is refused."""
    engine, _clock = make_engine()
    _serve(engine, fail_on="a")
    first = engine.lift_blocks("a", actor="ops", reason="r", command_id="c-1")
    positions = engine.store.max_position()
    again = engine.lift_blocks("a", actor="ops", reason="r", command_id="c-1")
    assert again.duplicate and again.effects == first.effects == 1
    assert engine.store.max_position() == positions
    with pytest.raises(OperatorRefused, match="c-1"):
        engine.lift_blocks("b", actor="ops", reason="r", command_id="c-1")
    assert engine.store.max_position() == positions


def test_lifting_everything_clears_every_blocked_scope_and_records_how_many() -> None:
    """lift_blocks() with no target lifts every cooldown and suspension, one event each."""
    engine, _clock = make_engine()
    engine.impose_block("a", "m1", duration_us=HOUR_US, actor="ops", reason="maintenance")
    engine.impose_block("b", duration_us=HOUR_US, actor="ops", reason="maintenance")
    result = engine.lift_blocks(actor="ops", reason="done")
    assert result.target == "*" and result.effects == 2
    state = engine.state.routing
    now = engine.clock.now_us()
    assert all(
        status_at(s, now) is Status.AVAILABLE
        for s in (*state.pairs.values(), *state.creds.values())
    )
    assert engine.lift_blocks(actor="ops", reason="nothing left").effects == 0


def test_an_imposed_suspension_moves_traffic_until_it_ends_then_one_probe_returns_it() -> None:
    """impose_block suspends the pair for its duration (the fallback serves), then a probe heals it."""
    engine, clock = make_engine()
    engine.impose_block("a", "m1", duration_us=HOUR_US, actor="ops", reason="provider incident")
    assert _serve(engine)[1] == ["b"]
    clock.advance(3_601)
    assert _serve(engine)[1] == ["a"]  # the probe succeeds
    kinds = [type(r.event) for r in engine.store.read_all()]
    assert rev.BlockImposed in kinds and rev.CooldownCleared in kinds


def test_bad_operator_input_is_a_typed_error_naming_it_and_records_nothing() -> None:
    """Unknown targets, bad durations, empty actors: typed errors, and the log is unchanged."""
    engine, _clock = make_engine()
    positions = engine.store.max_position()
    with pytest.raises(UnknownTarget, match="'zz'"):
        engine.lift_blocks("zz", actor="ops", reason="r")
    with pytest.raises(UnknownTarget, match="'m2'"):
        engine.impose_block("a", "m2", duration_us=HOUR_US, actor="ops", reason="r")
    with pytest.raises(CommandError, match="duration_us"):
        engine.impose_block("a", "m1", duration_us=0, actor="ops", reason="r")
    with pytest.raises(CommandError, match="actor"):
        engine.lift_blocks("a", actor="", reason="r")
    with pytest.raises(OperatorRefused, match="unknown_account"):
        engine.change_limit("nope", 5, actor="ops", reason="r")
    assert engine.store.max_position() == positions


def test_an_operator_changes_a_limit_and_corrects_spend_and_admission_sees_both() -> None:
    """change_limit refuses the next request at once (T3); correct_spend credits it back."""
    engine, _clock = make_engine()
    assert isinstance(_serve(engine)[0], Served)
    engine.change_limit("team", 100, actor="ops", reason="over plan")
    assert isinstance(_serve(engine)[0], BudgetRejected)
    spent = engine.state.budget.accounts["team"].spent
    engine.correct_spend("team", -spent, actor="ops", reason="refund of a test")
    engine.change_limit("team", 1_000, actor="ops", reason="back to plan")
    assert isinstance(_serve(engine)[0], Served)
    kinds = {type(r.event) for r in engine.store.read_all()}
    assert {bev.LimitChanged, bev.SpendCorrected} <= kinds
    with pytest.raises(OperatorRefused, match="negative"):
        engine.correct_spend("team", -(10**9), actor="ops", reason="too much")


def test_an_operator_releases_a_hold_left_open_before_its_ttl() -> None:
    """release_hold refunds an open hold now: the account's reservation drops to zero."""
    engine, _clock = make_engine()
    handle = engine.request(route="chat", caller_scope="u", accounts=("team",), input_tokens=10)
    handle.__enter__()
    request_id = handle.request_id
    assert engine.state.budget.accounts["team"].reserved > 0
    engine.release_hold(request_id, actor="ops", reason="process hung")
    assert engine.state.budget.holds[request_id].status is HoldStatus.REFUNDED
    assert engine.state.budget.accounts["team"].reserved == 0
    with pytest.raises(OperatorRefused, match="already_resolved"):
        engine.release_hold(request_id, actor="ops", reason="again, new id")


def test_a_callers_invalid_usage_is_its_error_and_never_an_upstream_failure() -> None:
    """succeeded(output_tokens=-500) raises UsageError; the pair is not cooled, nothing is billed."""
    engine, _clock = make_engine()

    def misuse() -> None:
        with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
            for attempt in req.sync_attempts():
                attempt.succeeded(output_tokens=-500)

    with pytest.raises(UsageError, match="output_tokens"):
        misuse()
    events = [r.event for r in engine.store.read_all()]
    assert not any(isinstance(e, rev.BlockEvent) for e in events)
    (failed,) = [e for e in events if isinstance(e, rev.AttemptFailed)]
    assert failed.failure is FailureClass.CALLER_CANCELLED and failed.detail == "UsageError"
    assert engine.state.budget.accounts["team"].spent == 0
    assert _serve(engine)[1] == ["a"]


def test_an_operators_limit_stands_across_restarts_until_the_file_changes(tmp_path: Path) -> None:
    """Reopening with the same file keeps the operator's limit; a new value in the file wins."""
    from routeledger.adapters.engine.config import parse_config
    from tests.adapters.engine.test_engine import CONFIG

    url = f"sqlite:///{tmp_path}/gateway.db"
    with Engine.open(url, parse_config(CONFIG), maintenance=False) as engine:
        engine.change_limit("team", 50, actor="ops", reason="incident")
    with Engine.open(url, parse_config(CONFIG), maintenance=False) as engine:
        assert engine.state.budget.accounts["team"].limit == 50
    raised = parse_config(CONFIG.replace("limit = 1_000", "limit = 2_000"))
    with Engine.open(url, raised, maintenance=False) as engine:
        assert engine.state.budget.accounts["team"].limit == 2_000
