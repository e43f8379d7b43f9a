"""Configured limits: attempts in flight per credential, requests and tokens per minute per pair.

A credential's ``max_in_flight`` and a pair's ``rpm``/``tpm`` (LiteLLM's names)
are admitted like budget holds: an attempt routed to a credential that has
any takes a slot (``SlotTaken`` on ``load:<credential>``) and its outcome
returns it (``SlotReturned``). Every process on one store appends to that one
stream, so a decision made on a stale count conflicts and is re-decided: the
limits hold across processes, never only per process.

Rules:

1. **In flight.** A credential with ``max_in_flight`` slots taken and not
   returned (and not past their lease, ``limits.slot_lease_us``: a process that
   died mid-attempt never returns its slot) admits nothing more; its members
   are skipped ``at_capacity``. When a slot frees cannot be known in advance,
   so a request that can only wait for one looks again after
   :data:`IN_FLIGHT_RECHECK_US`.
2. **Per minute.** A pair's minute is the last :data:`WINDOW_BUCKETS`
   one-second buckets: each routed attempt counts one request and its input
   estimate in its second's bucket, and its outcome replaces the estimate with
   the tokens the provider reported (0 for a failure). A pair whose requests
   reached ``rpm``, or whose tokens plus this request's estimate pass ``tpm``,
   is skipped ``rate_limit_reached`` until enough buckets leave the minute
   (exact: that is when it admits again). A request whose estimate alone is
   over ``tpm`` can never fit: skipped for good.

The state per credential is bounded: slots by the attempts in flight (past
their lease they are dropped at the next event), buckets by 60 per pair with
a limit, pairs by the configuration.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from ..streams import pair_stream
from ..time import US_PER_S
from .events import SkipReason, SlotReturned, SlotTaken
from .policy import Capacity

__all__ = [
    "BUCKET_US",
    "IN_FLIGHT_RECHECK_US",
    "WINDOW_BUCKETS",
    "LoadState",
    "Slot",
    "capacity_verdict",
    "on_slot_returned",
    "on_slot_taken",
]

#: Width of one bucket of a pair's minute, in µs. Why: one bucket per second
#: bounds a pair's window to 60 entries whatever its traffic; a request counts
#: from its second's start, so the window errs on the safe side by < 1 s.
BUCKET_US: Final = US_PER_S
#: Buckets in the rpm/tpm window (one minute).
WINDOW_BUCKETS: Final = 60
#: How long a request that can only wait for a slot in flight waits before it
#: looks again, in µs. Why: slots free when attempts end, which engine time
#: cannot predict; a quarter second adds little latency and few decisions.
IN_FLIGHT_RECHECK_US: Final = 250_000


class Slot(NamedTuple):
    """One attempt's slot: the pair it counts for, until when, its bucket and token estimate."""

    pair_stream: str
    until_us: int
    bucket: int
    tokens: int


class LoadState:
    """A credential's slots in flight and its pairs' minutes (``load:<credential>``)."""

    __slots__ = ("slots", "version", "windows")

    def __init__(self) -> None:
        #: Head version of the ``load:`` stream.
        self.version = 0
        #: Attempt id -> its slot, until returned (or past its lease).
        self.slots: dict[str, Slot] = {}
        #: Pair stream -> bucket (``at_us // BUCKET_US``) -> [requests, tokens].
        self.windows: dict[str, dict[int, list[int]]] = {}


def _forget(load: LoadState, at_us: int) -> None:
    """Drop slots past their lease and buckets out of the minute: they count no more."""
    expired = [attempt for attempt, slot in load.slots.items() if slot.until_us <= at_us]
    for attempt in expired:
        del load.slots[attempt]
    first = at_us // BUCKET_US - WINDOW_BUCKETS + 1
    for window in load.windows.values():
        old = [bucket for bucket in window if bucket < first]
        for bucket in old:
            del window[bucket]


def on_slot_taken(load: LoadState, event: SlotTaken) -> None:
    """Fold ``SlotTaken``: the slot is in flight and counts in its second's bucket."""
    load.version = event.version
    _forget(load, event.at_us)
    pair = pair_stream(event.credential_id, event.upstream_model)
    bucket = event.at_us // BUCKET_US
    load.slots[event.attempt_id] = Slot(pair, event.until_us, bucket, event.tokens)
    counts = load.windows.setdefault(pair, {}).setdefault(bucket, [0, 0])
    counts[0] += 1
    counts[1] += event.tokens


def on_slot_returned(load: LoadState, event: SlotReturned) -> None:
    """Fold ``SlotReturned``: the slot is free; its bucket counts the reported tokens."""
    load.version = event.version
    _forget(load, event.at_us)
    slot = load.slots.pop(event.attempt_id, None)
    if slot is None:
        return  # past its lease: already forgotten
    counts = load.windows.get(slot.pair_stream, {}).get(slot.bucket)
    if counts is not None:
        counts[1] += event.tokens - slot.tokens


def capacity_verdict(
    capacity: Capacity, load: LoadState | None, pair: str, tokens: int, now_us: int
) -> tuple[SkipReason | None, int]:
    """Whether a member of this credential admits an attempt of ``tokens`` now (rules 1-2).

    ``(None, 0)`` admits; otherwise the reason and when to look again (0: never, for
    this request).
    """
    rates = capacity.rates.get(pair)
    if rates is not None and rates[1] is not None and tokens > rates[1]:
        return SkipReason.RATE_LIMIT_REACHED, 0
    if load is None:
        return None, 0
    cap = capacity.max_in_flight
    if cap is not None and len(load.slots) >= cap:
        live = sum(1 for slot in load.slots.values() if slot.until_us > now_us)
        if live >= cap:
            return SkipReason.AT_CAPACITY, now_us + IN_FLIGHT_RECHECK_US
    if rates is None:
        return None, 0
    return _minute_verdict(rates, load.windows.get(pair, {}), tokens, now_us)


def _minute_verdict(
    rates: tuple[int | None, int | None], window: dict[int, list[int]], tokens: int, now_us: int
) -> tuple[SkipReason | None, int]:
    """Rule 2: within the pair's rpm/tpm now, else when enough buckets leave the minute."""
    rpm, tpm = rates
    first = now_us // BUCKET_US - WINDOW_BUCKETS + 1
    live = sorted((bucket, counts) for bucket, counts in window.items() if bucket >= first)
    requests = sum(counts[0] for _, counts in live)
    used = sum(counts[1] for _, counts in live)

    def admits() -> bool:
        return (rpm is None or requests < rpm) and (tpm is None or used + tokens <= tpm)

    if admits():
        return None, 0
    for bucket, counts in live:
        requests -= counts[0]
        used -= counts[1]
        if admits():
            return SkipReason.RATE_LIMIT_REACHED, (bucket + WINDOW_BUCKETS) * BUCKET_US
    return SkipReason.RATE_LIMIT_REACHED, 0  # pragma: no cover (an empty minute admits)
