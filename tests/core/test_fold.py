"""The fold of the log: an event of no context still counts; an impossible one is a bug."""

from __future__ import annotations

import attrs
import pytest

from routeledger.core.budget.events import HoldSettled
from routeledger.core.budget.values import Usage
from routeledger.core.credentials.events import CredentialRevoked
from routeledger.core.errors import InvariantViolation
from routeledger.core.events import Event, EventRegistry, Origin, event
from routeledger.core.fold import Recorded, fold_log
from routeledger.core.routing.events import AttemptSucceeded
from routeledger.core.routing.failures import Evidence


def test_an_event_of_no_context_goes_through_every_context_unchanged() -> None:
    """An event no context owns is offered to every context, counted, and moves engine time."""

    @event("routeledger.ProbeNoticed", 1, Origin.OBSERVED, registry=EventRegistry())
    @attrs.frozen(kw_only=True)
    class ProbeNoticed(Event):
        pass

    evt = ProbeNoticed(stream_id="probe:1", version=1, at_us=5)
    folded = fold_log([Recorded(7, evt)])
    assert (folded.events, folded.position, folded.at_us_max) == (1, 7, 5)


def test_an_event_about_something_never_recorded_is_an_invariant_violation() -> None:
    """An outcome of a request, or a settlement of a hold, that the log never opened cannot be folded."""
    outcome = AttemptSucceeded(
        stream_id="request:ghost",
        version=2,
        at_us=10,
        request_id="ghost",
        attempt_id="ghost/1",
        credential_id="c",
        upstream_model="m",
        evidence=Evidence.UPSTREAM,
        input_tokens=1,
        output_tokens=1,
    )
    settled = HoldSettled(
        stream_id="hold:ghost",
        version=2,
        at_us=10,
        hold_id="ghost",
        command_id="ghost-settle",
        command_digest="settle",
        usage=Usage(cost_micros=1),
        overage=False,
    )
    for evt in (outcome, settled):
        with pytest.raises(
            InvariantViolation, match=r"cannot be folded: 'ghost' was never recorded"
        ):
            fold_log([Recorded(1, evt)])


def test_an_impossible_credential_event_is_an_invariant_violation() -> None:
    """A lifecycle event illegal in its credential's state, when folded, is an InvariantViolation."""
    revoked = CredentialRevoked(stream_id="cred:never", version=1, at_us=10, credential_id="never")
    with pytest.raises(InvariantViolation, match="CredentialRevoked"):
        fold_log([Recorded(1, revoked)])
