"""The fold of the log: every context's state, and the records it is folded from.

Pure and shared by both sides: the engine's runtime folds what it appends and
reads (``routeledger.adapters.engine.runtime``), projections and audit tools
fold what they read. A :class:`Recorded` is one event at its log position; a
:class:`Folded` is every context's state after the events up to ``position``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

from . import catalog  # noqa: F401  (registers every event type)
from .budget import ledger as budget
from .budget.events import BudgetEvent
from .budget.values import HoldStatus
from .credentials import lifecycle as credentials
from .errors import InvariantViolation
from .events import Event
from .retention import RecordsRetired, RetentionState
from .routing import state as routing
from .routing.events import RoutingEvent
from .streams import CREDENTIAL, INSTALLATION

__all__ = ["SHARED_STREAM_PREFIXES", "Folded", "Recorded", "fold_log"]


@attrs.frozen
class Recorded:
    """An event with its position in the log."""

    position: int
    event: Event


#: Streams more than one context folds: the credential lifecycle and
#: credential-wide availability share ``cred:<id>``; the lifecycle tracks
#: ``install:`` stream versions whatever wrote them.
SHARED_STREAM_PREFIXES: Final = (CREDENTIAL, INSTALLATION)


@attrs.define
class Folded:
    """Every context's state after folding the log up to ``position``."""

    routing: routing.RoutingState = attrs.field(factory=routing.initial)
    budget: budget.LedgerState = attrs.field(factory=budget.initial)
    credentials: credentials.CredentialsState = attrs.field(factory=credentials.initial)
    #: Log position of the last event folded (0: nothing yet).
    position: int = 0
    #: Events folded so far.
    events: int = 0
    #: Latest engine time of any folded event.
    at_us_max: int = 0
    #: The latest retirement of finished records (``core/retention.py``).
    retention: RetentionState = attrs.field(factory=RetentionState)

    def apply(self, evt: Event) -> None:
        """Fold one event into every context that reads it (the others would ignore it).

        A routing or budget event on a stream of its own context is read by that
        context alone; an event on a shared ``cred:``/``install:`` stream, or of
        any other kind, goes through every context (each ignores what is not its
        own). ``tests/adapters/engine/test_runtime.py`` checks this equals folding every
        event through every context.
        """
        try:
            if evt.stream_id.startswith(SHARED_STREAM_PREFIXES):
                self._apply_all(evt)
            elif isinstance(evt, RoutingEvent):
                self.routing = routing.evolve(self.routing, evt)
            elif isinstance(evt, BudgetEvent):
                self.budget = budget.evolve(self.budget, evt)
            elif type(evt) is RecordsRetired:
                self._retire(evt)
            else:
                self._apply_all(evt)
        except KeyError as missing:  # an event about a request, hold or account never opened
            raise InvariantViolation(
                f"{type(evt).__qualname__} on {evt.stream_id!r} (version {evt.version}) "
                f"cannot be folded: {missing} was never recorded"
            ) from None
        self.events += 1
        if evt.at_us > self.at_us_max:
            self.at_us_max = evt.at_us

    def _retire(self, evt: RecordsRetired) -> None:
        """Drop what finished before the horizon from every context that keeps history.

        A request has ended when routing ended it, or when its hold is resolved
        with no attempt in flight (refused by the budget, left by its caller):
        the budget knows that, routing does not, so the rule lives here.
        """
        holds = self.budget.holds

        def ended(request_id: str, request: routing.RequestState) -> bool:
            if request.terminal:
                return True
            hold = holds.get(request_id)
            return (
                request.in_flight is None
                and hold is not None
                and hold.status is not HoldStatus.OPEN
            )

        self.retention = RetentionState(evt.before_us, evt.version)
        routing.retire(self.routing, evt.before_us, evt.abandoned_before_us, ended)
        budget.retire(self.budget, evt.before_us)

    def _apply_all(self, evt: Event) -> None:
        self.routing = routing.evolve(self.routing, evt)
        self.budget = budget.evolve(self.budget, evt)
        self.credentials = credentials.evolve(self.credentials, evt)

    def check_invariants(self) -> None:
        """Every context's invariants (raises InvariantViolation)."""
        routing.check_invariants(self.routing)
        budget.check_invariants(self.budget)
        credentials.check_invariants(self.credentials)


def fold_log(records: Iterable[Recorded], folded: Folded | None = None) -> Folded:
    """Fold recorded events (in log order) into ``folded`` or a fresh state."""
    folded = folded or Folded()
    for recorded in records:
        folded.apply(recorded.event)
        folded.position = recorded.position
    return folded
