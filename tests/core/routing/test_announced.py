"""Announced limits: a pair the provider says is exhausted is skipped until its reset, no 429 spent."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.core.errors import CommandError
from routeledger.core.routing import (
    DEFAULT_FAILURE_TABLE,
    Announced,
    Failed,
    FailureClass,
    Succeeded,
)
from routeledger.core.routing.events import (
    AttemptRouted,
    CooldownStarted,
    ExhaustionPredicted,
    FailureTolerated,
    PredictionCleared,
    SkipReason,
    WaitDecided,
)
from routeledger.core.routing.failures import Evidence

from .support import S, World, only, policy, target


def _world(**extra: object) -> World:
    """Two members in one target: ``primary/m`` before ``spare/m`` (priority)."""
    return World(policy({"chat": [target("primary/m", "spare/m")]}, **extra))


def _served(world: World, request_id: str, announced: Announced | None = None) -> AttemptRouted:
    """Start ``request_id``, route it, and let it succeed announcing ``announced``."""
    world.start(request_id)
    routed = only(world.next(request_id), AttemptRouted)[0]
    world.outcome(Succeeded(output_tokens=3, announced=announced), request_id)
    return routed


@given(
    reset_us=st.integers(1, 900 * S),
    tokens=st.booleans(),
    before=st.integers(0, 900 * S),
)
def test_a_pair_announced_exhausted_is_skipped_until_the_reset_then_serves(
    reset_us: int, tokens: bool, before: int
) -> None:
    """Remaining 0 with a reset: the next request goes to the spare until the bounded reset, then back."""
    world = _world()
    window = (
        Announced(remaining_tokens=0, tokens_reset_us=reset_us, remaining_requests=7)
        if tokens
        else Announced(remaining_requests=0, requests_reset_us=reset_us)
    )
    assert _served(world, "r1", window).credential_id == "primary"
    predicted = only(world.log, ExhaustionPredicted)
    until = world.now + min(reset_us, world.policy.hints.max_us)
    assert [(p.stream_id, p.until_us) for p in predicted] == [("pair:primary:m", until)]
    world.advance(min(before, until - world.now - 1))
    spared = _served(world, "r2")
    assert spared.credential_id == "spare"
    assert [(s.credential_id, s.reason, s.recovers_at_us) for s in spared.skipped] == [
        ("primary", SkipReason.PREDICTED_EXHAUSTED, until)
    ]
    world.now = until
    assert _served(world, "r3").credential_id == "primary"


def test_an_answer_with_requests_left_clears_the_prediction() -> None:
    """An answer in flight when the prediction was made, announcing requests left, ends it early."""
    world = _world()
    for request_id in ("r1", "r2"):  # both on the primary at once
        world.start(request_id)
        assert only(world.next(request_id), AttemptRouted)[0].credential_id == "primary"
    world.outcome(Succeeded(announced=Announced(remaining_requests=0, requests_reset_us=60 * S)))
    assert world.state.pairs["pair:primary:m"].predicted_us == world.now + 60 * S
    events = world.outcome(
        Succeeded(announced=Announced(remaining_requests=3, remaining_tokens=900)), "r2"
    )
    assert [type(e) for e in events][1:] == [PredictionCleared]
    assert world.state.pairs["pair:primary:m"].predicted_us == 0
    assert _served(world, "r3").credential_id == "primary"


def test_an_exhausted_window_without_a_reset_neither_predicts_nor_clears() -> None:
    """Remaining 0 with no reset predicts nothing, and does not clear a standing prediction."""
    world = _world()
    for request_id in ("r1", "r2"):
        world.start(request_id)
        world.next(request_id)
    world.outcome(Succeeded(announced=Announced(remaining_requests=0, requests_reset_us=9 * S)))
    events = world.outcome(
        Succeeded(announced=Announced(remaining_requests=5, remaining_tokens=0)), "r2"
    )
    assert len(events) == 1
    assert world.state.pairs["pair:primary:m"].predicted_us == world.now + 9 * S


def test_an_earlier_reset_leaves_a_standing_prediction_alone() -> None:
    """A second exhausted answer with a sooner reset records nothing: the bound only moves later."""
    world = _world()
    for request_id in ("r1", "r2"):  # both on the primary at once
        world.start(request_id)
        world.next(request_id)
    world.outcome(Succeeded(announced=Announced(remaining_requests=0, requests_reset_us=60 * S)))
    standing = world.now + 60 * S
    events = world.outcome(
        Succeeded(announced=Announced(remaining_requests=0, requests_reset_us=10 * S)), "r2"
    )
    assert len(events) == 1
    assert world.state.pairs["pair:primary:m"].predicted_us == standing


def test_nothing_but_a_real_upstream_answer_predicts() -> None:
    """A local count, a cache hit or an announcement without a reset decide no prediction."""
    world = _world()
    world.start("r1")
    world.next("r1")
    world.outcome(
        Succeeded(
            evidence=Evidence.LOCAL_COUNT,
            announced=Announced(remaining_requests=0, requests_reset_us=S),
        )
    )
    world.start("r2")
    world.next("r2")
    world.outcome(Succeeded(announced=Announced(remaining_requests=0)), "r2")
    world.start("r4")
    world.next("r4")
    world.outcome(Failed(failure=FailureClass.INVALID_REQUEST, announced=Announced()), "r4")
    assert only(world.log, ExhaustionPredicted) == []
    assert _served(world, "r3").credential_id == "primary"


def test_a_lone_pair_predicted_exhausted_is_waited_for() -> None:
    """With no other member the request waits until the announced reset instead of spending a 429."""
    world = World(policy({"chat": [target("primary/m")]}))
    _served(world, "r1", Announced(remaining_requests=0, requests_reset_us=2 * S))
    world.start("r2")
    wait = only(world.next("r2"), WaitDecided)[0]
    assert wait.until_us == world.now + 2 * S
    world.now = wait.until_us
    assert only(world.next("r2"), AttemptRouted)[0].credential_id == "primary"


def test_a_failure_announcing_exhaustion_stamps_after_its_cooldown() -> None:
    """A 500 announcing 0 left cools the pair (its rule tolerating none) and predicts it, on
    consecutive stream versions; a tolerated one predicts it after the tolerance."""
    for allowed, first in ((0, CooldownStarted), (1, FailureTolerated)):
        rule = attrs.evolve(
            DEFAULT_FAILURE_TABLE[FailureClass.PROVIDER_UNAVAILABLE], allowed_fails=allowed
        )
        world = _world(failures=(rule,))
        world.start("r1")
        world.next("r1")
        events = world.outcome(
            Failed(
                failure=FailureClass.PROVIDER_UNAVAILABLE,
                status=500,
                announced=Announced(remaining_requests=0, requests_reset_us=900 * S),
            )
        )
        decided = only(events, first)[0]
        predicted = only(events, ExhaustionPredicted)[0]
        assert predicted.stream_id == decided.stream_id
        assert predicted.version == decided.version + 1
        assert predicted.until_us > getattr(decided, "until_us", 0)


@pytest.mark.parametrize(
    "announced",
    [
        Announced(remaining_requests=-1),
        Announced(requests_reset_us=True),  # type: ignore[arg-type]
        "remaining=0",
    ],
)
def test_a_malformed_announcement_is_a_command_error(announced: object) -> None:
    """An adapter's malformed announcement is refused naming the field, and records nothing."""
    world = _world()
    world.start("r1")
    world.next("r1")
    before = len(world.log)
    with pytest.raises(CommandError, match="announced"):
        world.outcome(Succeeded(announced=announced))  # type: ignore[arg-type]
    assert len(world.log) == before
