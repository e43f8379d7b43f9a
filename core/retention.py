"""The retention horizon: finished records leave the live state once older than it.

The live state keeps, for idempotency and audit, every request it folded and
every hold with the commands that resolved it. Without a bound that state,
its snapshots and every snapshot's time grow with all traffic ever served. A
:class:`RecordsRetired` decision, appended like any other (so every process
and every replay agrees, D1/D2), makes the fold drop:

* every **ended request** (served, exhausted, degraded, or its hold resolved
  with no attempt in flight: refused by the budget, left by its caller) last
  touched before ``before_us``; a request that has not ended (an attempt in flight, a wait)
  only once untouched for :data:`ABANDONED_HORIZONS` horizons
  (``abandoned_before_us``): its process died mid-request, or it streams for
  longer than anything should;
* every **resolved hold** (settled, refunded, expired, rejected, late-booked)
  last touched before ``before_us``, with its command records.

Open holds are never retired (they expire by their TTL first, L5); accounts,
availability scopes and credentials are bounded by the configuration and stay.
What idempotency needs beyond the horizon is answered from the log on demand:
the engine refuses a caller's request id that the log already has but the
state no longer does (:class:`~routeledger.core.errors.Retired`), so an id is
never decided twice.

The decision is due when the horizon has moved on by a step
(:func:`retire_step_us`) since the last one, there is anything finished, and
the oldest record is older than the cut: an idle engine with nothing left, or
a young one, records nothing.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Final

import attrs

from .events import Event, Origin, event
from .streams import RETENTION_STREAM
from .time import US_PER_S

if TYPE_CHECKING:  # pragma: no cover
    from .fold import Folded

__all__ = [
    "ABANDONED_HORIZONS",
    "RETIRE_STEPS_PER_HORIZON",
    "RETIRE_STEP_US_MIN",
    "RecordsRetired",
    "RetentionState",
    "decide_retire",
    "retire_step_us",
]

#: Retirements per horizon. Why 16: the live state then holds at most 17/16 of
#: a horizon's traffic, with one small event per sixteenth of the horizon.
RETIRE_STEPS_PER_HORIZON: Final = 16
#: Shortest step between retirements, in µs. Why: a tiny horizon (tests) must
#: not turn every maintenance step into a log event.
RETIRE_STEP_US_MIN: Final = US_PER_S
#: Horizons a request that has not ended is kept after its last event. Why 8:
#: a live stream outlasting one horizon (minutes) must still record its
#: outcome; one silent for 8 was left by a process that died.
ABANDONED_HORIZONS: Final = 8


@event("routeledger.RecordsRetired", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class RecordsRetired(Event):
    """Requests and resolved holds last touched before ``before_us`` left the live state."""

    #: Engine time: ended requests and resolved holds whose last event is older leave.
    before_us: int
    #: Engine time: requests that have not ended whose last event is older leave.
    abandoned_before_us: int
    #: The configured horizon this was decided under (``at_us - before_us``).
    horizon_us: int


@attrs.define
class RetentionState:
    """The latest retirement folded (0: none yet)."""

    before_us: int = 0
    #: Version of :data:`~routeledger.core.streams.RETENTION_STREAM`.
    version: int = 0


def retire_step_us(horizon_us: int) -> int:
    """How far the horizon moves between two retirements."""
    return max(horizon_us // RETIRE_STEPS_PER_HORIZON, RETIRE_STEP_US_MIN)


def _oldest_us(state: Folded) -> int:
    """Engine time of the oldest request or hold in the state (both kept in arrival order)."""
    firsts = itertools.chain(
        (
            request.received.at_us
            for request in itertools.islice(state.routing.requests.values(), 1)
        ),
        (hold.placed_at_us for hold in itertools.islice(state.budget.holds.values(), 1)),
    )
    return min(firsts)


def decide_retire(state: Folded, *, now_us: int, horizon_us: int) -> tuple[RecordsRetired, ...]:
    """The retirement due at ``now_us`` under ``horizon_us`` (0: retention off), if any."""
    if horizon_us <= 0:
        return ()
    before_us = now_us - horizon_us
    if before_us - state.retention.before_us < retire_step_us(horizon_us):
        return ()
    ledger = state.budget
    if not state.routing.requests and len(ledger.holds) == len(ledger.open_holds):
        return ()  # nothing finished to retire
    if _oldest_us(state) >= before_us:
        return ()  # nothing is older than the cut yet
    return (
        RecordsRetired(
            stream_id=RETENTION_STREAM,
            version=state.retention.version + 1,
            at_us=now_us,
            before_us=before_us,
            abandoned_before_us=now_us - ABANDONED_HORIZONS * horizon_us,
            horizon_us=horizon_us,
        ),
    )
