"""Operator deciders, pure: lift and impose blocks by target, bounded, idempotent by command id."""

from __future__ import annotations

import pytest

from routeledger.core.errors import CommandError
from routeledger.core.fold import Folded
from routeledger.core.operator import (
    ImposeBlock,
    LiftBlocks,
    OperatorCommand,
    decide_operator,
)
from routeledger.core.routing import state as routing
from routeledger.core.routing.admin import decide_impose, decide_lift
from routeledger.core.routing.policy import COOLDOWN_US_MAX
from routeledger.core.routing.state import Status, status_at

T0 = 1_767_225_600_000_000
HOUR = 3_600_000_000


def _imposed(
    state: routing.RoutingState, credential: str, model: str | None, duration: int, at: int = T0
) -> None:
    order = ImposeBlock(credential_id=credential, upstream_model=model, duration_us=duration)
    routing.evolve(state, decide_impose(state, order, command_id="c", now_us=at))


@pytest.mark.parametrize(
    ("order", "field"),
    [
        (LiftBlocks(upstream_model="m"), "upstream_model"),
        (LiftBlocks(credential_id="x" * 65), "credential_id"),
        (LiftBlocks(credential_id="a:b"), "credential_id"),
        (LiftBlocks(credential_id="a", upstream_model=""), "upstream_model"),
    ],
)
def test_a_malformed_target_is_a_command_error_naming_its_field(
    order: LiftBlocks, field: str
) -> None:
    """A target that names no scope raises CommandError on that field, deciding nothing."""
    with pytest.raises(CommandError, match=field):
        decide_lift(routing.initial(), order, command_id="c", now_us=T0)


def test_lifting_a_pair_touches_only_that_pair_and_an_unknown_pair_is_a_no_op() -> None:
    """A pair's lift heals that pair alone; a pair never blocked yields no event."""
    state = routing.initial()
    _imposed(state, "a", "m1", HOUR)
    _imposed(state, "a", "m2", HOUR)
    lifted = decide_lift(
        state, LiftBlocks(credential_id="a", upstream_model="m1"), command_id="c", now_us=T0
    )
    assert [e.stream_id for e in lifted] == ["pair:a:m1"]
    for evt in lifted:
        routing.evolve(state, evt)
    assert status_at(state.pairs["pair:a:m1"], T0) is Status.AVAILABLE
    assert status_at(state.pairs["pair:a:m2"], T0) is Status.SUSPENDED
    routing.check_invariants(state)
    none = LiftBlocks(credential_id="a", upstream_model="zz")
    assert decide_lift(state, none, command_id="c", now_us=T0) == ()


def test_lifting_a_credential_heals_it_and_every_pair_of_it() -> None:
    """A credential's lift covers cred:<c> and each pair:<c>:*, never another credential's."""
    state = routing.initial()
    _imposed(state, "a", None, HOUR)
    _imposed(state, "a", "m1", HOUR)
    _imposed(state, "ab", "m1", HOUR)
    lifted = decide_lift(state, LiftBlocks(credential_id="a"), command_id="c", now_us=T0)
    assert [e.stream_id for e in lifted] == ["cred:a", "pair:a:m1"]
    assert decide_lift(state, LiftBlocks(credential_id="zz"), command_id="c", now_us=T0) == ()


def test_an_imposed_block_only_extends_and_is_bounded_by_a3() -> None:
    """A2: a shorter suspension keeps the longer block; A3: a duration past the cap is refused."""
    state = routing.initial()
    _imposed(state, "a", None, 2 * HOUR)
    shorter = ImposeBlock(credential_id="a", upstream_model=None, duration_us=HOUR)
    assert decide_impose(state, shorter, command_id="d", now_us=T0).until_us == T0 + 2 * HOUR
    too_long = ImposeBlock(credential_id="a", upstream_model=None, duration_us=COOLDOWN_US_MAX + 1)
    with pytest.raises(CommandError, match="duration_us"):
        decide_impose(state, too_long, command_id="d", now_us=T0)


def test_after_an_imposed_block_ends_one_probe_is_allowed() -> None:
    """A4: an operator's suspension ends half-open, like any block."""
    state = routing.initial()
    _imposed(state, "a", "m1", HOUR)
    assert status_at(state.pairs["pair:a:m1"], T0 + HOUR) is Status.HALF_OPEN
    routing.check_invariants(state)


def test_an_order_that_is_not_an_operator_order_is_refused_by_field() -> None:
    """decide_operator names the order field when handed something else."""
    command = OperatorCommand(command_id="c", actor="ops", reason="r", order="lift")  # type: ignore[arg-type]
    with pytest.raises(CommandError, match="order"):
        decide_operator(Folded(), None, command, now_us=T0)
