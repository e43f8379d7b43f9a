"""Projections: pure folds, rebuildable from scratch, resumable, equal to recomputation from the raw log (D2)."""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeledger.adapters.providers.scrub import DEFAULT_SCRUBBER
from routeledger.adapters.store.canonical import canonical_bytes
from routeledger.adapters.store.eventstore import EventStore, open_store
from routeledger.core.budget import events as bev
from routeledger.core.fold import Recorded, fold_log
from routeledger.core.routing import events as rev
from routeledger.core.routing.state import Status, status_at
from routeledger.projections import (
    AvailabilityBoard,
    BudgetBoard,
    Metrics,
    RequestTimeline,
    rebuild,
)
from tests.projections.workload import ACCOUNT, SECRET, T0, build

FACTORIES = (AvailabilityBoard, BudgetBoard, RequestTimeline, Metrics)


@pytest.fixture(scope="module")
def log() -> Iterator[list[Recorded]]:
    """The recorded events of a 60-request workload."""
    with open_store("memory://") as store:
        build(store, requests=60, seed=11)
        yield list(store.read_all(0))


def test_availability_board_equals_the_routing_state_at_every_instant(log: list[Recorded]) -> None:
    """D2: every scope's status on the board equals the routing fold's status_at, at many instants."""
    board = rebuild(AvailabilityBoard, log)
    folded = fold_log(log)
    assert board.position == log[-1].position
    end = max(r.event.at_us for r in log)
    for now in range(T0, end + 3_600_000_000, 7_000_000):
        for row in board.rows(now):
            stream = (
                f"pair:{row.credential_id}:{row.upstream_model}"
                if row.upstream_model is not None
                else f"cred:{row.credential_id}"
            )
            table = folded.routing.pairs if row.upstream_model else folded.routing.creds
            assert row.status is status_at(table.get(stream), now)
    routed = {
        (e.event.credential_id, e.event.upstream_model)
        for e in log
        if isinstance(e.event, rev.AttemptRouted)
    }
    on_board = {(r.credential_id, r.upstream_model) for r in board.rows(end) if r.upstream_model}
    assert routed <= on_board


def test_availability_rows_say_why_until_when_and_since_which_event(log: list[Recorded]) -> None:
    """A3: a cooling row carries the failure class, the clamp, its deadline and the event that set it."""
    board = rebuild(AvailabilityBoard, log)
    blocks = [r for r in log if isinstance(r.event, rev.CooldownStarted | rev.CooldownExtended)]
    last = blocks[-1]
    evt = last.event
    assert isinstance(evt, rev.CooldownStarted | rev.CooldownExtended)
    rows = {(r.credential_id, r.upstream_model): r for r in board.rows(evt.at_us)}
    row = rows[(evt.credential_id, evt.upstream_model)]
    assert row.status is Status.COOLING
    assert (row.until_us, row.reason, row.clamp, row.since_position) == (
        evt.until_us,
        evt.reason,
        evt.clamp,
        last.position,
    )
    assert row.as_json()["status"] == "cooling"
    later = {(r.credential_id, r.upstream_model): r for r in board.rows(evt.until_us)}
    assert later[(evt.credential_id, evt.upstream_model)].status in (
        Status.HALF_OPEN,
        Status.PROBING,
        Status.AVAILABLE,
    )


def test_availability_board_covers_suspensions_probes_and_credential_scopes() -> None:
    """A4: suspended, probing, half-open and cleared scopes, pair-wide and credential-wide, show as such."""
    from routeledger.core.routing.failures import FailureClass

    common = {"request_id": "r", "attempt_id": "a"}
    events = [
        rev.CredentialSuspended(
            stream_id="cred:c",
            version=1,
            at_us=100,
            credential_id="c",
            upstream_model=None,
            until_us=200,
            reason=FailureClass.AUTH_ERROR,
            **common,
        ),
        rev.PairSuspended(
            stream_id="pair:c:m",
            version=1,
            at_us=100,
            credential_id="c",
            upstream_model="m",
            until_us=300,
            reason=FailureClass.MODEL_NOT_SUPPORTED,
            **common,
        ),
        rev.ProbeAllowed(
            stream_id="pair:c:m",
            version=2,
            at_us=300,
            credential_id="c",
            upstream_model="m",
            until_us=400,
            **common,
        ),
        rev.CooldownCleared(
            stream_id="cred:c",
            version=2,
            at_us=350,
            credential_id="c",
            upstream_model=None,
            **common,
        ),
    ]
    board = AvailabilityBoard()
    recorded = [Recorded(position, evt) for position, evt in enumerate(events, start=1)]
    board.catch_up(recorded[:2])
    early = {(r.credential_id, r.upstream_model): r for r in board.rows(150)}
    assert early[("c", None)].status is Status.SUSPENDED and early[("c", None)].until_us == 200
    assert early[("c", "m")].status is Status.SUSPENDED and early[("c", "m")].clamp is None
    assert board.blocked_at(150) == 2
    board.catch_up(recorded[2:])
    at = {
        now: {(r.credential_id, r.upstream_model): r for r in board.rows(now)} for now in (320, 500)
    }
    assert at[320][("c", "m")].status is Status.PROBING and at[320][("c", "m")].until_us == 400
    assert (
        at[320][("c", None)].status is Status.AVAILABLE and at[320][("c", None)].since_position == 4
    )
    assert at[500][("c", "m")].status is Status.HALF_OPEN and at[500][("c", "m")].until_us is None
    assert board.blocked_at(500) == 0
    assert [r.upstream_model for r in board.rows(0)] == [None, "m"]


def test_budget_board_equals_the_ledger(log: list[Recorded]) -> None:
    """L1/D2: balances and open holds on the board equal the ledger folded from the same log."""
    board = rebuild(BudgetBoard, log)
    ledger = fold_log(log).budget
    (row,) = board.rows(T0)
    account = ledger.accounts[ACCOUNT]
    assert (row.limit, row.spent, row.reserved, row.lifetime_spent, row.overage) == (
        account.limit,
        account.spent,
        account.reserved,
        account.lifetime_spent,
        account.overage,
    )
    assert {h.hold_id for h in row.holds} == set(ledger.open_holds)
    assert row.reserved == sum(h.amount for h in row.holds)
    assert row.available == row.limit - row.spent - row.reserved
    assert row.as_json()["holds"]


def test_budget_board_ages_holds_and_follows_admin_changes() -> None:
    """T2/T3: hold ages come from now_us; limit changes, corrections and rollovers move the board."""
    from routeledger.core.budget.values import AccountScope, Leg, PeriodSpec, Unit, Usage

    legs = (Leg(account_id="a", amount=5),)
    events = [
        bev.AccountOpened(
            stream_id="account:a",
            version=1,
            at_us=10,
            account_id="a",
            command_id="c",
            command_digest="d",
            scope=AccountScope.KEY,
            unit=Unit.TOKENS,
            limit=100,
            period=PeriodSpec(),
            period_start_us=0,
            period_end_us=1000,
        ),
        bev.LimitChanged(
            stream_id="account:a",
            version=2,
            at_us=11,
            account_id="a",
            command_id="c2",
            command_digest="d",
            limit=200,
            previous_limit=100,
        ),
        bev.SpendCorrected(
            stream_id="account:a",
            version=3,
            at_us=12,
            account_id="a",
            command_id="c3",
            command_digest="d",
            delta=7,
            reason="fix",
        ),
        bev.PeriodRolledOver(
            stream_id="account:a",
            version=4,
            at_us=13,
            account_id="a",
            closed_spent=7,
            period_start_us=1000,
            period_end_us=2000,
        ),
        bev.HoldPlaced(
            stream_id="hold:h",
            version=1,
            at_us=20,
            hold_id="h",
            legs=legs,
            estimate=Usage(tokens=5),
            ttl_us=50,
            expires_at_us=70,
        ),
        bev.HoldAdjusted(
            stream_id="hold:h",
            version=2,
            at_us=21,
            hold_id="h",
            command_id="c4",
            command_digest="d",
            estimate=Usage(tokens=6),
            legs=(Leg(account_id="a", amount=6),),
        ),
        bev.AmountReserved(
            stream_id="account:a", version=5, at_us=21, account_id="a", hold_id="h", amount=6
        ),
        bev.HoldExpired(stream_id="hold:h", version=3, at_us=70, hold_id="h", expires_at_us=70),
        bev.AmountReleased(
            stream_id="account:a", version=6, at_us=70, account_id="a", hold_id="h", amount=6
        ),
    ]
    board = BudgetBoard()
    for position, evt in enumerate(events[:7], start=1):
        board.apply(Recorded(position, evt))
    (row,) = board.rows(45)
    assert (row.limit, row.spent, row.lifetime_spent, row.reserved, row.period_start_us) == (
        200,
        0,
        7,
        6,
        1000,
    )
    assert [(h.hold_id, h.amount, h.age_us) for h in row.holds] == [("h", 6, 25)]
    for position, evt in enumerate(events[7:], start=8):
        board.apply(Recorded(position, evt))
    (row,) = board.rows(80)
    assert row.holds == () and row.reserved == 0 and board.position == 9


def test_timeline_equals_the_request_events_in_log_order(log: list[Recorded]) -> None:
    """D2: a request's timeline lists exactly its events (and its hold's) in log order."""
    timeline = rebuild(RequestTimeline, log)
    for request_id in ("req-003", "req-010", "req-059"):
        entries = timeline.entries(request_id)
        assert entries is not None
        expected = [
            r.position
            for r in log
            if getattr(r.event, "request_id", None) == request_id
            or getattr(r.event, "hold_id", None) == request_id
        ]
        positions = sorted({e.position for e in entries})
        mine = [p for p in expected if p in set(positions)]
        assert positions == mine
        kinds = [e.kind for e in entries]
        assert kinds[0] == "hold_placed" and "received" in kinds
    assert timeline.entries("nope") is None


def test_timeline_scrubs_failure_details(log: list[Recorded]) -> None:
    """E1: failure details in a timeline never carry a secret, even if the log did."""
    timeline = rebuild(lambda: RequestTimeline(scrub=DEFAULT_SCRUBBER), log)
    failed = [e for entries in timeline.timelines.values() for e in entries if e.kind == "failed"]
    assert failed
    for entry in failed:
        detail = dict(entry.details)["detail"]
        assert SECRET not in str(detail) and "REDACTED" in str(detail)
        assert entry.as_json()["kind"] == "failed"


def test_single_request_timeline_keeps_only_that_request(log: list[Recorded]) -> None:
    """A filtered timeline equals the unfiltered one for its request and holds nothing else."""
    full = rebuild(RequestTimeline, log)
    one = rebuild(lambda: RequestTimeline("req-004"), log)
    assert list(one.timelines) == ["req-004"]
    assert one.entries("req-004") == full.entries("req-004")


def test_metrics_count_what_the_log_holds(log: list[Recorded]) -> None:
    """D2: the counters equal counts over the raw log; the boards equal the fold's."""
    metrics = rebuild(Metrics, log)
    attempts = Counter(
        (r.event.credential_id, r.event.upstream_model)
        for r in log
        if isinstance(r.event, rev.AttemptRouted)
    )
    failures = Counter(
        (r.event.credential_id, r.event.upstream_model, r.event.failure.value)
        for r in log
        if isinstance(r.event, rev.AttemptFailed)
    )
    received = sum(isinstance(r.event, rev.RequestReceived) for r in log)
    assert metrics.attempts == dict(attempts) and metrics.failures == dict(failures)
    assert (metrics.events, metrics.requests) == (len(log), received)
    assert len(metrics.budget.holds) == len(fold_log(log).budget.open_holds)


@settings(max_examples=25)
@given(st.data())
def test_projections_resume_from_any_position(log: list[Recorded], data: st.DataObject) -> None:
    """D2: a projection restored at position k (pickled, as after a restart) and caught up equals one rebuilt from scratch."""
    k = data.draw(st.integers(0, len(log)))
    for factory in FACTORIES:
        scratch = rebuild(factory, log)
        early = rebuild(factory, log[:k])
        resumed = pickle.loads(pickle.dumps(early))
        assert resumed.position == (log[k - 1].position if k else 0)
        resumed.catch_up(r for r in log if r.position > resumed.position)
        assert canonical_bytes(resumed) == canonical_bytes(scratch)


def test_projections_rebuild_alike_on_every_backend(store_url: str) -> None:
    """D2: each projection rebuilt from a store equals the same projection over the events appended, on every backend."""
    with open_store(store_url) as store:
        build(store, requests=12, seed=3)
        first = [canonical_bytes(rebuild(f, store.read_all(0))) for f in FACTORIES]
        again = [canonical_bytes(rebuild(f, store.read_all(0, page=7))) for f in FACTORIES]
        assert first == again
        resumed = rebuild(Metrics, store.read_all(0, page=5))
        assert resumed.catch_up(store.read_all(resumed.position)) == 0


def _store_with_workload() -> EventStore:  # pragma: no cover - helper kept for interactive use
    store = open_store("memory://")
    build(store)
    return store
