"""Configured limits (G6): a credential's ``max_in_flight`` and a pair's ``rpm``/``tpm`` are
admitted at routing and released at the outcome, with the skip reason when full."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.core.routing import (
    CredentialSpec,
    FailureClass,
    Member,
    ModelSpec,
    Policy,
    PolicyError,
    RequestLimits,
    Route,
    Target,
)
from routeledger.core.routing.capacity import IN_FLIGHT_RECHECK_US
from routeledger.core.routing.events import (
    AttemptRouted,
    RoutingEvent,
    SkipReason,
    SlotReturned,
    SlotTaken,
    WaitDecided,
)

from .support import S, World, only


def _policy(
    *,
    max_in_flight: int | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    **kw: object,
) -> Policy:
    """Route ``chat``: ``k1/m`` (capped as given), then ``k2/m`` in the next target."""
    return Policy(
        credentials=(
            CredentialSpec(id="k1", provider="openai", max_in_flight=max_in_flight),
            CredentialSpec(id="k2", provider="openai"),
        ),
        models=(ModelSpec(id="m"),),
        routes=(
            Route(
                alias="chat",
                chain=(
                    Target(members=(Member(credential="k1", model="m", rpm=rpm, tpm=tpm),)),
                    Target(members=(Member(credential="k2", model="m"),)),
                ),
            ),
            Route(
                alias="solo",
                chain=(Target(members=(Member(credential="k1", model="m"),)),),
            ),
        ),
        **kw,  # type: ignore[arg-type]
    )


def _routed(events: tuple[RoutingEvent, ...]) -> AttemptRouted:
    routed = only(events, AttemptRouted)
    assert len(routed) == 1, events
    result = routed[0]
    assert isinstance(result, AttemptRouted)
    return result


def _start(world: World, request: str, route: str = "chat", tokens: int = 0) -> None:
    world.start(request, route=route, input_tokens=tokens)


def test_max_in_flight_skips_a_full_credential_and_admits_again_at_an_outcome() -> None:
    """Two attempts in flight on k1 (max 2): the third request is skipped ``at_capacity`` to
    k2; once one returns its slot, k1 admits again."""
    world = World(_policy(max_in_flight=2))
    for request in ("r1", "r2"):
        _start(world, request)
        events = world.next(request)
        assert _routed(events).credential_id == "k1"
        assert [type(e) for e in events] == [AttemptRouted, SlotTaken]
    _start(world, "r3")
    third = _routed(world.next("r3"))
    assert third.credential_id == "k2"
    assert [(s.credential_id, s.reason) for s in third.skipped] == [("k1", SkipReason.AT_CAPACITY)]
    returned = world.succeed("r1")
    assert only(returned, SlotReturned)
    _start(world, "r4")
    assert _routed(world.next("r4")).credential_id == "k1"


def test_a_request_with_nowhere_else_to_go_waits_for_a_slot() -> None:
    """A full credential with no alternative: the request waits, looking again after
    IN_FLIGHT_RECHECK_US, and is routed once a slot is free."""
    world = World(_policy(max_in_flight=1))
    _start(world, "r1", "solo")
    world.next("r1")
    _start(world, "r2", "solo")
    wait = only(world.next("r2"), WaitDecided)
    assert wait and isinstance(wait[0], WaitDecided)
    assert wait[0].until_us == world.now + IN_FLIGHT_RECHECK_US
    world.advance(IN_FLIGHT_RECHECK_US)
    world.succeed("r1")
    assert _routed(world.next("r2")).credential_id == "k1"


def test_a_slot_past_its_lease_no_longer_counts() -> None:
    """A slot never returned (its process died) stops counting after ``slot_lease_us``."""
    world = World(_policy(max_in_flight=1, limits=RequestLimits(slot_lease_us=10 * S)))
    _start(world, "lost", "solo")
    world.next("lost")
    world.advance(10 * S)
    _start(world, "r2", "solo")
    assert _routed(world.next("r2")).credential_id == "k1"


def test_rpm_admits_that_many_per_minute_and_says_when_the_next_fits() -> None:
    """rpm = 2: a third request in the minute is skipped ``rate_limit_reached`` with the exact
    time the oldest request leaves the minute; at that time k1 admits again."""
    world = World(_policy(rpm=2))
    for n, request in enumerate(("r1", "r2")):
        _start(world, request)
        assert _routed(world.next(request)).credential_id == "k1"
        world.succeed(request)
        if n == 0:
            world.advance(20 * S)
    _start(world, "r3")
    third = _routed(world.next("r3"))
    assert third.credential_id == "k2"
    skip = third.skipped[0]
    first_second = (world.now - 20 * S) // S
    assert skip.reason is SkipReason.RATE_LIMIT_REACHED
    assert skip.recovers_at_us == (first_second + 60) * S
    world.now = skip.recovers_at_us
    _start(world, "r4")
    assert _routed(world.next("r4")).credential_id == "k1"


def test_tpm_counts_the_estimate_then_the_reported_usage() -> None:
    """tpm = 100: an estimate of 80 leaves no room for 30 more; its outcome reporting 10
    tokens makes room; an estimate over tpm alone never fits (skipped for good)."""
    world = World(_policy(tpm=100))
    _start(world, "r1", tokens=80)
    assert _routed(world.next("r1")).credential_id == "k1"
    _start(world, "r2", tokens=30)
    assert _routed(world.next("r2")).skipped[0].reason is SkipReason.RATE_LIMIT_REACHED
    world.succeed("r2")
    returned = only(world.succeed("r1"), SlotReturned)[0]
    assert isinstance(returned, SlotReturned) and returned.tokens == 5  # support reports 5 output
    _start(world, "r3", tokens=30)
    assert _routed(world.next("r3")).credential_id == "k1"
    _start(world, "big", tokens=101)
    skipped = _routed(world.next("big")).skipped[0]
    assert (skipped.reason, skipped.recovers_at_us) == (SkipReason.RATE_LIMIT_REACHED, None)


def test_tpm_waits_until_enough_of_the_minute_has_passed() -> None:
    """tpm = 100 with 10 then 50 tokens in two seconds' buckets: a request of 60 fits only once
    both have left the minute (the first leaving is not enough); a failure's tokens count 0."""
    world = World(_policy(tpm=100))
    _start(world, "a", tokens=10)
    world.next("a")
    world.succeed("a")  # the support's success reports 5 tokens: the bucket counts 5
    world.advance(S)
    _start(world, "b", tokens=50)
    world.next("b")
    _start(world, "c", tokens=60)
    skip = _routed(world.next("c")).skipped[0]
    assert skip.reason is SkipReason.RATE_LIMIT_REACHED
    assert skip.recovers_at_us == (world.now // S + 60) * S  # when b's second leaves
    failed = world.fail(FailureClass.INVALID_REQUEST, "b")
    assert [e.tokens for e in only(failed, SlotReturned) if isinstance(e, SlotReturned)] == [0]
    _start(world, "d", tokens=60)
    assert _routed(world.next("d")).credential_id == "k1"


def test_a_slot_returned_after_its_lease_changes_nothing() -> None:
    """An outcome arriving after the slot's lease returns nothing more than was forgotten."""
    world = World(_policy(max_in_flight=1, limits=RequestLimits(slot_lease_us=10 * S)))
    _start(world, "slow", "solo")
    world.next("slow")
    world.advance(10 * S)
    world.succeed("slow")
    assert not world.state.loads["k1"].slots


def test_limits_are_checked_with_their_paths() -> None:
    """An out-of-range limit, or one pair given two different rpm, is a PolicyError naming it."""
    with pytest.raises(PolicyError) as refused:
        _policy(max_in_flight=0)
    assert refused.value.path == "credentials.k1.max_in_flight"
    with pytest.raises(PolicyError) as refused:
        _policy(rpm=0)
    assert refused.value.path == "routes.chat.chain[0].members[0].rpm"
    with pytest.raises(PolicyError) as refused:
        Policy(
            credentials=(CredentialSpec(id="k", provider="openai"),),
            models=(ModelSpec(id="m"),),
            routes=(
                Route(
                    alias="a", chain=(Target(members=(Member(credential="k", model="m", rpm=5),)),)
                ),
                Route(
                    alias="b", chain=(Target(members=(Member(credential="k", model="m", rpm=6),)),)
                ),
            ),
        )
    assert refused.value.path == "routes.b.chain[0].members[0]"
    with pytest.raises(PolicyError) as refused:
        _policy(limits=RequestLimits(slot_lease_us=0))
    assert refused.value.path == "limits.slot_lease_us"


_STEPS = st.lists(
    st.tuples(st.sampled_from(["start", "answer", "advance"]), st.integers(0, 7)),
    min_size=1,
    max_size=60,
)


@given(steps=_STEPS, cap=st.integers(1, 3), rpm=st.integers(1, 5))
def test_caps_are_never_exceeded(steps: list[tuple[str, int]], cap: int, rpm: int) -> None:
    """Whatever the interleaving of arrivals, outcomes and time, k1 never has more than
    ``max_in_flight`` attempts in flight, nor more than ``rpm`` routed in any minute."""
    world = World(_policy(max_in_flight=cap, rpm=rpm))
    open_requests: list[str] = []
    routed_at: list[int] = []
    in_flight = 0
    for n, (kind, arg) in enumerate(steps):
        if kind == "start":
            request = f"r{n}"
            _start(world, request, "solo")
            events = world.next(request)
            routed = only(events, AttemptRouted)
            if routed:
                routed_at.append(world.now)
                open_requests.append(request)
                in_flight += 1
        elif kind == "answer" and open_requests:
            world.succeed(open_requests.pop(arg % len(open_requests)))
            in_flight -= 1
        else:
            world.advance(arg * 7 * S)
        assert in_flight <= cap
        window = [at for at in routed_at if at > world.now - 61 * S]
        assert len([at for at in window if at // S > world.now // S - 60]) <= rpm


def test_an_attempt_longer_than_the_minute_returns_its_slot_only() -> None:
    """An attempt answered after its second left the minute frees its slot; its tokens no
    longer count against the minute."""
    world = World(_policy(max_in_flight=1, tpm=100))
    _start(world, "long", "chat", tokens=90)
    world.next("long")
    world.advance(61 * S)
    world.succeed("long")
    load = world.state.loads["k1"]
    assert not load.slots and not load.windows["pair:k1:m"]
