"""Timeline entries for every kind of event a request can have, and canonical hashing in bounded memory."""

from __future__ import annotations

import hashlib

import pytest

from routeledger.adapters.audit.whatif import what_if
from routeledger.adapters.store import canonical
from routeledger.adapters.store.canonical import canonical_bytes, digest, state_hash
from routeledger.adapters.store.eventstore import open_store
from routeledger.core.budget import events as bev
from routeledger.core.budget.values import Leg, Rejection, RejectionReason, Usage
from routeledger.core.fold import Folded, Recorded, fold_log
from routeledger.core.routing import events as rev
from routeledger.core.routing.commands import RouteNext, StartRequest
from routeledger.core.routing.decide import decide_next, decide_start
from routeledger.projections import RequestTimeline
from tests.projections.workload import POLICY, T0, build


def test_hold_lifecycle_entries_are_all_linked_by_hold_id() -> None:
    """A hold rejected, adjusted, expired and booked late shows on the timeline of the request with its id."""
    legs = (Leg(account_id="a", amount=5),)
    events = [
        bev.HoldRejected(
            stream_id="hold:r1",
            version=1,
            at_us=1,
            hold_id="r1",
            account_ids=("a",),
            estimate=Usage(cost_micros=9),
            ttl_us=5,
            rejection=Rejection(reason=RejectionReason.BUDGET_EXCEEDED, account_id="a"),
        ),
        bev.HoldPlaced(
            stream_id="hold:r2",
            version=1,
            at_us=2,
            hold_id="r2",
            legs=legs,
            estimate=Usage(cost_micros=5),
            ttl_us=5,
            expires_at_us=7,
        ),
        bev.HoldAdjusted(
            stream_id="hold:r2",
            version=2,
            at_us=3,
            hold_id="r2",
            command_id="c",
            command_digest="d",
            estimate=Usage(cost_micros=6),
            legs=legs,
        ),
        bev.HoldExpired(stream_id="hold:r2", version=3, at_us=7, hold_id="r2", expires_at_us=7),
        bev.LateUsageBooked(
            stream_id="hold:r2",
            version=4,
            at_us=9,
            hold_id="r2",
            command_id="c2",
            command_digest="d",
            usage=Usage(cost_micros=4),
        ),
    ]
    timeline = RequestTimeline()
    timeline.catch_up(Recorded(p, e) for p, e in enumerate(events, start=1))
    r1 = timeline.entries("r1")
    r2 = timeline.entries("r2")
    assert r1 is not None and [e.kind for e in r1] == ["hold_rejected"]
    assert dict(r1[0].details)["rejection"] == "budget_exceeded"
    assert r2 is not None and [e.kind for e in r2] == [
        "hold_placed",
        "hold_adjusted",
        "hold_expired",
        "late_usage",
    ]
    assert dict(r2[-1].details)["cost_micros"] == 4


def test_degraded_requests_show_their_skips_and_what_if_counts_them() -> None:
    """I0: a request for an unknown route degrades; its timeline says so and what-if counts it as degraded."""
    with open_store("memory://") as store:
        build(store, requests=3)
        folded = fold_log(store.read_all(0))
        now = folded.at_us_max + 1
        start = decide_start(
            POLICY,
            folded.routing,
            StartRequest(request_id="lost", route="nowhere", caller_scope="s"),
            now_us=now,
        )
        store.append(start)
        folded = fold_log(store.read_all(0))
        store.append(
            decide_next(
                POLICY, folded.routing, RouteNext(request_id="lost", attempt_id="a"), now_us=now
            ).events
        )
        timeline = RequestTimeline("lost")
        timeline.catch_up(store.read_all(0))
        entries = timeline.entries("lost")
        assert entries is not None and [e.kind for e in entries] == ["received", "degraded"]
        report = what_if(store.read_all(0), POLICY)
        assert report.recorded.degraded == 1 == report.what_if.degraded


def test_timeline_sampling_is_deterministic() -> None:
    """A sampled timeline keeps the same requests in every process (CRC-32 of the id)."""
    with open_store("memory://") as store:
        build(store, requests=40)
        sampled = RequestTimeline(sample=4)
        sampled.catch_up(store.read_all(0))
        full = RequestTimeline()
        full.catch_up(store.read_all(0))
    assert 0 < len(sampled.timelines) < len(full.timelines)
    for request_id, entries in sampled.timelines.items():
        assert full.timelines[request_id] == entries


def test_digest_streams_large_states_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """D1: hashing flushes to the hasher in pieces and gives the digest of the whole canonical bytes."""
    monkeypatch.setattr(canonical, "_FLUSH_PIECES", 8)
    with open_store("memory://") as store:
        build(store, requests=10)
        folded = fold_log(store.read_all(0))
    assert state_hash(folded) == hashlib.sha256(canonical_bytes(folded)).hexdigest()
    assert digest({"a": 1}) == hashlib.sha256(canonical_bytes({"a": 1})).hexdigest()
    assert state_hash(Folded()) == digest(Folded())


class _One:
    __slots__ = "only"

    def __init__(self) -> None:
        self.only = 1


def test_a_single_string_slot_is_encoded() -> None:
    """A class declaring ``__slots__ = "name"`` is walked by that slot."""
    assert b"only" in canonical_bytes(_One())


def test_received_and_routed_details_are_recorded() -> None:
    """The arrival and each attempt carry their parameters on the timeline."""
    with open_store("memory://") as store:
        build(store, requests=2)
        timeline = RequestTimeline("req-000")
        timeline.catch_up(store.read_all(0))
    entries = timeline.entries("req-000") or []
    received = next(e for e in entries if e.kind == "received")
    assert dict(received.details)["route"] == "chat" and received.at_us > T0
    assert any(isinstance(v, str) for _, v in received.details)
    assert rev.RequestReceived.TAG == "routeledger.RequestReceived"
