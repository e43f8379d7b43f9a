"""Deciding several requests' routing steps as one batch (group commit), exactly.

Speed machinery, not rules: the engine's group committer (``adapters/engine``)
decides concurrent requests' items together and appends them in one commit.
This module gives it a view of the routing state on which those decisions
come out exactly as if each batch had been folded before the next decision.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..events import Event
from ..streams import request_stream
from .events import AttemptRouted, RoutingEvent
from .state import RoutingState, advance_cursor

__all__ = ["group_view", "note_in_view", "request_local"]


def group_view(state: RoutingState) -> RoutingState:
    """A view for deciding several requests' steps as one batch (group commit).

    A decision of one request reads only that request's own entry, the
    round-robin cursors and pair / credential availability; a request-local
    event (on its own ``request:`` stream) changes only its own entry and, when
    it routes an attempt, one cursor. So the view shares everything with
    ``state`` (deciders never modify what they read) except a private copy of
    the cursors, which :func:`note_in_view` advances. Deciding requests one
    after another on the view, as long as every event so far was request-local
    (:func:`request_local`), decides exactly what folding each batch before the
    next decision would have. After a decision with an event on another
    stream (a probe, a cooldown cleared), the group must end.
    """
    view = RoutingState.__new__(RoutingState)
    for name in RoutingState.__slots__:
        setattr(view, name, getattr(state, name))
    view.cursors = dict(state.cursors)
    return view


def note_in_view(view: RoutingState, events: Iterable[Event]) -> None:
    """Advance the view's cursors as folding ``events`` would (see :func:`group_view`)."""
    for event in events:
        if type(event) is AttemptRouted:
            advance_cursor(view, event)


def request_local(events: Iterable[Event], request_id: str) -> bool:
    """Whether every event is on ``request_id``'s own stream (or not a routing event at all)."""
    stream = request_stream(request_id)
    return all(e.stream_id == stream or not isinstance(e, RoutingEvent) for e in events)
