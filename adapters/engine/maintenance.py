"""The engine's maintenance: what the core decides from engine time alone.

One :func:`maintain` step rolls every budget period that ended over (T2),
expires every hold past its TTL (L5), retires finished records older than
the retention horizon (``core/retention.py``), each decided by the core from the
engine's ``now`` and appended like any decision (so a replay is exact), then saves a snapshot
when one is due (off every request's path; ``Engine.maybe_snapshot``). A
:class:`MaintenanceThread` runs the step every ``[engine] maintenance_every_us``
of real time; ``Engine.open`` starts one when the engine runs on the wall clock
and stops it on close. Tests and simulations with their own clock call
``Engine.maintain()`` step by step.

Admission does not wait for the loop: a request whose account's period ended
rolls it over first (:func:`roll_before_entry`), so no request is refused for
last period's spend however late the loop is.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, tzinfo
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo

import attrs

from routeledger.core.budget import decide as budget
from routeledger.core.budget import events as bev
from routeledger.core.budget.admin import decide_roll_period
from routeledger.core.budget.values import PeriodKind
from routeledger.core.events import Event
from routeledger.core.fold import Folded
from routeledger.core.retention import RecordsRetired, decide_retire

if TYPE_CHECKING:  # pragma: no cover
    from routeledger.adapters.engine.engine import Engine

__all__ = ["Maintained", "MaintenanceThread", "due_periods", "maintain", "roll_periods"]

LOGGER: Final = logging.getLogger("routeledger.engine")
#: How long ``close`` waits for a running step to finish, in seconds. Why: a step
#: is one or two commits (milliseconds); a store that hangs must not hang close.
MAINTENANCE_JOIN_S: Final = 10.0


@attrs.frozen
class Maintained:
    """What one maintenance step recorded."""

    #: Accounts whose period was rolled over, in id order.
    rolled: tuple[str, ...] = ()
    #: Holds expired.
    expired: int = 0
    #: The engine time records were retired before, if a retirement was due.
    retired_before_us: int | None = None
    #: The position of the snapshot saved, if one was due.
    snapshot: int | None = None


def zone(name: str) -> tzinfo:
    """The time zone of a period (``UTC`` without the tz database)."""
    return UTC if name == "UTC" else ZoneInfo(name)


def due_periods(state: Folded, accounts: Sequence[str], now_us: int) -> tuple[str, ...]:
    """Which of ``accounts`` have a period that ended at or before ``now_us`` (no I/O)."""
    known = state.budget.accounts
    due: list[str] = []
    for account_id in accounts:
        acc = known.get(account_id)
        ends = acc is not None and acc.period.kind is not PeriodKind.NONE
        if ends and acc is not None and now_us >= acc.period_end_us:
            due.append(account_id)
    return tuple(due)


def _roll(accounts: Sequence[str] | None) -> Callable[[Folded, int], list[Event]]:
    def decide(state: Folded, now: int) -> list[Event]:
        ids = sorted(state.budget.accounts) if accounts is None else accounts
        events: list[Event] = []
        for account_id in due_periods(state, ids, now):
            decision = decide_roll_period(state.budget, account_id, now_us=now, zones=zone)
            events.extend(decision.events)
        return events

    return decide


def roll_periods(engine: Engine, accounts: Sequence[str] | None = None) -> tuple[str, ...]:
    """Roll over every ended period (of ``accounts``, or all) in one append; which rolled."""
    events = engine.runtime.append(_roll(accounts))
    rolled = tuple(getattr(e, "account_id", "") for e in events)
    for account_id in rolled:
        LOGGER.info("period rolled over: account %s", account_id)
    return rolled


def roll_before_entry(engine: Engine, accounts: Sequence[str]) -> None:
    """Roll the request's accounts' ended periods over before its hold is decided."""
    if accounts and due_periods(engine.state, accounts, engine.clock.now_us()):
        roll_periods(engine, accounts)


def maintain(engine: Engine) -> Maintained:
    """One step: roll periods over, expire holds past their TTL, retire, snapshot if due."""
    rolled = roll_periods(engine)
    decision = engine.runtime.run(
        lambda s, now: budget.decide_expire_due(s.budget, now_us=now), lambda d: d.events
    )
    expired = sum(1 for e in decision.events if isinstance(e, bev.HoldExpired))
    if expired:
        LOGGER.warning("expired %d holds past their TTL (a process left them open)", expired)
    horizon_us = engine.config.engine.retention_horizon_us
    retired = engine.runtime.run(
        lambda s, now: decide_retire(s, now_us=now, horizon_us=horizon_us), _itself
    )
    freeze = engine.config.engine.gc_freeze
    if engine.owns_process if freeze is None else freeze:
        freeze_long_lived()
    return Maintained(
        rolled=rolled,
        expired=expired,
        retired_before_us=retired[0].before_us if retired else None,
        snapshot=engine.maybe_snapshot(),
    )


#: How often a frozen process is thawed and fully collected, in s. Why: objects
#: frozen while alive that later become cyclic garbage are only freed by a
#: full collection; one an hour bounds that leak at one pause an hour.
GC_THAW_EVERY_S: Final = 3600.0
_thawed_at = [time.monotonic()]


def freeze_long_lived() -> None:
    """Move every live object out of the cyclic GC's generations (``gc.freeze``).

    Why: a live state of a horizon's traffic is hundreds of thousands of
    objects; each full collection walks them all while holding the GIL (about
    130 ms for 6k requests, measured in ``bench/soak.py``), on whichever thread
    allocates. Our states hold no reference cycles, so refcounting frees them
    when retired; frozen objects are never walked. Once an hour the process is
    thawed and collected once (:data:`GC_THAW_EVERY_S`).
    """
    if time.monotonic() - _thawed_at[0] >= GC_THAW_EVERY_S:
        _thawed_at[0] = time.monotonic()
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def _itself(events: tuple[RecordsRetired, ...]) -> tuple[RecordsRetired, ...]:
    return events


class MaintenanceThread:
    """Runs :func:`maintain` every ``every_s`` seconds until :meth:`stop`."""

    def __init__(self, engine: Engine, every_s: float) -> None:
        self._engine = engine
        self._every_s = every_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="routeledger-maintenance", daemon=True
        )
        #: Steps run and steps that failed (the failure is logged; the loop goes on).
        self.steps = 0
        self.failures = 0

    def start(self) -> None:
        """Start the thread (its first step after one interval)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the running step, if any (idempotent)."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(MAINTENANCE_JOIN_S)

    def _run(self) -> None:
        while not self._stopping.wait(self._every_s):
            try:
                maintain(self._engine)
            except Exception:  # a store outage: logged, retried at the next tick
                self.failures += 1
                LOGGER.exception("maintenance step failed; retrying in %.1f s", self._every_s)
            self.steps += 1
