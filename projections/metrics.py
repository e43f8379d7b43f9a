"""Metrics in the Prometheus text exposition format (version 0.0.4), folded from the log.

Exposed (every family with its ``# HELP`` and ``# TYPE`` lines):

=========================================  =======  ==========================================
name                                       type     labels
=========================================  =======  ==========================================
``routeledger_events_total``               counter  —
``routeledger_requests_total``             counter  —
``routeledger_attempts_total``             counter  ``credential``, ``model``
``routeledger_failures_total``             counter  ``class``
``routeledger_exhausted_total``            counter  ``reason``
``routeledger_cooldowns_active``           gauge    — (scopes cooling or suspended at ``now``)
``routeledger_holds_open``                 gauge    — (open holds)
``routeledger_budget_reserved``            gauge    ``account``, ``unit``
``routeledger_budget_spent``               gauge    ``account``, ``unit`` (current period)
``routeledger_budget_spent_lifetime``      gauge    ``account``, ``unit``
=========================================  =======  ==========================================

The engine does not record decision latency in the log (deciding is pure and
takes ``now`` as an input), so no latency histogram is derived here.

Label values are escaped as the format requires (``\\`` -> ``\\\\``, ``"`` ->
``\\"``, newline -> ``\\n``); so are HELP texts (backslash and newline). Series
are written in sorted label order, so the output is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Final

from routeledger.core.events import Event
from routeledger.core.fold import Recorded
from routeledger.core.routing import events as rev
from routeledger.projections.availability import AvailabilityBoard
from routeledger.projections.base import Projection
from routeledger.projections.budget import BudgetBoard

__all__ = ["CONTENT_TYPE", "Metrics", "escape_help", "escape_label"]

#: The HTTP Content-Type of the text exposition format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def escape_label(value: str) -> str:
    """A label value escaped for the text format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A HELP text escaped for the text format."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _family(
    name: str, kind: str, help_text: str, series: Iterable[tuple[tuple[tuple[str, str], ...], int]]
) -> list[str]:
    lines = [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}"]
    for labels, value in sorted(series):
        if labels:
            rendered = ",".join(f'{key}="{escape_label(val)}"' for key, val in labels)
            lines.append(f"{name}{{{rendered}}} {value}")
        else:
            lines.append(f"{name} {value}")
    return lines


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
        #: failure class value -> failures observed.
        self.failures: dict[str, int] = {}
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
        key = evt.failure.value
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

    def render(self, now_us: int) -> str:
        """The exposition text at ``now_us`` (gauges that depend on time use it)."""
        accounts = [(a.account_id, a) for a in self.budget.accounts.values()]
        lines: list[str] = []
        lines += _family(
            "routeledger_events_total",
            "counter",
            "Events folded from the log.",
            [((), self.events)],
        )
        lines += _family(
            "routeledger_requests_total",
            "counter",
            "Requests received.",
            [((), self.requests)],
        )
        lines += _family(
            "routeledger_attempts_total",
            "counter",
            "Attempts routed, per credential and upstream model.",
            [((("credential", c), ("model", m)), n) for (c, m), n in self.attempts.items()],
        )
        lines += _family(
            "routeledger_failures_total",
            "counter",
            "Failed attempts, per failure class.",
            [((("class", k),), n) for k, n in self.failures.items()],
        )
        lines += _family(
            "routeledger_exhausted_total",
            "counter",
            "Requests that ended with fallback exhausted, per reason.",
            [((("reason", k),), n) for k, n in self.exhausted.items()],
        )
        lines += _family(
            "routeledger_cooldowns_active",
            "gauge",
            "Scopes (pairs and credentials) cooling down or suspended now.",
            [((), self.availability.blocked_at(now_us))],
        )
        lines += _family(
            "routeledger_holds_open",
            "gauge",
            "Budget holds placed and not yet settled, refunded or expired.",
            [((), len(self.budget.holds))],
        )
        for name, help_text, attr in (
            ("routeledger_budget_reserved", "Amount reserved by open holds.", "reserved"),
            ("routeledger_budget_spent", "Spend in the current period.", "spent"),
            (
                "routeledger_budget_spent_lifetime",
                "Spend since the account opened.",
                "lifetime_spent",
            ),
        ):
            lines += _family(
                name,
                "gauge",
                help_text,
                [
                    ((("account", key), ("unit", acc.unit.value)), getattr(acc, attr))
                    for key, acc in accounts
                ],
            )
        return "\n".join(lines) + "\n"
