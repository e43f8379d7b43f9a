"""Deciding several requests' routing steps as one batch (group commit), exactly.

Speed machinery, not rules: the engine's group committer (``adapters/engine``)
decides concurrent requests' items together and appends them in one commit.
This module gives it a view of the routing state on which those decisions
come out exactly as if each batch had been folded before the next decision.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..events import Event
from ..streams import pair_stream, request_stream
from .events import AttemptFailed, AttemptRouted, AttemptSucceeded, RoutingEvent
from .state import RoutingState, advance_cursor, note_in_flight, note_latency

__all__ = ["group_view", "note_in_view", "request_local"]


def group_view(state: RoutingState) -> RoutingState:
    """A view for deciding several requests' steps as one batch (group commit).

    A decision of one request reads only that request's own entry, the
    round-robin cursors, the per-pair counts of attempts in flight and latency
    estimates, and pair / credential availability; a request-local event (on
    its own ``request:`` stream) changes only its own entry, one cursor and
    those counts. So the view shares everything with ``state`` (deciders never
    modify what they read) except private copies of the cursors and counts,
    which :func:`note_in_view` updates. Deciding requests one
    after another on the view, as long as every event so far was request-local
    (:func:`request_local`), decides exactly what folding each batch before the
    next decision would have. After a decision with an event on another
    stream (a probe, a cooldown cleared), the group must end.
    """
    view = RoutingState.__new__(RoutingState)
    for name in RoutingState.__slots__:
        setattr(view, name, getattr(state, name))
    view.cursors = dict(state.cursors)
    view.in_flight = dict(state.in_flight)
    view.latency = dict(state.latency) if state.latency else {}
    return view


def note_in_view(view: RoutingState, events: Iterable[Event]) -> None:
    """Update the view's cursors and counts as folding ``events`` would (see :func:`group_view`)."""
    for event in events:
        if isinstance(event, AttemptRouted):
            advance_cursor(view, event)
            note_in_flight(view, pair_stream(event.credential_id, event.upstream_model), 1)
        elif isinstance(event, AttemptSucceeded | AttemptFailed):
            pair = pair_stream(event.credential_id, event.upstream_model)
            note_in_flight(view, pair, -1)
            if isinstance(event, AttemptSucceeded):
                note_latency(view, event, pair)


def request_local(events: Iterable[Event], request_id: str) -> bool:
    """Whether every event is on ``request_id``'s own stream (or not a routing event at all)."""
    stream = request_stream(request_id)
    return all(e.stream_id == stream or not isinstance(e, RoutingEvent) for e in events)
