"""The decision state folded from the log, and the decide -> append -> retry loop.

A :class:`Runtime` owns one in-memory copy of every context's state (routing,
budget, credentials), folded from the store in log order. Deciding is pure;
acting on a decision means appending its events first (L10: a reservation that
is not recorded is not made). When another process appended to a stream since
this process last read it, the store raises :class:`~.store.Conflict`: the
runtime reads what it missed, re-decides from the fresher state and tries
again, up to :data:`CONFLICT_RETRIES_MAX` times.

Every event goes through every context's ``evolve`` in log order: each context
ignores what is not its own except for the stream versions it must know (the
credential lifecycle and credential-wide availability share ``cred:<id>``
streams), so the state after folding equals a fold of the log (D2).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from routeledger.adapters.store.eventstore import Conflict, EventStore
from routeledger.core import catalog  # noqa: F401  (registers every event type)
from routeledger.core.errors import RouteLedgerError
from routeledger.core.events import Event
from routeledger.core.fold import Folded, fold_log

__all__ = ["CONFLICT_RETRIES_MAX", "ConflictRetriesExhausted", "Runtime"]

#: Re-decisions after conflicts before giving up. Why: 4 processes placing
#: holds on one hot account measured 0.2-2.4 retries per success, but a writer
#: that keeps losing can see 30+ in a row (winners never pause); 64 with the
#: pauses below bounds one decision to a few seconds. Hot accounts should use
#: leases (core/budget/leases.py) rather than lean on this.
CONFLICT_RETRIES_MAX: Final = 64

#: First and largest pause between conflict retries, in seconds. Why: about one
#: PostgreSQL append round trip to start with; full jitter doubling to 100 ms
#: lets 4-8 writers on one hot stream take turns instead of colliding
#: (``ledger.postgres4.retry_rate`` in bench/README.md).
RETRY_PAUSE_S_MIN: Final = 0.001
RETRY_PAUSE_S_MAX: Final = 0.1

T = TypeVar("T")


class ConflictRetriesExhausted(RouteLedgerError):
    """A decision kept conflicting with other writers; nothing of it was recorded."""


class Runtime:
    """Keeps state folded from one store and appends decisions, retrying on conflict.

    Engine time: decisions are stamped ``max(clock(), latest at_us folded)``.
    Engine time never goes backwards within a stream (the store refuses it);
    when two processes' clocks disagree, the slower one's append to a shared
    stream conflicts, it catches up, and re-decides at the later time.
    """

    def __init__(
        self,
        store: EventStore,
        clock: Callable[[], int],
        folded: Folded | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        catch_up_first: bool = True,
    ) -> None:
        self.store = store
        self.clock = clock
        self.state = folded or Folded()
        #: Held while deciding and appending (re-entrant); group committers take it too.
        self.lock = threading.RLock()
        self._sleep = sleep
        self._rng = rng or random.Random()
        #: Read what other processes appended before every decision, so a
        #: cooldown decided elsewhere is seen by the very next decision (A5).
        #: Off only to simulate a lagging process.
        self.catch_up_first = catch_up_first
        self.conflicts = 0
        #: Called (under the lock) with the events this runtime has just
        #: recorded, once folded: logs and metrics listen here. Must not raise.
        self.on_appended: Callable[[Sequence[Event]], None] | None = None
        #: Called with the seconds each decision took (``decide``, pure): metrics.
        self.on_decided: Callable[[float], None] | None = None

    def _pause(self, attempt: int) -> None:
        """Full-jitter exponential backoff before retry ``attempt`` (1-based)."""
        cap = min(RETRY_PAUSE_S_MAX, RETRY_PAUSE_S_MIN * 2 ** (attempt - 1))
        self._sleep(self._rng.uniform(0, cap))

    def now_us(self) -> int:
        """Engine time for the next decision: the clock, never before the log's latest event."""
        return max(self.clock(), self.state.at_us_max)

    def catch_up(self) -> int:
        """Fold every event appended since the last position; return how many."""
        with self.lock:
            if self.store.known_read_up_to(self.state.position):
                return 0  # the engine reads before every decision: mostly nothing is new
            before = self.state.events
            fold_log(self.store.read_all(self.state.position), self.state)
            return self.state.events - before

    def _fold_appended(self, events: Sequence[Event], positions: Sequence[int]) -> None:
        """Fold what we just appended; read the log only if others appended in between.

        When the batch's positions follow on directly from the last folded
        position, nothing else was appended in between (positions are issued in
        commit order), so the events in hand are exactly the log's tail.
        """
        state = self.state
        if (
            positions
            and positions[0] == state.position + 1
            and (positions[-1] - positions[0] == len(events) - 1)
        ):
            for evt in events:
                state.apply(evt)
            state.position = positions[-1]
            return
        self.catch_up()

    def run(
        self,
        decide: Callable[[Folded, int], T],
        events_of: Callable[[T], Sequence[Event]],
    ) -> T:
        """Decide from the current state and ``now``, append the events, fold them.

        ``decide(state, now_us)`` must be pure (it is called again after a
        conflict); ``events_of`` extracts the events to append from its result.
        Returns the result whose events were recorded.
        """
        with self.lock:
            for attempt in range(CONFLICT_RETRIES_MAX + 1):
                if attempt:
                    self._pause(attempt)
                if attempt or self.catch_up_first:
                    self.catch_up()
                on_decided = self.on_decided  # timed only for a listener (metrics)
                began = time.perf_counter() if on_decided is not None else 0.0
                result = decide(self.state, self.now_us())
                if on_decided is not None:
                    on_decided(time.perf_counter() - began)
                events = events_of(result)
                if not events:
                    return result
                try:
                    positions = self.store.append(events)
                except Conflict:
                    self.conflicts += 1
                    continue
                self._fold_appended(events, positions)
                if self.on_appended is not None:
                    self.on_appended(events)
                return result
        raise ConflictRetriesExhausted(
            f"a decision conflicted {CONFLICT_RETRIES_MAX + 1} times with other writers; "
            f"nothing of it was recorded"
        )

    def append(self, decide: Callable[[Folded, int], Sequence[Event]]) -> Sequence[Event]:
        """:meth:`run` for deciders that return the events themselves."""
        return self.run(decide, lambda events: events)
