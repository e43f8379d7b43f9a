"""Budget ledger benchmarks (pure core, in memory).

Prints ``BENCH <name> <value> <unit>`` lines:

* ``ledger.place_settle.us`` — decide + evolve a place and a settle of one hold
  (target <= 10 µs per pair);
* ``ledger.fold.eps`` — folding 1M ledger events (target >= 500k events/s);
* ``ledger.open_holds_1m.mb`` — resident memory added by a ledger holding 1M
  open holds, as an RSS delta (target <= 500 MB): everything the ledger keeps
  per hold (its id, state object, legs, timestamps, two dict entries).

``ledger.place_settle.us`` is the best of five rounds (the machine may be shared).

The SQLite / PostgreSQL figures (``ledger.sqlite.holds_per_s``,
``ledger.postgres4.*``) need the event store and live with it.
Run: ``.venv/bin/python bench/ledger.py`` (about a minute).
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _floors import Floors

from routeledger.core.budget import ledger
from routeledger.core.budget.decide import (
    OpenAccount,
    PlaceHold,
    SettleHold,
    decide_open_account,
    decide_place_hold,
    decide_settle_hold,
)
from routeledger.core.budget.events import BudgetEvent
from routeledger.core.budget.values import AMOUNT_MAX, AccountScope, Unit, Usage
from routeledger.core.time import US_PER_S

T0_US = 1_800_000_000 * US_PER_S
TTL_US = 300 * US_PER_S
ESTIMATE = Usage(cost_micros=20_000, tokens=2_000, requests=1)
ACTUAL = Usage(cost_micros=12_345, tokens=1_234, requests=1)


def _utc(name: str) -> object:
    raise AssertionError("benchmarks use periods without a zone")


def _opened(account_ids: list[str], log: list[BudgetEvent] | None = None) -> ledger.LedgerState:
    state = ledger.initial()
    for account_id in account_ids:
        d = decide_open_account(
            state,
            OpenAccount(
                command_id="open-" + account_id,
                account_id=account_id,
                scope=AccountScope.KEY,
                unit=Unit.MICROS,
                limit=AMOUNT_MAX,
            ),
            now_us=T0_US,
            zones=_utc,  # type: ignore[arg-type]
        )
        ledger.fold(d.events, state)
        if log is not None:
            log.extend(d.events)
    return state


def bench_place_settle(pairs: int, rounds: int = 5) -> float:
    """Microseconds per (place + settle), each decided and evolved; best of ``rounds``."""
    return min(_place_settle_round(pairs, r) for r in range(rounds))


def _place_settle_round(pairs: int, round_no: int) -> float:
    state = _opened(["key-1"])
    accounts = ("key-1",)
    evolve = ledger.fold
    ids = [f"h{round_no}-{i}" for i in range(pairs)]
    gc.collect()
    start = time.perf_counter_ns()
    for i, hold_id in enumerate(ids):
        now = T0_US + i
        placed = decide_place_hold(
            state,
            PlaceHold(hold_id=hold_id, account_ids=accounts, estimate=ESTIMATE, ttl_us=TTL_US),
            now_us=now,
        )
        evolve(placed.events, state)
        settled = decide_settle_hold(
            state, SettleHold(command_id="s", hold_id=hold_id, usage=ACTUAL), now_us=now
        )
        evolve(settled.events, state)
    elapsed = time.perf_counter_ns() - start
    ledger.check_invariants(state)
    return elapsed / pairs / 1_000


def _history(holds: int) -> list[BudgetEvent]:
    """A log of ``holds`` placed-and-settled holds over 3 accounts (4 events per hold)."""
    events: list[BudgetEvent] = []
    state = _opened(["key-1", "user-1", "team-1"], events)
    accounts = ("key-1", "user-1", "team-1")
    for i in range(holds):
        now = T0_US + i
        d = decide_place_hold(
            state,
            PlaceHold(hold_id=f"h{i}", account_ids=accounts, estimate=ESTIMATE, ttl_us=TTL_US),
            now_us=now,
        )
        ledger.fold(d.events, state)
        events.extend(d.events)
        s = decide_settle_hold(
            state, SettleHold(command_id="s", hold_id=f"h{i}", usage=ACTUAL), now_us=now
        )
        ledger.fold(s.events, state)
        events.extend(s.events)
    return events


def bench_fold(target_events: int) -> float:
    """Events per second folding a log of about ``target_events`` ledger events."""
    events = _history(target_events // 8)
    gc.collect()
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter_ns()
        ledger.fold(events)
        best = min(best, time.perf_counter_ns() - start)
    return len(events) / (best / 1e9)


def _rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_open_holds(holds: int) -> float:
    """MB of resident memory added by a ledger holding ``holds`` open holds (events dropped).

    RSS delta rather than tracemalloc: it includes allocator overhead and does
    not slow the million placements down threefold.
    """
    state = _opened(["key-1"])
    accounts = ("key-1",)
    gc.collect()
    before = _rss_bytes()
    for i in range(holds):
        hold_id = f"hold-{i:08d}"
        d = decide_place_hold(
            state,
            PlaceHold(hold_id=hold_id, account_ids=accounts, estimate=ESTIMATE, ttl_us=TTL_US),
            now_us=T0_US + i,
        )
        ledger.fold(d.events, state)
    gc.collect()
    after = _rss_bytes()
    if len(state.open_holds) != holds:
        raise AssertionError("every hold should still be open")
    return (after - before) / 1e6


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    pairs = 10_000 if quick else 50_000
    fold_events = 100_000 if quick else 1_000_000
    holds = 100_000 if quick else 1_000_000
    floors = Floors("attrs_event_us")
    place_settle = bench_place_settle(pairs)
    print(f"BENCH ledger.place_settle.us {place_settle:.2f} us", flush=True)
    floors.ratio("ledger.place_settle.us", place_settle, "attrs_event_us")
    fold_rate = bench_fold(fold_events)
    print(f"BENCH ledger.fold.eps {fold_rate:.0f} events/s", flush=True)
    floors.rate_ratio("ledger.fold.eps", fold_rate, "attrs_event_us")
    print(f"BENCH ledger.open_holds_1m.mb {bench_open_holds(holds) * 1_000_000 / holds:.1f} MB")
    floors.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
