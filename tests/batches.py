"""Folding a recorded log decision by decision, for checks that hold between batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from routeledger.core.fold import Folded, Recorded


def folded_between_decisions(records: Sequence[Recorded]) -> Iterator[Folded]:
    """Fold ``records`` in order; yield the state after each budget decision's batch.

    A decision is one atomic batch: a hold event and its account entries (same
    hold id). Decisions are taken between batches, so L1/L2 hold wherever the
    next event belongs to another decision, not half-way through one. The same
    state object is yielded each time, folded further.
    """
    folded = Folded()
    for index, recorded in enumerate(records):
        folded.apply(recorded.event)
        folded.position = recorded.position
        upcoming = records[index + 1].event if index + 1 < len(records) else None
        if upcoming is not None and getattr(upcoming, "hold_id", None) == getattr(
            recorded.event, "hold_id", None
        ):
            continue
        yield folded
