"""The per-pool readiness index: O(log n) picks that decide exactly what the scan decides (D3)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.core.errors import InvariantViolation
from routeledger.core.routing import (
    FailureClass,
    Phase,
    RequestLimits,
    RouteNext,
    StartRequest,
    Strategy,
    check_invariants,
    decide_next,
    decide_start,
    fold,
    initial,
)
from routeledger.core.routing import decide as decide_module
from routeledger.core.routing.events import (
    AttemptFailed,
    AttemptRouted,
    Clamp,
    Continuation,
    CooldownStarted,
    CredentialSuspended,
    ExhaustionPredicted,
    ProbeAllowed,
    RoutingEvent,
    SkipReason,
)
from routeledger.core.routing.index import (
    TREE_MIN_MEMBERS,
    TREE_SCAN_FIRST,
    ReadyTree,
    first_ready,
)
from routeledger.core.routing.state import reindex
from routeledger.core.usability import CredentialUsability, UnusableReason

from .support import T0, S, World, policy, target

SIZE = TREE_MIN_MEMBERS + 8


@given(st.lists(st.integers(0, 50), min_size=1, max_size=70), st.data())
def test_first_ready_matches_a_linear_search(values: list[int], data: st.DataObject) -> None:
    """Index: first_ready(lo, now) is the first leaf >= lo whose value <= now, as a scan finds it."""
    tree = ReadyTree(len(values))
    for index, value in enumerate(values):
        tree.set(index, value)
    lo = data.draw(st.integers(0, len(values) - 1))
    now = data.draw(st.integers(0, 50))
    expected = next((i for i in range(lo, len(values)) if values[i] <= now), -1)
    assert first_ready(tree, lo, now) == expected


def _pool_policy(strategy: Strategy, owners: dict[str, str]) -> object:
    members = [f"c{i}/m{i % 3}" for i in range(SIZE)]
    return policy(
        {"chat": [target(*members, strategy=strategy), target("spare/m0")]},
        owners=owners,
        no_streaming=["m2"],
        windows={"m1": 100},
        limits=RequestLimits(attempts_max=4),
    )


@st.composite
def pool_situations(draw: st.DrawFn) -> tuple[object, list[RoutingEvent], dict[str, object]]:
    strategy = draw(st.sampled_from(Strategy))
    owners = {f"c{i}": "someone-else" for i in draw(st.sets(st.integers(0, SIZE - 1), max_size=4))}
    pol = _pool_policy(strategy, owners)
    events: list[RoutingEvent] = []
    versions: dict[str, int] = {}

    def stamp(stream: str) -> int:
        versions[stream] = versions.get(stream, 0) + 1
        return versions[stream]

    common = {"request_id": "w", "attempt_id": "w"}
    for i in sorted(draw(st.sets(st.integers(0, SIZE - 1), max_size=SIZE))):
        stream = f"pair:c{i}:m{i % 3}"
        until = T0 + draw(st.sampled_from([-5 * S, 1, 3 * S, 9 * S]))
        events.append(
            CooldownStarted(
                stream_id=stream,
                version=stamp(stream),
                at_us=T0 - 10 * S,
                credential_id=f"c{i}",
                upstream_model=f"m{i % 3}",
                until_us=until,
                reason=FailureClass.RATE_LIMITED,
                level=0,
                hint_us=None,
                clamp=Clamp.NO_HINT,
                **common,
            )
        )
        if until < T0 and draw(st.booleans()):
            events.append(
                ProbeAllowed(
                    stream_id=stream,
                    version=stamp(stream),
                    at_us=T0 - S,
                    credential_id=f"c{i}",
                    upstream_model=f"m{i % 3}",
                    until_us=T0 + draw(st.sampled_from([-1, 2 * S])),
                    **common,
                )
            )
    for i in sorted(draw(st.sets(st.integers(0, SIZE - 1), max_size=SIZE // 2))):
        stream = f"pair:c{i}:m{i % 3}"  # announced limits: predicted exhausted until a reset
        events.append(
            ExhaustionPredicted(
                stream_id=stream,
                version=stamp(stream),
                at_us=T0 - S,
                credential_id=f"c{i}",
                upstream_model=f"m{i % 3}",
                until_us=T0 + draw(st.sampled_from([-S, 1, 2 * S, 9 * S])),
                remaining_requests=0,
                remaining_tokens=None,
                **common,
            )
        )
    for i in sorted(draw(st.sets(st.integers(0, SIZE - 1), max_size=3))):
        stream = f"cred:c{i}"
        events.append(
            CredentialSuspended(
                stream_id=stream,
                version=stamp(stream),
                at_us=T0 - S,
                credential_id=f"c{i}",
                upstream_model=None,
                until_us=T0 + 4 * S,
                reason=FailureClass.AUTH_ERROR,
                **common,
            )
        )
    request = {
        "scan_first": draw(st.sampled_from([0, 1, 3, TREE_SCAN_FIRST])),
        "seed": draw(st.integers(0, 1000)),
        "stream": draw(st.booleans()),
        "cursor": draw(st.integers(0, SIZE - 1)),
        "unresolved": draw(st.sets(st.integers(0, SIZE - 1), max_size=5)),
        "missing": draw(st.sets(st.integers(0, SIZE - 1), max_size=3)),
        "input_tokens": draw(st.sampled_from([0, 500])),
        "failed": draw(st.none() | st.integers(0, SIZE - 1)),
    }
    return pol, events, request


@given(pool_situations())
def test_indexed_and_scanning_states_decide_the_same(
    situation: tuple[object, list[RoutingEvent], dict[str, object]],
) -> None:
    """D3: indexed, scanning or re-indexed after the fact, the next-step decision is the same event."""
    pol, events, request = situation
    credentials = {
        f"c{i}": CredentialUsability(
            credential_id=f"c{i}",
            unusable=UnusableReason.REVOKED if i in request["unresolved"] else None,  # type: ignore[operator]
            resolved_models=None,
            validates_model_names=False,
        )
        for i in range(SIZE)
        if i not in request["missing"]  # type: ignore[operator]
    }
    credentials["spare"] = CredentialUsability(
        credential_id="spare", unusable=None, resolved_models=None, validates_model_names=False
    )
    decisions = []
    saved = decide_module.TREE_SCAN_FIRST
    decide_module.TREE_SCAN_FIRST = request["scan_first"]  # type: ignore[assignment]
    try:
        decisions.extend(_both(pol, events, request, credentials))
    finally:
        decide_module.TREE_SCAN_FIRST = saved
    assert decisions[0] == decisions[1] == decisions[2]


def _both(
    pol: Any,
    events: list[RoutingEvent],
    request: dict[str, Any],
    credentials: dict[str, CredentialUsability],
) -> list[tuple[RoutingEvent, ...]]:
    """The decision of an indexed and of an unindexed state over the same log."""
    decisions = []
    for mode in ("indexed", "scanning", "reindexed"):
        state = initial(pol) if mode == "indexed" else initial()
        assert bool(state.trees) is (mode == "indexed")
        fold(events, state)
        if mode == "reindexed":  # e.g. restored from a snapshot taken under another policy object
            state = reindex(state, pol)
            assert state.indexed_for is pol
        state.cursors["routes.chat.chain[0]"] = request["cursor"]
        start = StartRequest(
            request_id="r",
            route="chat",
            caller_scope="me",
            seed=request["seed"],
            stream=request["stream"],
            input_tokens=request["input_tokens"],
        )
        fold(decide_start(pol, state, start, now_us=T0), state)
        if request["failed"] is not None:
            fold(_failed_attempt(request["failed"]), state)
        command = RouteNext(request_id="r", attempt_id="a")
        decisions.append(
            decide_next(pol, state, command, now_us=T0, credentials=credentials).events
        )
    return decisions


def _failed_attempt(member: int) -> list[RoutingEvent]:
    """Request r already tried member ``member`` and failed (no retry left for it)."""
    common = {
        "request_id": "r",
        "attempt_id": "a0",
        "credential_id": f"c{member}",
        "upstream_model": f"m{member % 3}",
    }
    return [
        AttemptRouted(
            stream_id="request:r",
            version=2,
            at_us=T0,
            attempt_no=1,
            owner_scope="me",
            chain_position=0,
            target_path="routes.chat.chain[0]",
            member_index=member,
            probe=False,
            continuation=Continuation.FRESH,
            delivered_chars=0,
            skipped=(),
            skipped_more=0,
            **common,
        ),
        AttemptFailed(
            stream_id="request:r",
            version=3,
            at_us=T0,
            failure=FailureClass.UNKNOWN,
            phase=Phase.BEFORE_RESPONSE,
            delivered_chars=0,
            hint_us=None,
            **common,
        ),
    ]


def test_long_blocked_run_is_jumped_and_counted() -> None:
    """Index: a pick behind a long blocked run records 16 skips and counts the rest, like the scan."""
    members = [f"c{i}/m" for i in range(100)]
    world = World(policy({"chat": [target(*members)]}))
    world.state = initial(world.policy)
    blocks = [
        CooldownStarted(
            stream_id=f"pair:c{i}:m",
            version=1,
            at_us=T0,
            credential_id=f"c{i}",
            upstream_model="m",
            request_id="w",
            attempt_id="w",
            until_us=T0 + S,
            reason=FailureClass.RATE_LIMITED,
            level=0,
            hint_us=None,
            clamp=Clamp.NO_HINT,
        )
        for i in range(90)
    ]
    world.apply(blocks)
    world.start()
    routed = world.next()[0]
    assert isinstance(routed, AttemptRouted)
    assert (routed.credential_id, len(routed.skipped), routed.skipped_more) == ("c90", 16, 74)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_fully_blocked_indexed_pool_falls_back_to_the_wait_scan(strategy: Strategy) -> None:
    """Index: when nothing in an indexed pool is ready, the scan decides the wait (I1.3)."""
    members = [f"c{i}/m" for i in range(SIZE)]
    world = World(policy({"chat": [target(*members, strategy=strategy)]}))
    world.state = initial(world.policy)
    world.apply(
        [
            CooldownStarted(
                stream_id=f"pair:c{i}:m",
                version=1,
                at_us=T0,
                credential_id=f"c{i}",
                upstream_model="m",
                request_id="w",
                attempt_id="w",
                until_us=T0 + (i + 1) * S,
                reason=FailureClass.RATE_LIMITED,
                level=0,
                hint_us=None,
                clamp=Clamp.NO_HINT,
            )
            for i in range(SIZE)
        ]
    )
    world.start()
    wait = world.next()[0]
    assert wait.until_us == T0 + S  # type: ignore[attr-defined]


CASES = {
    "not provisioned": ({"missing": {0}}, SkipReason.NOT_PROVISIONED),
    "owner scope": ({"owners": {"c0": "other"}}, SkipReason.OUT_OF_SCOPE),
    "no streaming": ({"member0": "c0/m2", "stream": True}, SkipReason.NO_STREAMING),
    "context too small": ({"member0": "c0/m1", "input_tokens": 500}, SkipReason.CONTEXT_TOO_SMALL),
    "already failed": ({"failed": 0}, SkipReason.ALREADY_FAILED),
    "revoked": ({"revoked": {0}}, SkipReason.REVOKED),
}


@pytest.mark.parametrize(("case", "expected"), list(CASES.values()), ids=list(CASES))
def test_indexed_pick_records_the_scan_reason(
    case: dict[str, object], expected: SkipReason, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D3: the index passes over a ready but unusable member with the same reason the scan records."""
    monkeypatch.setattr(decide_module, "TREE_SCAN_FIRST", 0)
    first = str(case.get("member0", "c0/m0"))
    members = [first, *(f"c{i}/m0" for i in range(1, SIZE))]
    pol = policy(
        {"chat": [target(*members)]},
        owners=case.get("owners"),  # type: ignore[arg-type]
        no_streaming=["m2"],
        windows={"m1": 100},
    )
    missing = case.get("missing", set())
    credentials = {
        f"c{i}": CredentialUsability(
            credential_id=f"c{i}",
            unusable=UnusableReason.REVOKED if i in case.get("revoked", set()) else None,
            resolved_models=None,
            validates_model_names=False,
        )
        for i in range(SIZE)
        if i not in missing  # type: ignore[operator]
    }
    decisions = []
    for state in (initial(pol), initial()):
        start = StartRequest(
            request_id="r",
            route="chat",
            caller_scope="me",
            stream=bool(case.get("stream", False)),
            input_tokens=int(case.get("input_tokens", 0)),  # type: ignore[call-overload]
        )
        fold(decide_start(pol, state, start, now_us=T0), state)
        if "failed" in case:
            fold(_failed_attempt(0), state)
        decisions.append(
            decide_next(
                pol,
                state,
                RouteNext(request_id="r", attempt_id="a"),
                now_us=T0,
                credentials=credentials,
            ).events
        )
    assert decisions[0] == decisions[1]
    assert decisions[0][0].skipped[0].reason is expected  # type: ignore[attr-defined]


def test_stale_index_is_an_invariant_violation() -> None:
    """D3: check_invariants compares every index leaf with the pair and credential it is fed by."""
    members = [f"c{i}/m" for i in range(SIZE)]
    pol = policy({"chat": [target(*members)]})
    state = initial(pol)
    check_invariants(state)
    tree = state.trees["routes.chat.chain[0]"]
    tree.set(3, T0)
    with pytest.raises(InvariantViolation, match="D3"):
        check_invariants(state)
