"""D4 on a real store: 4 OS processes hammering one budget account never overspend or lose a hold."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, tzinfo

import pytest

from routeledger.adapters.engine.grouping import HoldCommitter
from routeledger.adapters.engine.runtime import Runtime
from routeledger.adapters.store.eventstore import open_store
from routeledger.core.budget import ledger
from routeledger.core.budget.decide import (
    OpenAccount,
    PlaceHold,
    RefundHold,
    SettleHold,
    decide_open_account,
    decide_place_hold,
    decide_refund_hold,
    decide_settle_hold,
)
from routeledger.core.budget.values import AccountScope, Unit, Usage
from routeledger.core.fold import fold_log
from routeledger.core.time import US_PER_S
from tests.batches import folded_between_decisions

PROCESSES = 4
HOLDS_PER_PROCESS = 30
LIMIT_MICROS = 2_000
TTL_US = 60 * US_PER_S


def utc(_: str) -> tzinfo:
    return UTC


def wall_clock_us() -> int:
    return time.time_ns() // 1_000


def _grouped_worker(url: str, worker: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Like :func:`_worker`, but 3 threads per process share commits through a HoldCommitter."""
    admitted: list[str] = []
    with open_store(url) as store:
        runtime = Runtime(store, wall_clock_us)
        runtime.catch_up()
        committer = HoldCommitter(runtime)

        def caller(thread: int) -> None:
            rng = random.Random(worker * 10 + thread)
            for i in range(HOLDS_PER_PROCESS // 3):
                hold_id = f"w{worker}-t{thread}-h{i}"
                amount = rng.choice([1, 50, 100, 250, LIMIT_MICROS // 4])
                decision = committer.submit(
                    PlaceHold(
                        hold_id=hold_id,
                        account_ids=("team",),
                        estimate=Usage(cost_micros=amount),
                        ttl_us=TTL_US,
                    )
                )
                if not decision.accepted:
                    continue
                admitted.append(hold_id)
                if rng.random() < 0.5:
                    usage = Usage(cost_micros=rng.randint(0, amount))
                    committer.submit(
                        SettleHold(command_id=f"{hold_id}/settle", hold_id=hold_id, usage=usage)
                    )
                else:
                    committer.submit(RefundHold(command_id=f"{hold_id}/refund", hold_id=hold_id))

        threads = [threading.Thread(target=caller, args=(t,)) for t in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    results.put((worker, admitted, runtime.conflicts))


def _worker(url: str, worker: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    rng = random.Random(worker)
    admitted: list[str] = []
    with open_store(url) as store:
        runtime = Runtime(store, wall_clock_us)
        runtime.catch_up()
        for i in range(HOLDS_PER_PROCESS):
            hold_id = f"w{worker}-h{i}"
            amount = rng.choice([1, 50, 100, 250, LIMIT_MICROS // 4])
            command = PlaceHold(
                hold_id=hold_id,
                account_ids=("team",),
                estimate=Usage(cost_micros=amount),
                ttl_us=TTL_US,
            )
            decision = runtime.run(
                lambda s, now, c=command: decide_place_hold(s.budget, c, now_us=now),
                lambda d: d.events,
            )
            if not decision.accepted:
                continue
            admitted.append(hold_id)
            if rng.random() < 0.5:
                usage = Usage(cost_micros=rng.randint(0, amount))
                settle = SettleHold(command_id=f"{hold_id}/settle", hold_id=hold_id, usage=usage)
                runtime.run(
                    lambda s, now, c=settle: decide_settle_hold(s.budget, c, now_us=now),
                    lambda d: d.events,
                )
            else:
                refund = RefundHold(command_id=f"{hold_id}/refund", hold_id=hold_id)
                runtime.run(
                    lambda s, now, c=refund: decide_refund_hold(s.budget, c, now_us=now),
                    lambda d: d.events,
                )
    results.put((worker, admitted, runtime.conflicts))


@pytest.mark.parametrize("worker", [_worker, _grouped_worker], ids=["serial", "grouped"])
def test_four_processes_on_one_account_never_overspend_and_lose_no_hold(
    shared_store_url: str, worker: Callable[..., None]
) -> None:
    """D4/L1/L2: with 4 writers, every prefix of the log keeps spent + reserved <= limit."""
    with open_store(shared_store_url) as store:
        runtime = Runtime(store, wall_clock_us)
        opened = runtime.run(
            lambda s, now: decide_open_account(
                s.budget,
                OpenAccount(
                    command_id="open-team",
                    account_id="team",
                    scope=AccountScope.TEAM,
                    unit=Unit.MICROS,
                    limit=LIMIT_MICROS,
                ),
                now_us=now,
                zones=utc,
            ),
            lambda d: d.events,
        )
        assert opened.accepted
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    workers = [
        ctx.Process(target=worker, args=(shared_store_url, w, results)) for w in range(PROCESSES)
    ]
    for process in workers:
        process.start()
    reports = [results.get(timeout=240) for _ in workers]
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    admitted = {hold for _, holds, _ in reports for hold in holds}
    with open_store(shared_store_url) as store:
        records = list(store.read_all())
    folded = fold_log([])
    for folded in folded_between_decisions(records):
        account = folded.budget.accounts["team"]
        assert account.spent + account.reserved <= LIMIT_MICROS
        ledger.check_invariants(folded.budget)
    holds = folded.budget.holds
    assert admitted <= set(holds)
    assert all(holds[h].status.value in {"settled", "refunded"} for h in admitted)
    assert folded.budget.accounts["team"].reserved == 0
    assert len(admitted) > 0
