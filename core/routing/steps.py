"""What :func:`~.decide.decide_next` decided: one typed step, with the events it appends.

Exactly one of:

* :class:`RouteAttempt` — call a member now (``AttemptRouted``, with a
  ``ProbeAllowed`` per half-open scope it probes, A4);
* :class:`RouteWait` — nothing is selectable, something recovers soon enough
  to wait for (``WaitDecided``, I1.3);
* :class:`RouteExhausted` — the request ends unserved (``FallbackExhausted``, A7);
* :class:`RouteDegraded` — nothing in the chain is usable at all, or the
  route is unknown (``Degraded``);
* :class:`RouteIdle` — nothing to decide: the request has ended, an attempt
  is in flight, or a decided wait has not elapsed (no events).

Callers branch on the step's type; ``step.events`` is what to append. Steps
are named tuples, immutable and built once per decision: a frozen attrs
class costs about 3x as much to construct (bench/README.md, G1).
"""

from __future__ import annotations

from typing import NamedTuple, TypeAlias

from .events import (
    AttemptRouted,
    Degraded,
    FallbackExhausted,
    ProbeAllowed,
    SlotTaken,
    WaitDecided,
)

__all__ = [
    "RouteAttempt",
    "RouteDegraded",
    "RouteExhausted",
    "RouteIdle",
    "RouteStep",
    "RouteWait",
]


class RouteAttempt(NamedTuple):
    """Call ``routed``'s member now."""

    routed: AttemptRouted
    #: One per half-open scope (pair, credential) this attempt probes (A4).
    probes: tuple[ProbeAllowed, ...] = ()
    #: The slot it takes of its credential's configured limits, if any (G6).
    slots: tuple[SlotTaken, ...] = ()

    @property
    def events(self) -> tuple[AttemptRouted | ProbeAllowed | SlotTaken, ...]:
        """The events to append: the routing decision, then its probes and its slot."""
        return (self.routed, *self.probes, *self.slots)


class RouteWait(NamedTuple):
    """Wait until ``decided.until_us``, then decide again."""

    decided: WaitDecided

    @property
    def events(self) -> tuple[WaitDecided]:
        """The event to append."""
        return (self.decided,)


class RouteExhausted(NamedTuple):
    """The request ends unserved; ``exhausted`` lists its failures and when it could retry."""

    exhausted: FallbackExhausted

    @property
    def events(self) -> tuple[FallbackExhausted]:
        """The event to append."""
        return (self.exhausted,)


class RouteDegraded(NamedTuple):
    """The request ends: nothing in its chain can be used (or the route is unknown)."""

    degraded: Degraded

    @property
    def events(self) -> tuple[Degraded]:
        """The event to append."""
        return (self.degraded,)


class RouteIdle(NamedTuple):
    """Nothing to decide now; ``ended`` tells whether the request is over.

    When it is not, an attempt is in flight or a decided wait stands until
    ``wait_until_us``.
    """

    ended: bool
    wait_until_us: int = 0

    @property
    def events(self) -> tuple[()]:
        """No events."""
        return ()


RouteStep: TypeAlias = RouteAttempt | RouteWait | RouteExhausted | RouteDegraded | RouteIdle
