"""The one selection-precedence rule: what a reader with or without a request is told."""

from __future__ import annotations

from routeledger.core.routing.events import RequestReceived, SkipReason
from routeledger.core.routing.failures import FailureClass
from routeledger.core.routing.policy import RETRY_SAME_MAX
from routeledger.core.routing.selection import member_verdict
from routeledger.core.routing.state import RequestState, ScopeState
from routeledger.core.usability import CredentialUsability, UnusableReason

from .support import T0, S, policy, target

POLICY = policy(
    {"chat": [target("owned/small", "open/small")]},
    owners={"owned": "team-b"},
    no_streaming=["small"],
    windows={"small": 100},
)
OWNED, OPEN = POLICY.pools()[0].entries


def _asking(
    *, caller: str = "team-a", stream: bool = True, input_tokens: int = 500, fails: int = 1
) -> RequestState:
    """A request of ``caller`` that failed ``fails`` times on OPEN's pair."""
    request = RequestState(
        RequestReceived(
            stream_id="request:r",
            version=1,
            at_us=T0,
            request_id="r",
            route="chat",
            backups=(),
            caller_scope=caller,
            model_owner=None,
            seed=0,
            stream=stream,
            input_tokens=input_tokens,
            deadline_us=None,
        )
    )
    request.fails_by_pair[OPEN.pair_stream] = fails
    request.last_class_by_pair[OPEN.pair_stream] = FailureClass.PROVIDER_UNAVAILABLE
    return request


ASKING = _asking()


def _cooling(until_us: int) -> ScopeState:
    scope = ScopeState()
    scope.until_us = scope.ready_us = until_us
    return scope


def test_without_a_request_only_lifecycle_and_availability_apply() -> None:
    """explain's verdict (no request) ignores scope, capability and failures; a request's does not."""
    assert member_verdict(POLICY, OWNED, None, {}, {}, T0, None) == (None, 0)
    assert member_verdict(POLICY, OWNED, ASKING, {}, {}, T0, None) == (SkipReason.OUT_OF_SCOPE, 0)
    later = T0 + 5 * S
    pairs = {OPEN.pair_stream: _cooling(later)}
    assert member_verdict(POLICY, OPEN, None, {}, pairs, T0, None) == (
        SkipReason.COOLING_DOWN,
        later,
    )
    no_stream = _asking(caller="team-b")
    assert member_verdict(POLICY, OWNED, no_stream, {}, {}, T0, None)[0] is SkipReason.NO_STREAMING


def test_lifecycle_comes_first_and_failures_before_availability() -> None:
    """An unusable credential beats every other reason; an exhausted retry beats a cooldown."""
    unusable = {
        "owned": CredentialUsability(
            credential_id="owned",
            unusable=UnusableReason.REVOKED,
            resolved_models=None,
            validates_model_names=False,
        ),
    }
    assert member_verdict(POLICY, OWNED, ASKING, {}, {}, T0, unusable) == (SkipReason.REVOKED, 0)
    assert member_verdict(POLICY, OPEN, ASKING, {}, {}, T0, unusable) == (
        SkipReason.NOT_PROVISIONED,
        0,
    )
    later = T0 + 5 * S
    cooled = {OPEN.pair_stream: _cooling(later)}
    streaming = _asking(stream=False, input_tokens=10, fails=RETRY_SAME_MAX + 1)
    assert member_verdict(POLICY, OPEN, streaming, {}, cooled, T0, None) == (
        SkipReason.ALREADY_FAILED,
        later,
    )
