"""Retirement in the fold: exactly what ended before the horizon leaves the live state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.adapters.store.eventstore import open_store
from routeledger.core.budget.values import HoldStatus
from routeledger.core.fold import Folded, Recorded, fold_log
from routeledger.core.retention import (
    ABANDONED_HORIZONS,
    RETIRE_STEP_US_MIN,
    RecordsRetired,
    decide_retire,
    retire_step_us,
)
from routeledger.core.streams import RETENTION_STREAM, hold_stream
from tests.projections.workload import build


@pytest.fixture(scope="module")
def log() -> Iterator[list[Recorded]]:
    """A recorded 40-request workload: served, exhausted and still-open requests."""
    with open_store("memory://") as store:
        build(store, requests=40, seed=11)
        yield list(store.read_all(0))


def _retired(before_us: int, abandoned_before_us: int, version: int = 1) -> RecordsRetired:
    return RecordsRetired(
        stream_id=RETENTION_STREAM,
        version=version,
        at_us=before_us + 1,
        before_us=before_us,
        abandoned_before_us=abandoned_before_us,
        horizon_us=1,
    )


def _ended(state: Folded, request_id: str) -> bool:
    request = state.routing.requests[request_id]
    hold = state.budget.holds.get(request_id)
    resolved = hold is not None and hold.status is not HoldStatus.OPEN
    return request.terminal or (request.in_flight is None and resolved)


@given(st.data())
def test_a_retirement_drops_exactly_the_finished_records_older_than_its_cut(
    log: list[Recorded], data: st.DataObject
) -> None:
    """For any cut, the fold keeps every open hold, every record touched since the cut, every
    unended request touched since the abandoned cut, and nothing else; invariants hold."""
    first, last = log[0].event.at_us, log[-1].event.at_us
    before = data.draw(st.integers(first, last + 1), label="before_us")
    abandoned = data.draw(st.integers(first, before), label="abandoned_before_us")
    full = fold_log(log)
    retired = fold_log([Recorded(log[-1].position + 1, _retired(before, abandoned))], fold_log(log))
    retired.check_invariants()
    kept_requests = {
        rid
        for rid, request in full.routing.requests.items()
        if request.last_at_us >= before
        or (request.last_at_us >= abandoned and not _ended(full, rid))
    }
    assert set(retired.routing.requests) == kept_requests
    kept_holds = {
        hid
        for hid, hold in full.budget.holds.items()
        if hold.status is HoldStatus.OPEN or hold.last_at_us >= before
    }
    assert set(retired.budget.holds) == kept_holds
    assert set(retired.budget.open_holds) == set(full.budget.open_holds)
    streams = {hold_stream(h) for h in kept_holds}
    for stream, _ in retired.budget.commands:
        assert not stream.startswith("hold:") or stream in streams
    assert retired.budget.accounts.keys() == full.budget.accounts.keys()
    assert retired.routing.pairs.keys() == full.routing.pairs.keys()
    assert retired.retention.before_us == before and retired.retention.version == 1


def test_retirement_is_decided_once_per_step_and_only_with_something_finished(
    log: list[Recorded],
) -> None:
    """Off at 0; due when the horizon moved a step and there is anything to retire."""
    state = fold_log(log)
    horizon = 60 * RETIRE_STEP_US_MIN
    now = log[-1].event.at_us + 10 * horizon
    assert decide_retire(state, now_us=now, horizon_us=0) == ()
    (event,) = decide_retire(state, now_us=now, horizon_us=horizon)
    assert (event.before_us, event.abandoned_before_us) == (
        now - horizon,
        now - ABANDONED_HORIZONS * horizon,
    )
    assert event.stream_id == RETENTION_STREAM and event.version == 1
    state.apply(event)
    step = retire_step_us(horizon)
    assert decide_retire(state, now_us=now + step - 1, horizon_us=horizon) == ()
    assert state.routing.requests == {}  # all older than even the abandoned cut
    assert state.budget.holds.keys() == state.budget.open_holds.keys() != set()
    assert decide_retire(state, now_us=now + step, horizon_us=horizon) == ()  # nothing finished
    assert decide_retire(Folded(), now_us=now, horizon_us=horizon) == ()
    assert retire_step_us(1) == RETIRE_STEP_US_MIN and retire_step_us(32 * 10**7) == 2 * 10**7
