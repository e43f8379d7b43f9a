"""Token counts (G6 item 6): the pair a count is for is read from the state without deciding
anything, and the count's record changes no state."""

from __future__ import annotations

import pytest

from routeledger.core.errors import CommandError
from routeledger.core.routing import FailureClass
from routeledger.core.routing.counting import RecordCount, count_target, decide_count
from routeledger.core.routing.failures import Evidence
from routeledger.core.routing.state import Status, status_at

from .support import S, World, policy, target
from .test_rules import _cool


def test_a_count_is_for_the_member_a_request_would_use_and_takes_no_probe() -> None:
    """With the first member cooling the count is for the second; once the first is half-open
    the count names it but takes no probe slot (the next request still probes it)."""
    world = World(policy({"chat": [target("k1/m", "k2/m")]}))
    _cool(world, "x", FailureClass.RATE_LIMITED)
    found = count_target(
        world.policy, world.state, route="chat", caller_scope="u", now_us=world.now
    )
    assert found is not None and (found.credential_id, found.upstream_model) == ("k2", "m")
    world.advance(2 * S)
    found = count_target(
        world.policy, world.state, route="chat", caller_scope="u", now_us=world.now
    )
    assert found is not None and found.credential_id == "k1"
    assert status_at(world.state.pairs["pair:k1:m"], world.now) is Status.HALF_OPEN
    assert (
        count_target(world.policy, world.state, route="nope", caller_scope="u", now_us=world.now)
        is None
    )


def test_with_nothing_selectable_the_count_names_the_first_member() -> None:
    """Every member cooling: the count is for the route's first member (nothing is sent to it)."""
    world = World(policy({"chat": [target("k1/m")]}))
    _cool(world, "x", FailureClass.RATE_LIMITED)
    found = count_target(
        world.policy, world.state, route="chat", caller_scope="u", now_us=world.now
    )
    assert found is not None and found.credential_id == "k1"


def test_a_recorded_count_changes_no_state_and_refuses_bad_fields() -> None:
    """TokensCounted folds to nothing; a negative count, an empty id or a cache hit is refused."""
    world = World(policy({"chat": [target("k1/m")]}))
    found = count_target(
        world.policy, world.state, route="chat", caller_scope="u", now_us=world.now
    )
    assert found is not None
    (counted,) = decide_count(
        RecordCount(count_id="c1", target=found, input_tokens=42), now_us=world.now
    )
    assert (counted.stream_id, counted.input_tokens, counted.evidence) == (
        "count:c1",
        42,
        Evidence.LOCAL_COUNT,
    )
    before = (dict(world.state.pairs), dict(world.state.requests), dict(world.state.in_flight))
    world.apply([counted])
    assert (
        dict(world.state.pairs),
        dict(world.state.requests),
        dict(world.state.in_flight),
    ) == before
    for bad, field in (
        (RecordCount(count_id="c2", target=found, input_tokens=-1), "input_tokens"),
        (RecordCount(count_id="", target=found, input_tokens=1), "count_id"),
        (RecordCount(count_id="c 3", target=found, input_tokens=1), "count_id"),
        (
            RecordCount(count_id="c4", target=found, input_tokens=1, evidence=Evidence.CACHE_HIT),
            "evidence",
        ),
    ):
        with pytest.raises(CommandError) as refused:
            decide_count(bad, now_us=world.now)
        assert refused.value.field == field


def test_a_route_with_no_member_for_the_caller_has_no_count_target() -> None:
    """Every member belongs to another owner: there is no pair to count for."""
    world = World(policy({"chat": [target("alice-key/m")]}, owners={"alice-key": "alice"}))
    assert (
        count_target(world.policy, world.state, route="chat", caller_scope="bob", now_us=world.now)
        is None
    )
