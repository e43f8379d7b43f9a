"""F3 durable figures: place-hold throughput on SQLite, and on PostgreSQL with 4 processes.

Figures: ledger.sqlite.holds_per_s, ledger.postgres4.holds_per_s, ledger.postgres4.retry_rate
(conflict retries per admitted decision). Each hold is one decision: a batch of the
hold event plus its account entry, appended with optimistic concurrency.
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from datetime import UTC, tzinfo
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import figure, postgres_url

from routeledger.adapters.runtime import Runtime
from routeledger.adapters.store import open_store
from routeledger.core.budget.decide import (
    OpenAccount,
    PlaceHold,
    decide_open_account,
    decide_place_hold,
)
from routeledger.core.budget.values import Scope, Unit, Usage
from routeledger.core.time import US_PER_S

LIMIT = 10**15


def utc(_: str) -> tzinfo:
    return UTC


def clock() -> int:
    return time.time_ns() // 1_000


def open_accounts(url: str, accounts: list[str]) -> None:
    with open_store(url) as store:
        runtime = Runtime(store, clock)
        for account in accounts:
            command = OpenAccount(
                command_id=f"open-{account}",
                account_id=account,
                scope=Scope.TEAM,
                unit=Unit.MICROS,
                limit=LIMIT,
            )
            runtime.run(
                lambda s, now, c=command: decide_open_account(s.budget, c, now_us=now, zones=utc),
                lambda d: d.events,
            )


def place_many(url: str, prefix: str, count: int, accounts: tuple[str, ...]) -> tuple[int, int]:
    with open_store(url) as store:
        runtime = Runtime(store, clock)
        runtime.catch_up()
        for i in range(count):
            command = PlaceHold(
                hold_id=f"{prefix}-{i}",
                account_ids=accounts,
                estimate=Usage(cost_micros=10),
                ttl_us=600 * US_PER_S,
            )
            runtime.run(
                lambda s, now, c=command: decide_place_hold(s.budget, c, now_us=now),
                lambda d: d.events,
            )
        return count, runtime.conflicts


def _worker(url: str, worker: int, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(place_many(url, f"w{worker}", count, ("team",)))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/ledger.db"
        open_accounts(url, ["team"])
        began = time.perf_counter()
        placed, _ = place_many(url, "s", 2_000, ("team",))
        figure("ledger.sqlite.holds_per_s", placed / (time.perf_counter() - began), "holds/s")
    pg = postgres_url()
    if pg is None:
        print("bench: no PostgreSQL; skipping ledger.postgres4.*", file=sys.stderr)
        return
    open_accounts(pg, ["team"])
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    per_process = 250
    workers = [ctx.Process(target=_worker, args=(pg, w, per_process, out)) for w in range(4)]
    began = time.perf_counter()
    for process in workers:
        process.start()
    results = [out.get(timeout=600) for _ in workers]
    elapsed = time.perf_counter() - began
    for process in workers:
        process.join()
    placed = sum(r[0] for r in results)
    retries = sum(r[1] for r in results)
    figure("ledger.postgres4.holds_per_s", placed / elapsed, "holds/s")
    figure("ledger.postgres4.retry_rate", retries / placed, "retries/hold")


if __name__ == "__main__":
    main()
