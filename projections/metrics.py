"""Counters folded from the log, with the availability and budget boards, for metrics.

A :class:`Metrics` projection counts events, requests received, attempts per
(credential, upstream model), failures per (credential, model, class) and
exhaustions per reason, and keeps an :class:`~routeledger.projections.availability.AvailabilityBoard` and a
:class:`~routeledger.projections.budget.BudgetBoard` for the gauges (scopes cooling
or suspended, holds open, reserved and spent per account). Its state is bounded
by the configuration (credentials, models, accounts) and the closed sets of
failure classes and exhaustion reasons, not by history.

The Prometheus exposition is the server's (``routeledger.adapters.server.metrics``,
through prometheus-client); the engine does not record decision latency in the log
(deciding is pure and takes ``now`` as an input), so no latency is derived here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from routeledger.core.events import Event
from routeledger.core.fold import Recorded
from routeledger.core.routing import events as rev
from routeledger.projections.availability import AvailabilityBoard
from routeledger.projections.base import Projection
from routeledger.projections.budget import BudgetBoard

__all__ = ["Metrics"]


class Metrics(Projection):
    """Counters folded from the log plus the availability and budget boards for gauges."""

    __slots__ = (
        "attempts",
        "availability",
        "budget",
        "events",
        "exhausted",
        "failures",
        "requests",
    )

    def __init__(self) -> None:
        super().__init__()
        self.events = 0
        self.requests = 0
        #: (credential, model) -> attempts routed.
        self.attempts: dict[tuple[str, str], int] = {}
        #: (credential, model, failure class value) -> failures observed.
        self.failures: dict[tuple[str, str, str], int] = {}
        #: exhaustion reason value -> requests.
        self.exhausted: dict[str, int] = {}
        self.availability = AvailabilityBoard()
        self.budget = BudgetBoard()

    def apply(self, recorded: Recorded) -> None:
        """Fold one event into the counters and both boards.

        The same as ``availability.apply``, ``budget.apply`` and the base
        ``apply`` in turn, with one type lookup per table instead of three
        method calls (this runs once per event of the log).
        """
        self.events += 1
        position = recorded.position
        evt = recorded.event
        kind = type(evt)
        availability = self.availability
        budget = self.budget
        handler = availability._HANDLERS.get(kind)
        if handler is not None:
            handler(availability, position, evt)
        handler = budget._HANDLERS.get(kind)
        if handler is not None:
            handler(budget, position, evt)
        handler = self._HANDLERS.get(kind)
        if handler is not None:
            handler(self, position, evt)
        availability.position = budget.position = self.position = position

    def _on_received(self, position: int, evt: rev.RequestReceived) -> None:
        self.requests += 1

    def _on_routed(self, position: int, evt: rev.AttemptRouted) -> None:
        key = (evt.credential_id, evt.upstream_model)
        self.attempts[key] = self.attempts.get(key, 0) + 1

    def _on_failed(self, position: int, evt: rev.AttemptFailed) -> None:
        key = (evt.credential_id, evt.upstream_model, evt.failure.value)
        self.failures[key] = self.failures.get(key, 0) + 1

    def _on_exhausted(self, position: int, evt: rev.FallbackExhausted) -> None:
        key = evt.reason.value
        self.exhausted[key] = self.exhausted.get(key, 0) + 1

    _HANDLERS: ClassVar[dict[type[Event], Callable[[Any, int, Any], None]]] = {
        rev.RequestReceived: _on_received,
        rev.AttemptRouted: _on_routed,
        rev.AttemptFailed: _on_failed,
        rev.FallbackExhausted: _on_exhausted,
    }
