"""F3 durable figures: place-hold throughput on SQLite, and on PostgreSQL with 4 processes.

Figures:

* ``ledger.sqlite.holds_per_s`` — 64 concurrent callers (asyncio tasks of one process,
  as an async gateway's request handlers) placing holds on one hot account through the
  group committer (``adapters/grouping.py``): holds queued while a commit is in
  progress share the next one; ``ledger.sqlite.holds_per_commit`` is the mean group;
* ``ledger.sqlite.threads.*`` — the same with 64 threads (a sync gateway);
* ``ledger.sqlite.serial.holds_per_s`` — the baseline measured in the same run: one
  caller, one commit per hold;
* ``ledger.postgres4.holds_per_s`` / ``ledger.postgres4.retry_rate`` — 4 processes ×
  16 callers each, grouped, on one hot account of one PostgreSQL (conflict retries
  per hold: a retry re-decides a whole group);
* ``ledger.postgres4.serial.holds_per_s`` / ``.serial.retry_rate`` — 4 processes, one
  caller each, one commit per hold.

Each hold is one decision: the hold event plus its account entry, appended with
optimistic concurrency (fsync on: SQLite's defaults, PostgreSQL's durable settings).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import tempfile
import threading
import time
from datetime import UTC, tzinfo
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import figure, postgres_url
from _floors import Floors

from routeledger.adapters.engine.grouping import HoldCommitter
from routeledger.adapters.engine.runtime import Runtime
from routeledger.adapters.store.eventstore import open_store
from routeledger.core.budget.decide import (
    OpenAccount,
    PlaceHold,
    decide_open_account,
    decide_place_hold,
)
from routeledger.core.budget.values import AccountScope, Unit, Usage
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
                scope=AccountScope.TEAM,
                unit=Unit.MICROS,
                limit=LIMIT,
            )
            runtime.run(
                lambda s, now, c=command: decide_open_account(s.budget, c, now_us=now, zones=utc),
                lambda d: d.events,
            )


def _hold(hold_id: str, accounts: tuple[str, ...]) -> PlaceHold:
    return PlaceHold(
        hold_id=hold_id, account_ids=accounts, estimate=Usage(cost_micros=10), ttl_us=600 * US_PER_S
    )


def place_many(url: str, prefix: str, count: int, accounts: tuple[str, ...]) -> tuple[int, int]:
    with open_store(url) as store:
        runtime = Runtime(store, clock)
        runtime.catch_up()
        for i in range(count):
            command = _hold(f"{prefix}-{i}", accounts)
            runtime.run(
                lambda s, now, c=command: decide_place_hold(s.budget, c, now_us=now),
                lambda d: d.events,
            )
        return count, runtime.conflicts


def place_grouped(
    url: str, prefix: str, callers: int, per_caller: int, accounts: tuple[str, ...]
) -> tuple[int, int, int]:
    """``callers`` threads each placing ``per_caller`` holds through one committer.

    Returns (holds placed, conflict retries, commits).
    """
    with open_store(url) as store:
        runtime = Runtime(store, clock)
        runtime.catch_up()
        committer = HoldCommitter(runtime)

        def caller(c: int) -> None:
            for i in range(per_caller):
                committer.submit(_hold(f"{prefix}-{c}-{i}", accounts))

        threads = [threading.Thread(target=caller, args=(c,)) for c in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return committer.commands, runtime.conflicts, committer.commits


def place_async(
    url: str, prefix: str, callers: int, per_caller: int, accounts: tuple[str, ...]
) -> tuple[int, int, int]:
    """``callers`` asyncio tasks each placing ``per_caller`` holds through one committer."""
    with open_store(url) as store:
        runtime = Runtime(store, clock)
        runtime.catch_up()
        committer = HoldCommitter(runtime)

        async def caller(c: int) -> None:
            for i in range(per_caller):
                await committer.asubmit(_hold(f"{prefix}-{c}-{i}", accounts))

        async def main() -> None:
            await asyncio.gather(*(caller(c) for c in range(callers)))

        asyncio.run(main())
        return committer.commands, runtime.conflicts, committer.commits


def _worker(url: str, worker: int, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    placed, conflicts = place_many(url, f"w{worker}", count, ("team",))
    out.put((placed, conflicts, placed))


def _grouped_worker(url: str, worker: int, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(place_grouped(url, f"g{worker}", 16, count // 16, ("team",)))


def _four_processes(url: str, target: object, per_process: int) -> tuple[float, float]:
    """Holds/s and retries per hold of 4 processes running ``target`` on one account."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    workers = [ctx.Process(target=target, args=(url, w, per_process, out)) for w in range(4)]  # type: ignore[arg-type]
    began = time.perf_counter()
    for process in workers:
        process.start()
    results = [out.get(timeout=600) for _ in workers]
    elapsed = time.perf_counter() - began
    for process in workers:
        process.join()
    placed = sum(r[0] for r in results)
    return placed / elapsed, sum(r[1] for r in results) / placed


def main() -> None:
    """Ratios: the time per hold over one bare commit of the same database."""
    pg = postgres_url()
    floors = Floors("sqlite_commit_us", *(("postgres_commit_us",) if pg else ()), postgres=pg)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/ledger.db"
        open_accounts(url, ["team"])
        began = time.perf_counter()
        placed, _ = place_many(url, "s", 2_000, ("team",))
        serial = placed / (time.perf_counter() - began)
        began = time.perf_counter()
        placed, _, commits = place_async(url, "a", 64, 300, ("team",))
        grouped = placed / (time.perf_counter() - began)
        began = time.perf_counter()
        placed_t, _, commits_t = place_grouped(url, "t", 64, 300, ("team",))
        threaded = placed_t / (time.perf_counter() - began)
        figure("ledger.sqlite.holds_per_s", grouped, "holds/s")
        figure("ledger.sqlite.holds_per_commit", placed / commits, "holds")
        figure("ledger.sqlite.threads.holds_per_s", threaded, "holds/s")
        figure("ledger.sqlite.threads.holds_per_commit", placed_t / commits_t, "holds")
        figure("ledger.sqlite.serial.holds_per_s", serial, "holds/s")
        for name, value in (("", grouped), (".threads", threaded), (".serial", serial)):
            floors.rate_ratio(f"ledger.sqlite{name}.holds_per_s", value, "sqlite_commit_us")
    if pg is None:
        print("bench: no PostgreSQL; skipping ledger.postgres4.*", file=sys.stderr)
        floors.finish()
        return
    open_accounts(pg, ["team"])
    rate, retries = _four_processes(pg, _grouped_worker, 1_600)
    figure("ledger.postgres4.holds_per_s", rate, "holds/s")
    floors.rate_ratio("ledger.postgres4.holds_per_s", rate, "postgres_commit_us")
    figure("ledger.postgres4.retry_rate", retries, "retries/hold")
    rate, retries = _four_processes(pg, _worker, 250)
    figure("ledger.postgres4.serial.holds_per_s", rate, "holds/s")
    floors.rate_ratio("ledger.postgres4.serial.holds_per_s", rate, "postgres_commit_us")
    figure("ledger.postgres4.serial.retry_rate", retries, "retries/hold")
    floors.finish()


if __name__ == "__main__":
    main()
