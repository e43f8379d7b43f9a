"""Evidence that proves nothing changes nothing (G6): an outcome that is not a real upstream
answer of the pair never keeps a half-open probe slot, never clears and never extends."""

from __future__ import annotations

import pytest

from routeledger.core.routing import FailureClass
from routeledger.core.routing.events import (
    AttemptRouted,
    CooldownCleared,
    ProbeAllowed,
    ProbeReleased,
    RoutingEvent,
    WaitDecided,
)
from routeledger.core.routing.failures import Evidence
from routeledger.core.routing.state import Status, status_at

from .support import S, World, only, policy, target


def _half_open() -> World:
    """A one-pair route whose pair cooled for 1 s and is now half-open."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start("r0")
    world.next("r0")
    world.fail(FailureClass.RATE_LIMITED, "r0", hint_us=1 * S)
    world.advance(1 * S)
    assert status_at(world.state.pairs["pair:k:m"], world.now) is Status.HALF_OPEN
    return world


def _probe(world: World, request: str) -> AttemptRouted:
    world.start(request)
    events = world.next(request)
    routed = only(events, AttemptRouted)
    assert len(routed) == 1 and isinstance(routed[0], AttemptRouted) and routed[0].probe, events
    assert only(events, ProbeAllowed)
    return routed[0]


def _scope_fields(world: World) -> tuple[object, ...]:
    pair = world.state.pairs["pair:k:m"]
    return (pair.until_us, pair.level, pair.needs_probe, pair.reason)


@pytest.mark.parametrize("evidence", [Evidence.LOCAL_COUNT, Evidence.CACHE_HIT])
def test_a_local_count_or_cache_hit_frees_the_probe_slot_and_heals_nothing(
    evidence: Evidence,
) -> None:
    """A probe answered by a local count or a cache hit releases its slot without clearing or
    extending anything, so the next real request probes at once instead of waiting."""
    world = _half_open()
    _probe(world, "count")
    before = _scope_fields(world)
    decided = world.succeed("count", evidence=evidence)[1:]
    assert [type(e) for e in decided] == [ProbeReleased]
    assert not only(decided, CooldownCleared)
    assert _scope_fields(world) == before
    assert status_at(world.state.pairs["pair:k:m"], world.now) is Status.HALF_OPEN
    real = _probe(world, "real")  # not a WaitDecided until the probe timeout
    assert real.credential_id == "k"
    cleared = world.succeed("real")[1:]
    assert [type(e) for e in cleared] == [CooldownCleared]


@pytest.mark.parametrize(
    "failure",
    [
        FailureClass.CALLER_CANCELLED,
        FailureClass.GATEWAY_POOL_EXHAUSTED,
        FailureClass.INVALID_REQUEST,
        FailureClass.CONTENT_FILTERED,
    ],
)
def test_a_probe_that_blames_no_upstream_frees_its_slot(failure: FailureClass) -> None:
    """A probe ended by the caller or the gateway itself (nothing said about the upstream)
    releases its slot; the pair stays half-open for the next real request."""
    world = _half_open()
    _probe(world, "left")
    before = _scope_fields(world)
    decided = world.fail(failure, "left")[1:]
    assert [type(e) for e in decided] == [ProbeReleased]
    assert _scope_fields(world) == before
    assert _probe(world, "next").probe


def test_only_the_probe_holder_releases_the_slot() -> None:
    """An outcome of an attempt that does not hold the probe slot releases nothing: the
    probe in flight keeps it and other requests wait for it."""
    world = World(policy({"chat": [target("k/m", "k/n")]}))
    world.start("r0")
    world.next("r0")
    world.fail(FailureClass.RATE_LIMITED, "r0", hint_us=1 * S)
    world.advance(1 * S)
    world.start("other")
    routed = only(world.next("other"), AttemptRouted)[0]
    assert isinstance(routed, AttemptRouted) and routed.upstream_model == "m" and routed.probe
    world.start("cached")
    served_by_n = only(world.next("cached"), AttemptRouted)[0]
    assert isinstance(served_by_n, AttemptRouted) and served_by_n.upstream_model == "n"
    assert [type(e) for e in world.succeed("cached", evidence=Evidence.CACHE_HIT)[1:]] == []
    world.start("waiting")
    events: tuple[RoutingEvent, ...] = world.next("waiting")
    routed_next = only(events, AttemptRouted)
    assert routed_next and isinstance(routed_next[0], AttemptRouted)
    assert routed_next[0].upstream_model == "n" and not only(events, WaitDecided)
    assert world.state.pairs["pair:k:m"].probe_attempt_id == routed.attempt_id
