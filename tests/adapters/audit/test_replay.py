"""Verified replay and what-if replay over a real workload (D2, D3)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from routeledger.adapters.audit import replay as replay_module
from routeledger.adapters.audit.replay import verify_log
from routeledger.adapters.audit.whatif import what_if
from routeledger.adapters.store.canonical import state_hash
from routeledger.adapters.store.eventstore import EventStore, StoredSnapshot, open_store
from routeledger.adapters.store.snapshots import (
    SNAPSHOT_STREAM,
    SNAPSHOT_TOPIC,
    encode_snapshot,
    save_snapshot,
)
from routeledger.core.budget import decide as budget
from routeledger.core.budget import events as bev
from routeledger.core.budget.values import AccountScope, Unit
from routeledger.core.errors import DataError
from routeledger.core.events import Event
from routeledger.core.fold import Folded, Recorded, fold_log
from routeledger.core.routing.commands import StartRequest
from routeledger.core.routing.decide import decide_start
from routeledger.core.routing.policy import CredentialSpec, Member, ModelSpec, Policy, Route, Target
from routeledger.projections import AvailabilityBoard, BudgetBoard, Projection
from tests.backends import sqlite_url
from tests.projections.workload import POLICY, T0, build


@pytest.fixture
def store() -> Iterator[EventStore]:
    """A memory store holding a 30-request workload."""
    with open_store("memory://") as opened:
        build(opened, requests=30, seed=9)
        yield opened


class Flaky(Projection):
    """A projection that loses its count when restored: resuming it diverges."""

    __slots__ = ("applied",)

    def __init__(self) -> None:
        super().__init__()
        self.applied = 0

    def apply(self, recorded: Recorded) -> None:
        self.applied += 1
        super().apply(recorded)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Flaky, ())


#: ids of LateFlaky copies made by unpickling (kept outside the digested slots).
_RESTORED: set[int] = set()


class LateFlaky(Projection):
    """A projection whose restored copy diverges only near the end of the log."""

    __slots__ = ("mark",)

    def __init__(self) -> None:
        super().__init__()
        self.mark = False

    def apply(self, recorded: Recorded) -> None:
        if id(self) in _RESTORED and recorded.position > 150:
            self.mark = True
        super().apply(recorded)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_late, (self.position,))


def _restore_late(position: int) -> LateFlaky:
    copy = LateFlaky()
    copy.position = position
    _RESTORED.add(id(copy))
    return copy


class DoubleBudget(BudgetBoard):
    """A budget board that books every reservation twice."""

    __slots__ = ()

    def _on_reserved_twice(self, position: int, evt: bev.AmountReserved) -> None:
        self._account(evt, position).reserved += 2 * evt.amount

    _HANDLERS: ClassVar[dict[type[Event], Callable[[Any, int, Any], None]]] = {
        **BudgetBoard._HANDLERS,
        bev.AmountReserved: _on_reserved_twice,
    }


class StuckBoard(AvailabilityBoard):
    """An availability board that never sees a cooldown end."""

    __slots__ = ()

    _HANDLERS: ClassVar[dict[type[Event], Callable[[Any, int, Any], None]]] = {
        k: v for k, v in AvailabilityBoard._HANDLERS.items() if k.__name__ != "CooldownStarted"
    }


def test_verify_passes_on_a_real_log_with_snapshots(store: EventStore) -> None:
    """D2: snapshots at several positions + tail equal the full fold; projections resume alike."""
    records = list(store.read_all(0))
    for k in (1, len(records) // 3, len(records) - 1):
        save_snapshot(store, fold_log(records[:k]))
    ticks: list[tuple[int, int]] = []
    report = verify_log(store, progress=lambda p, last: ticks.append((p, last)))
    assert report.ok and report.snapshots_checked == 3
    assert report.state_hash == state_hash(fold_log(records))
    assert ticks[-1] == (records[-1].position, records[-1].position)
    assert report.as_json()["ok"] is True


def test_a_projection_that_does_not_resume_is_named_at_its_first_divergence(
    store: EventStore,
) -> None:
    """D2: a projection whose restored copy differs is reported at the first position after the resume point."""
    report = verify_log(store, projections={"flaky": Flaky})
    (mismatch,) = report.mismatches
    positions = [r.position for r in store.read_all(0)]
    assert mismatch.subject == "projection:flaky"
    assert mismatch.position == next(p for p in positions if p > report.resumed_at)


def test_projections_are_cross_checked_against_the_decision_state(store: EventStore) -> None:
    """D2: a board that disagrees with the state recomputed from the raw log is reported."""
    report = verify_log(store, projections={"budget": DoubleBudget, "availability": StuckBoard})
    subjects = {m.subject for m in report.mismatches}
    assert "cross-check:budget" in subjects
    assert "cross-check:availability" in subjects
    assert not report.ok


class Forgetful(BudgetBoard):
    """A budget board that never records a hold."""

    __slots__ = ()

    _HANDLERS: ClassVar[dict[type[Event], Callable[[Any, int, Any], None]]] = {
        **BudgetBoard._HANDLERS,
        bev.HoldPlaced: lambda self, position, evt: None,
        bev.HoldSettled: lambda self, position, evt: None,
        bev.HoldRefunded: lambda self, position, evt: None,
    }


def test_cross_check_notices_open_holds_that_differ(store: EventStore) -> None:
    """L1: a board whose open holds differ from the ledger's is reported."""
    report = verify_log(store, projections={"budget": Forgetful})
    assert any(m.detail.startswith("open holds") for m in report.mismatches)


def test_a_snapshot_that_lies_about_its_state_is_caught_by_its_tail(store: EventStore) -> None:
    """D2: a snapshot whose recorded hash matches the prefix but whose state differs fails snapshot + tail == full."""
    records = list(store.read_all(0))
    k = len(records) // 2
    honest = fold_log(records[:k])
    liar = fold_log(records[:k])
    liar.budget.accounts["acct-team"].limit += 1
    payload = encode_snapshot(liar, state_hash(honest))
    store.save_snapshot(StoredSnapshot(SNAPSHOT_STREAM, honest.position, SNAPSHOT_TOPIC, payload))
    report = verify_log(store)
    (mismatch,) = report.mismatches
    assert mismatch.subject == "snapshot" and mismatch.position == records[k].position


def test_a_snapshot_between_events_is_reported(store: EventStore) -> None:
    """A snapshot claiming a position where no event ends is a mismatch at that position."""
    with open_store("memory://") as other:
        build(other, requests=3)
        records = list(other.read_all(0))
        folded = fold_log(records[:4])
        folded.position = 10**6
        other.save_snapshot(
            StoredSnapshot(SNAPSHOT_STREAM, 2, SNAPSHOT_TOPIC, encode_snapshot(folded))
        )
        report = verify_log(other)
        assert [m.position for m in report.mismatches] == [2]


def test_lockstep_gives_up_after_its_limit(
    monkeypatch: pytest.MonkeyPatch, store: EventStore
) -> None:
    """Locating a divergence is bounded; past the limit the resume point is named."""
    monkeypatch.setattr(replay_module, "LOCKSTEP_EVENTS_MAX", 0)
    report = verify_log(store, projections={"flaky": Flaky})
    assert report.mismatches[0].position == report.resumed_at or report.mismatches[0].position > 0


def test_what_if_under_the_recorded_policy_reproduces_the_log(store: EventStore) -> None:
    """D3: re-deciding the recorded log under the same policy gives every request the same outcome and the same totals."""
    report = what_if(store.read_all(0), POLICY)
    assert report.recorded == report.what_if and report.what_if.unobserved == 0
    assert report.changed_count == 0 and report.changed == ()
    assert report.recorded.unfinished == 2  # the two requests left open end the same way


def test_what_if_counts_unobserved_pairs_and_degraded_routes(store: EventStore) -> None:
    """An attempt on a pair the log never observed is 'unobserved'; a request whose route vanished degrades (unless its caller never asked for a step)."""
    other = Policy(
        credentials=(CredentialSpec(id="new-key", provider="x"),),
        models=(ModelSpec(id="new-model"),),
        routes=(
            Route(
                alias="chat",
                chain=(Target(members=(Member(credential="new-key", model="new-model"),)),),
            ),
        ),
    )
    report = what_if(store.read_all(0), other, since_us=T0 + 10_000_000)
    assert report.what_if.unobserved == report.what_if.attempts > 0
    assert report.recorded.requests == report.what_if.requests < 30
    gone = Policy(
        credentials=other.credentials,
        models=other.models,
        routes=(attrs.evolve(other.routes[0], alias="elsewhere"),),
    )
    degraded = what_if(store.read_all(0), gone)
    # The last two requests never asked for a step (their caller left at entry): nor do they here.
    assert degraded.what_if.degraded == degraded.what_if.requests - 2
    assert degraded.what_if.unfinished == degraded.recorded.unfinished == 2
    assert (
        len(degraded.changed) <= 20
        and degraded.as_json()["changed_count"] == degraded.changed_count
    )


def test_what_if_unknown_request_starts_are_never_conflicts() -> None:
    """X1: re-deciding starts a fresh state, so a recorded request id never conflicts with itself."""
    from routeledger.core.routing import state as routing

    state = routing.initial(POLICY)
    events = decide_start(
        POLICY, state, StartRequest(request_id="r", route="chat", caller_scope="s"), now_us=T0
    )
    assert len(events) == 1


def _save_lying_snapshot(store: EventStore, records: list[Recorded], k: int) -> None:
    """Save a snapshot at position ``k`` recording the fold's hash over a state that differs."""
    honest = fold_log(records[:k])
    liar = fold_log(records[:k])
    liar.budget.accounts["acct-team"].limit += 1
    store.save_snapshot(
        StoredSnapshot(
            SNAPSHOT_STREAM,
            honest.position,
            SNAPSHOT_TOPIC,
            encode_snapshot(liar, state_hash(honest)),
        )
    )


def test_verify_reads_many_pages_and_bounds_the_lockstep(
    monkeypatch: pytest.MonkeyPatch, store: EventStore
) -> None:
    """Verification pages through the log; locating a divergence stops at its limit and names the resume point."""
    monkeypatch.setattr(replay_module, "PAGE_EVENTS", 7)
    monkeypatch.setattr(replay_module, "LOCKSTEP_EVENTS_MAX", 2)
    report = verify_log(store, projections={"late": LateFlaky})
    (mismatch,) = report.mismatches
    assert mismatch.position == report.resumed_at
    monkeypatch.setattr(replay_module, "LOCKSTEP_EVENTS_MAX", 10**6)
    records = list(store.read_all(0))
    k = len(records) // 2
    _save_lying_snapshot(store, records, k)
    report = verify_log(store)
    assert [m.position for m in report.mismatches] == [records[k].position]


def test_what_if_follows_the_recorded_credential_lifecycle() -> None:
    """I0: under a recorded lifecycle, what-if never routes to a credential that was not provisioned or a model not resolved."""
    from routeledger.core.credentials.events import (
        CredentialMetadata,
        CredentialProvisioned,
        ModelsResolved,
    )

    meta = CredentialMetadata(
        provider="openai",
        base_url="https://api.example",
        region=None,
        expires_at_us=None,
        validates_model_names=True,
    )
    with open_store("memory://") as store:
        store.append(
            [
                CredentialProvisioned(
                    stream_id="cred:openai-main",
                    version=1,
                    at_us=T0,
                    credential_id="openai-main",
                    installation_id="gw",
                    metadata=meta,
                ),
                ModelsResolved(
                    stream_id="cred:openai-main",
                    version=2,
                    at_us=T0,
                    credential_id="openai-main",
                    models=frozenset({"gpt-4.1"}),
                    roles=(),
                ),
            ]
        )
        build(store, requests=12, seed=4)
        report = what_if(store.read_all(0), POLICY)
        baseline = what_if([r for r in store.read_all(0) if r.position > 2], POLICY)
    assert report.what_if.requests == 12
    assert (
        report.as_json() != baseline.as_json()
        or report.what_if.attempts <= baseline.what_if.attempts
    )


def _count_forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the pid of every child forked from now on (in the parent)."""
    children: list[int] = []
    fork = os.fork

    def counting() -> int:
        pid = fork()
        if pid:
            children.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counting)
    return children


def test_forked_and_in_process_snapshot_checks_agree(
    monkeypatch: pytest.MonkeyPatch, store: EventStore
) -> None:
    """D2: checking snapshots in forked helpers reports exactly what checking them in turn reports."""
    records = list(store.read_all(0))
    k = len(records) // 2
    save_snapshot(store, fold_log(records[: len(records) // 3]))
    _save_lying_snapshot(store, records, k)
    store.save_snapshot(
        StoredSnapshot(SNAPSHOT_STREAM, records[10].position, "routeledger.snapshot/0.x", b"")
    )
    save_snapshot(store, fold_log(records))
    monkeypatch.setattr(replay_module, "PARALLEL_EVENTS_MIN", 0)
    children = _count_forks(monkeypatch)
    forked = verify_log(store).as_json()
    assert len(children) >= 2  # the tails, and the fold's hash at a snapshot
    monkeypatch.setattr(replay_module, "PARALLEL", False)
    in_turn = verify_log(store).as_json()
    assert forked == in_turn
    assert forked["snapshots_checked"] == 3 and forked["snapshots_ignored"] == 1
    assert [m["position"] for m in forked["mismatches"]] == [records[k].position]  # type: ignore[union-attr]


def test_an_error_in_a_forked_check_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch, store: EventStore
) -> None:
    """An exception raised in a forked helper is raised by verify_log, not lost."""
    records = list(store.read_all(0))
    save_snapshot(store, fold_log(records[: len(records) // 2]))

    def unreadable(stored: StoredSnapshot) -> object:
        raise DataError("snapshot unreadable here")

    monkeypatch.setattr(replay_module, "decode_snapshot", unreadable)
    monkeypatch.setattr(replay_module, "PARALLEL_EVENTS_MIN", 0)
    children = _count_forks(monkeypatch)
    with pytest.raises(DataError, match="snapshot unreadable here"):
        verify_log(store)
    assert children


def test_verify_folds_the_log_as_it_stood_when_it_began(
    monkeypatch: pytest.MonkeyPatch, store: EventStore
) -> None:
    """Events appended while verifying are left for the next run: the pass stops at the head it started from."""
    monkeypatch.setattr(replay_module, "PAGE_EVENTS", 7)
    head = store.max_position()
    late = budget.decide_open_account(
        Folded().budget,
        budget.OpenAccount(
            command_id="late", account_id="late", scope=AccountScope.TEAM, unit=Unit.MICROS, limit=1
        ),
        now_us=T0 + 10**12,
        zones=lambda _: dt.UTC,
    ).events

    def append_once(position: int, last: int) -> None:
        if store.max_position() == head:
            store.append(late)

    report = verify_log(store, progress=append_once)
    assert store.max_position() > head
    assert report.ok and report.position == head


def test_a_helper_with_its_own_connection_reports_what_checking_in_turn_reports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """D2: on SQLite, snapshot tails checked by a started helper on its own connection give the in-process report."""
    url = sqlite_url(tmp_path)
    with open_store(url) as sqlite:
        build(sqlite, requests=20, seed=3)
        records = list(sqlite.read_all(0))
        k = len(records) // 2
        liar = fold_log(records[:k])
        liar.budget.accounts["acct-team"].spent += 1
        save_snapshot(sqlite, fold_log(records[: k // 2]))
        sqlite.save_snapshot(
            StoredSnapshot(
                SNAPSHOT_STREAM,
                records[k - 1].position,
                SNAPSHOT_TOPIC,
                encode_snapshot(liar, state_hash(fold_log(records[:k]))),
            )
        )
        monkeypatch.setattr(replay_module, "PARALLEL_EVENTS_MIN", 0)
        started: list[str] = []
        real_context = multiprocessing.get_context

        def recording(method: str | None = None) -> Any:
            started.append(str(method))
            return real_context(method)

        monkeypatch.setattr(multiprocessing, "get_context", recording)
        helped = verify_log(sqlite, url=url).as_json()
        assert "spawn" in started
        monkeypatch.setattr(replay_module, "PARALLEL", False)
        in_turn = verify_log(sqlite, url=url).as_json()
    assert helped == in_turn and helped["snapshots_checked"] == 2
    assert [m["position"] for m in helped["mismatches"]] == [records[k].position]  # type: ignore[union-attr]
