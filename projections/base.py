"""What every projection is: a pure fold over recorded events with a tracked position.

A projection is a read model (STYLE item 15): it is folded from the log, kept
apart from the decision state (deciders never read it), rebuildable from
scratch at any time and resumable from the position it last applied. It never
writes to the store.

* :meth:`Projection.apply` folds one :class:`~routeledger.adapters.store.eventstore.Recorded`
  event and advances :attr:`Projection.position` to its log position;
* :meth:`Projection.catch_up` folds an iterable of them (``store.read_all(p.position)``
  resumes after a restart);
* :func:`rebuild` builds a fresh projection from a whole log.

The fold only assigns values carried by events (every ``if`` on a type is a
dispatch, not a business rule); views that depend on an instant (statuses,
hold ages) are computed from the folded values and a ``now_us`` passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from routeledger.core.events import Event
from routeledger.core.fold import Recorded

__all__ = ["Projection", "rebuild"]


class Projection:
    """Base of the projections: ``position`` and ``apply``; subclasses fold in ``_fold``."""

    __slots__ = ("position",)

    def __init__(self) -> None:
        #: Log position of the last event applied (0: nothing yet).
        self.position = 0

    def apply(self, recorded: Recorded) -> None:
        """Fold one recorded event and advance ``position`` to it."""
        handler = self._HANDLERS.get(type(recorded.event))
        if handler is not None:
            handler(self, recorded.position, recorded.event)
        self.position = recorded.position

    def catch_up(self, records: Iterable[Recorded]) -> int:
        """Fold every record (in log order); return how many were applied."""
        count = 0
        for recorded in records:
            self.apply(recorded)
            count += 1
        return count

    #: Event type -> fold function ``(projection, position, event)``; others only advance ``position``.
    _HANDLERS: ClassVar[Mapping[type[Event], Callable[[Any, int, Any], None]]] = {}


P = TypeVar("P", bound=Projection)


def rebuild(factory: Callable[[], P], records: Iterable[Recorded]) -> P:
    """A fresh projection from ``factory`` folded over ``records`` (D2: rebuildable from scratch)."""
    projection = factory()
    projection.catch_up(records)
    return projection
