"""The request lifecycle: one state machine, illegal moves fail loudly, every shell shares it."""

from __future__ import annotations

import itertools

import pytest

from routeledger.adapters.engine.lifecycle import (
    TRANSITIONS,
    LifecycleError,
    RequestLifecycle,
    RequestPhase,
    Signal,
)
from routeledger.core.errors import UsageError
from routeledger.core.routing import FailureClass, StartRequest

from .test_engine import make_engine


def _lifecycle() -> RequestLifecycle:
    return RequestLifecycle(
        StartRequest(request_id="r1", route="chat", caller_scope="u"),
        hold=None,
        prices=lambda _model, _tokens_in, _tokens_out: 0,
    )


@pytest.mark.parametrize(
    ("phase", "signal"),
    [pair for pair in itertools.product(RequestPhase, Signal) if pair not in TRANSITIONS],
)
def test_every_move_outside_the_table_raises_naming_phase_and_signal(
    phase: RequestPhase, signal: Signal
) -> None:
    """A (phase, signal) pair not in TRANSITIONS raises LifecycleError and leaves the phase as it was."""
    life = _lifecycle()
    life.phase = phase
    with pytest.raises(LifecycleError) as caught:
        life._move(signal)
    assert caught.value.phase is phase and caught.value.signal is signal
    assert repr(phase.value) in str(caught.value) and repr(signal.value) in str(caught.value)
    assert life.phase is phase


def test_every_phase_but_left_can_be_left_and_left_is_final() -> None:
    """Leaving is legal from every phase (so a hold is always resolved); nothing follows it."""
    for phase in RequestPhase:
        assert ((phase, Signal.LEFT) in TRANSITIONS) is (phase is not RequestPhase.LEFT)
    assert not [pair for pair in TRANSITIONS if pair[0] is RequestPhase.LEFT]


def test_asking_for_the_next_attempt_before_reporting_this_one_is_a_caller_error() -> None:
    """Iterating on without reporting raises LifecycleError naming the attempt; the hold still resolves."""
    engine, _ = make_engine()
    with engine.request(route="chat", caller_scope="u", accounts=("team",)) as request:
        attempts = request.sync_attempts()
        first = next(attempts)
        with pytest.raises(LifecycleError, match=f"attempt {first.attempt_id} has no outcome"):
            next(attempts)
        assert request.phase is RequestPhase.ATTEMPTING
    assert request.phase is RequestPhase.LEFT
    hold = engine.state.budget.holds[request.request_id]
    assert hold.status.value in ("refunded", "settled")


def test_reporting_twice_is_a_caller_error_and_records_nothing_more() -> None:
    """A second outcome for one attempt is a UsageError; the first stands."""
    engine, _ = make_engine()
    with engine.request(route="chat", caller_scope="u", accounts=("team",)) as request:
        for attempt in request.sync_attempts():
            attempt.failed(FailureClass.PROVIDER_UNAVAILABLE, status=503)
            with pytest.raises(UsageError, match="already has an outcome"):
                attempt.succeeded(input_tokens=1, output_tokens=1)
            break
    routing = engine.state.routing.requests[request.request_id]
    assert [f.failure for f in routing.failures] == [FailureClass.PROVIDER_UNAVAILABLE]
