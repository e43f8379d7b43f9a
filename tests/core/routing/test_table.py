"""Exhaustive table: every (availability status, outcome) pair, against an independent oracle (A1-A4)."""

from __future__ import annotations

import itertools

import pytest

from routeledger.core.routing import DEFAULT_FAILURE_TABLE, FailureClass, fold
from routeledger.core.routing.events import (
    Clamp,
    CooldownCleared,
    CooldownExtended,
    CooldownStarted,
    CredentialSuspended,
    FailureTolerated,
    PairSuspended,
    ProbeAllowed,
    RoutingEvent,
)
from routeledger.core.routing.failures import Evidence
from routeledger.core.routing.state import Status, status_at

from .support import S, World, policy, target

#: G6, written out independently of the code: the transient classes whose first
#: failure on a healthy scope blocks nothing (retry the same once, then cool).
TOLERATED_ONCE = frozenset({FailureClass.PROVIDER_UNAVAILABLE, FailureClass.CONNECT_ERROR})

#: A1, written out independently of the code: where each class lands and how.
EXPECTED_SCOPE: dict[FailureClass, tuple[str | None, str | None]] = {
    FailureClass.AUTH_ERROR: ("cred", "suspend"),
    FailureClass.QUOTA_EXHAUSTED: ("pair", "cool"),
    FailureClass.RATE_LIMITED: ("pair", "cool"),
    FailureClass.MODEL_NOT_FOUND: ("pair", "suspend"),
    FailureClass.MODEL_NOT_SUPPORTED: ("pair", "suspend"),
    FailureClass.CONTEXT_LENGTH_EXCEEDED: (None, None),
    FailureClass.CONTENT_FILTERED: (None, None),
    FailureClass.INVALID_REQUEST: (None, None),
    FailureClass.PROVIDER_UNAVAILABLE: ("pair", "cool"),
    FailureClass.CONNECT_ERROR: ("pair", "cool"),
    FailureClass.TIMEOUT_BEFORE_RESPONSE: ("pair", "cool"),
    FailureClass.FIRST_TOKEN_TIMEOUT: ("pair", "cool"),
    FailureClass.STREAM_STALLED: ("pair", "cool"),
    FailureClass.STREAM_INTERRUPTED: ("pair", "cool"),
    FailureClass.MALFORMED_RESPONSE: ("pair", "cool"),
    FailureClass.RESPONSE_REJECTED: (None, None),
    FailureClass.CALLER_CANCELLED: (None, None),
    FailureClass.GATEWAY_POOL_EXHAUSTED: (None, None),
    FailureClass.UNKNOWN: ("pair", "cool"),
}

OUTCOMES: list[FailureClass | Evidence] = [*FailureClass, *Evidence]
LEVEL = 2


def _put_in_status(world: World, stream: str, upstream: str | None, status: Status) -> None:
    """Fold hand-made decisions that leave ``stream`` in ``status`` at ``world.now``."""
    now = world.now
    common = {
        "credential_id": "k",
        "upstream_model": upstream,
        "request_id": "setup",
        "attempt_id": "s",
    }
    events: list[RoutingEvent] = []
    if status is Status.SUSPENDED:
        cls = CredentialSuspended if upstream is None else PairSuspended
        events.append(
            cls(
                stream_id=stream,
                version=1,
                at_us=now - S,
                until_us=now + 10 * 3600 * S,
                reason=FailureClass.MODEL_NOT_FOUND,
                **common,
            )
        )
    elif status is not Status.AVAILABLE:
        until = now + 10 * S if status is Status.COOLING else now - 10 * S
        events.append(
            CooldownStarted(
                stream_id=stream,
                version=1,
                at_us=now - 20 * S,
                until_us=until,
                reason=FailureClass.RATE_LIMITED,
                level=LEVEL,
                hint_us=None,
                clamp=Clamp.NO_HINT,
                **common,
            )
        )
        if status is Status.PROBING:
            events.append(
                ProbeAllowed(
                    stream_id=stream, version=2, at_us=now - S, until_us=now + 20 * S, **common
                )
            )
    world.apply(events)
    assert status_at(world.state.pairs.get(stream) or world.state.creds.get(stream), now) is status


@pytest.mark.parametrize(("status", "outcome"), list(itertools.product(Status, OUTCOMES)))
def test_every_status_outcome_pair(status: Status, outcome: FailureClass | Evidence) -> None:
    """A1-A4: for every (status, outcome) the decided events and the resulting status match the oracle."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start()
    world.next()  # the attempt is in flight while the pair and credential change status
    world.advance(60 * S)
    _put_in_status(world, "pair:k:m", "m", status)
    _put_in_status(world, "cred:k", None, status)
    before = {
        stream: (scope.until_us, scope.level)
        for stream, scope in (*world.state.pairs.items(), *world.state.creds.items())
    }
    now = world.now
    if isinstance(outcome, Evidence):
        decided = world.succeed(evidence=outcome)[1:]
        if outcome is Evidence.UPSTREAM and status is not Status.AVAILABLE:
            assert sorted(e.stream_id for e in decided) == ["cred:k", "pair:k:m"]
            assert all(isinstance(e, CooldownCleared) for e in decided)
            expected_after = {"pair:k:m": Status.AVAILABLE, "cred:k": Status.AVAILABLE}
        else:
            assert decided == ()  # I1.2: weaker evidence clears nothing; healthy stays healthy
            expected_after = {"pair:k:m": status, "cred:k": status}
    else:
        decided = world.fail(outcome)[1:]
        scope_kind, action = EXPECTED_SCOPE[outcome]
        rule = DEFAULT_FAILURE_TABLE[outcome]
        expected_after = {"pair:k:m": status, "cred:k": status}
        if scope_kind is None:
            assert decided == ()
        else:
            stream = "cred:k" if scope_kind == "cred" else "pair:k:m"
            old_until, old_level = before.get(stream, (0, 0))
            if action == "suspend":
                assert len(decided) == 1
                block = decided[0]
                assert isinstance(
                    block, CredentialSuspended if scope_kind == "cred" else PairSuspended
                )
                assert block.until_us == max(old_until, now + rule.base_us)
                expected_after[stream] = Status.SUSPENDED
            elif outcome in TOLERATED_ONCE and status is Status.AVAILABLE:
                # A first transient failure of a healthy scope is tolerated (G6).
                assert len(decided) == 1
                tolerated = decided[0]
                assert isinstance(tolerated, FailureTolerated) and tolerated.strikes == 1
            else:
                level = old_level + 1 if status is not Status.AVAILABLE else 0
                duration = min(rule.base_us * rule.factor**level, rule.max_us)
                if status is Status.SUSPENDED:
                    assert decided == ()  # the longer suspension already covers it (A2)
                    expected_after[stream] = Status.SUSPENDED
                else:
                    assert len(decided) == 1
                    block = decided[0]
                    expected_cls = CooldownExtended if status is Status.COOLING else CooldownStarted
                    assert type(block) is expected_cls
                    assert isinstance(block, CooldownStarted | CooldownExtended)
                    assert block.until_us == max(old_until, now + duration)  # A2
                    assert block.until_us >= old_until
                    assert block.level == level
                    expected_after[stream] = Status.COOLING
            assert all(e.stream_id == stream for e in decided)
    for stream, expected in expected_after.items():
        scope = world.state.pairs.get(stream) or world.state.creds.get(stream)
        assert status_at(scope, now) is expected, stream
    replay = fold(world.log)
    for stream in expected_after:
        original = world.state.pairs.get(stream) or world.state.creds.get(stream)
        again = replay.pairs.get(stream) or replay.creds.get(stream)
        assert status_at(original, now) is status_at(again, now)  # D2: replay agrees
