"""Retry-then-cool (G6): a failure class's ``allowed_fails`` tolerates transient failures of a
scope before its action applies, so a single 5xx retries the same pair instead of dropping to a
worse one."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.core.routing import (
    DEFAULT_FAILURE_TABLE,
    FailureClass,
    PolicyError,
    Strategy,
)
from routeledger.core.routing.events import (
    AttemptRouted,
    CooldownStarted,
    FailureTolerated,
    ProbeAllowed,
    RoutingEvent,
)
from routeledger.core.routing.failures import STRIKE_WINDOW_US
from routeledger.core.routing.state import Status, status_at

from .support import S, World, only, policy, target

_TRANSIENT = (FailureClass.PROVIDER_UNAVAILABLE, FailureClass.CONNECT_ERROR)


def _routed(events: tuple[RoutingEvent, ...]) -> AttemptRouted:
    routed = only(events, AttemptRouted)
    assert len(routed) == 1, events
    result = routed[0]
    assert isinstance(result, AttemptRouted)
    return result


def _primary_and_fallback() -> World:
    return World(
        policy(
            {"chat": [target("p/best")], "cheap": [target("s/worse")]}, fallback={"chat": ["cheap"]}
        )
    )


def test_a_single_transient_failure_retries_the_same_pair_and_serves() -> None:
    """A single 500 (or connect error) on the primary is tolerated: nothing cools, and the
    request's next attempt is the same pair, not the fallback."""
    for failure in _TRANSIENT:
        world = _primary_and_fallback()
        world.start()
        assert _routed(world.next()).credential_id == "p"
        decided = world.fail(failure)[1:]
        assert [type(e) for e in decided] == [FailureTolerated]
        tolerated = decided[0]
        assert isinstance(tolerated, FailureTolerated)
        assert (tolerated.stream_id, tolerated.reason, tolerated.strikes) == (
            "pair:p:best",
            failure,
            1,
        )
        assert status_at(world.state.pairs["pair:p:best"], world.now) is Status.AVAILABLE
        retry = _routed(world.next())
        assert (retry.credential_id, retry.upstream_model, retry.probe) == ("p", "best", False)
        world.succeed()
        assert [e.credential_id for e in world.log if isinstance(e, AttemptRouted)] == ["p", "p"]


def test_a_second_failure_within_the_window_cools_the_pair() -> None:
    """The failure after ``allowed_fails`` tolerated ones, within the strike window, applies the
    rule's cooldown, and the request then falls back."""
    world = _primary_and_fallback()
    world.start()
    world.next()
    world.fail(FailureClass.PROVIDER_UNAVAILABLE)
    world.advance(STRIKE_WINDOW_US - 1)
    world.next()
    cooled = world.fail(FailureClass.PROVIDER_UNAVAILABLE)[1:]
    assert [type(e) for e in cooled] == [CooldownStarted]
    started = cooled[0]
    assert isinstance(started, CooldownStarted)
    assert (started.level, started.until_us - world.now) == (0, 5 * S)
    assert world.state.pairs["pair:p:best"].strikes == 0
    assert _routed(world.next()).credential_id == "s"


def test_strikes_further_apart_than_the_window_never_add_up() -> None:
    """Isolated transient failures more than ``STRIKE_WINDOW_US`` apart are each tolerated."""
    world = World(policy({"chat": [target("k/m")]}))
    for n in range(5):
        request = f"r{n}"
        world.start(request)
        world.next(request)
        decided = world.fail(FailureClass.PROVIDER_UNAVAILABLE, request)[1:]
        assert [(type(e), getattr(e, "strikes", None)) for e in decided] == [(FailureTolerated, 1)]
        world.advance(STRIKE_WINDOW_US)


def test_a_provider_hint_or_a_failed_probe_is_never_tolerated() -> None:
    """A 503 with Retry-After cools at once (the provider said when), and so does a failed
    half-open probe (the pair was already known to be down)."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start("r0")
    world.next("r0")
    hinted = world.fail(FailureClass.PROVIDER_UNAVAILABLE, "r0", hint_us=3 * S)[1:]
    assert [type(e) for e in hinted] == [CooldownStarted]
    world.advance(3 * S)
    world.start()
    probe = world.next()
    assert _routed(probe).probe and only(probe, ProbeAllowed)
    failed_probe = world.fail(FailureClass.PROVIDER_UNAVAILABLE)[1:]
    assert [type(e) for e in failed_probe] == [CooldownStarted]


def test_a_round_robin_pool_moves_on_but_leaves_the_pair_available() -> None:
    """In a round-robin pool the rotation continues after a tolerated failure; the failed pair
    stays selectable for other requests until it fails again."""
    world = World(policy({"chat": [target("k1/m", "k2/m", strategy=Strategy.ROUND_ROBIN)]}))
    world.start()
    assert _routed(world.next()).credential_id == "k1"
    world.fail(FailureClass.CONNECT_ERROR)
    assert _routed(world.next()).credential_id == "k2"
    world.succeed()
    world.start("r2")
    assert _routed(world.next("r2")).credential_id == "k1"


def test_an_override_can_turn_tolerance_off_or_up() -> None:
    """``allowed_fails`` is a failure-table field: 0 cools at the first failure, 2 tolerates two."""
    rule = DEFAULT_FAILURE_TABLE[FailureClass.PROVIDER_UNAVAILABLE]
    strict = World(
        policy({"chat": [target("k/m")]}, failures=(attrs.evolve(rule, allowed_fails=0),))
    )
    strict.start()
    strict.next()
    assert [type(e) for e in strict.fail(FailureClass.PROVIDER_UNAVAILABLE)[1:]] == [
        CooldownStarted
    ]
    lenient = World(
        policy(
            {"chat": [target("k/m")]}, failures=(attrs.evolve(rule, allowed_fails=2, retry_same=2),)
        )
    )
    lenient.start()
    kinds = []
    for _ in range(3):
        lenient.next()
        kinds.append(type(lenient.fail(FailureClass.PROVIDER_UNAVAILABLE)[-1]))
    assert kinds == [FailureTolerated, FailureTolerated, CooldownStarted]


def test_allowed_fails_out_of_range_is_a_policy_error_naming_the_field() -> None:
    """A negative or over-limit ``allowed_fails`` is refused with its TOML path."""
    rule = DEFAULT_FAILURE_TABLE[FailureClass.CONNECT_ERROR]
    for bad in (-1, 11):
        with pytest.raises(PolicyError) as refused:
            policy({"chat": [target("k/m")]}, failures=(attrs.evolve(rule, allowed_fails=bad),))
        assert refused.value.path == "failures.connect_error.allowed_fails"


@given(
    gaps=st.lists(
        st.integers(min_value=0, max_value=2 * STRIKE_WINDOW_US), min_size=1, max_size=12
    ),
    allowed=st.integers(min_value=0, max_value=3),
)
def test_never_more_than_allowed_fails_tolerated_in_a_row(gaps: list[int], allowed: int) -> None:
    """Whatever the spacing of hint-less failures on a healthy pair, at most ``allowed_fails``
    in a row (each within the window of the previous) are tolerated; the next one blocks."""
    rule = DEFAULT_FAILURE_TABLE[FailureClass.PROVIDER_UNAVAILABLE]
    world = World(
        policy({"chat": [target("k/m")]}, failures=(attrs.evolve(rule, allowed_fails=allowed),))
    )
    run, last_at = 0, None
    for n, gap in enumerate(gaps):
        world.advance(gap)
        pair = world.state.pairs.get("pair:k:m")
        if pair is not None and status_at(pair, world.now) is not Status.AVAILABLE:
            continue  # blocked or half-open: not this property's case
        world.start(f"r{n}")
        world.next(f"r{n}")
        decided = world.fail(FailureClass.PROVIDER_UNAVAILABLE, f"r{n}")[1:]
        if last_at is None or world.now - last_at >= STRIKE_WINDOW_US:
            run = 0
        if run < allowed:
            assert [type(e) for e in decided] == [FailureTolerated]
            run, last_at = run + 1, world.now
        else:
            assert [type(e) for e in decided] == [CooldownStarted]
            run, last_at = 0, None


def test_a_blocked_scope_counting_strikes_is_an_invariant_violation() -> None:
    """Strikes only count on a healthy scope: a block resets them, and a state with both is refused."""
    from routeledger.core.errors import InvariantViolation
    from routeledger.core.routing import check_invariants
    from routeledger.core.routing.state import ScopeState

    world = World(policy({"chat": [target("k/m")]}))
    scope = ScopeState()
    scope.needs_probe, scope.reason, scope.strikes = True, FailureClass.RATE_LIMITED, 1
    world.state.pairs["pair:k:m"] = scope
    with pytest.raises(InvariantViolation, match="tolerated failures"):
        check_invariants(world.state)
