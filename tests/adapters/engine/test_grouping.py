"""Group commit of hold commands: concurrent callers share commits and stay exact (D4, L2, L10)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, tzinfo

import pytest

from routeledger.adapters.engine.grouping import GroupCommitter, HoldCommitter
from routeledger.adapters.engine.runtime import Runtime
from routeledger.adapters.store.eventstore import EventStore, StoreUnavailable, open_store
from routeledger.core.budget import ledger
from routeledger.core.budget.decide import (
    Decision,
    OpenAccount,
    PlaceHold,
    SettleHold,
    decide_open_account,
    decide_place_hold,
)
from routeledger.core.budget.group import HoldCommand, HoldResult, decide_holds
from routeledger.core.budget.values import AccountScope, RejectionReason, Unit, Usage
from routeledger.core.errors import InvariantViolation, UsageError
from routeledger.core.events import Event
from routeledger.core.fold import Folded, fold_log
from routeledger.core.time import US_PER_S
from tests.batches import folded_between_decisions

LIMIT = 1_000
TTL_US = 60 * US_PER_S


def utc(_: str) -> tzinfo:
    return UTC


def clock() -> int:
    return time.time_ns() // 1_000


def _open(runtime: Runtime, account_id: str = "team", limit: int = LIMIT) -> None:
    command = OpenAccount(
        command_id="open-" + account_id,
        account_id=account_id,
        scope=AccountScope.TEAM,
        unit=Unit.MICROS,
        limit=limit,
    )
    runtime.run(
        lambda s, now: decide_open_account(s.budget, command, now_us=now, zones=utc),
        lambda d: d.events,
    )


def _place(hold_id: str, amount: int, account: str = "team") -> PlaceHold:
    return PlaceHold(
        hold_id=hold_id, account_ids=(account,), estimate=Usage(cost_micros=amount), ttl_us=TTL_US
    )


def _submit_all(committer: HoldCommitter, commands: Sequence[PlaceHold]) -> list[object]:
    """Submit each command from its own thread; return each outcome (decision or error)."""
    results: list[object] = [None] * len(commands)

    def run(index: int) -> None:
        try:
            results[index] = committer.submit(commands[index])
        except Exception as error:  # the test inspects it
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(commands))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def _queued_then_release(committer: HoldCommitter, commands: Sequence[PlaceHold]) -> list[object]:
    """Hold the runtime busy: the first command's leader waits, the rest queue, then release.

    The first command is committed alone; the others are all queued by then and
    go to the next leader's group.
    """
    led: list[object] = []
    followed: list[object] = []
    first, rest = commands[0], commands[1:]
    with committer.runtime.lock:
        lead = threading.Thread(target=lambda: led.extend(_submit_all(committer, [first])))
        lead.start()
        _wait_for(lambda: committer._leading and not committer._queue)  # group taken
        follow = threading.Thread(target=lambda: followed.extend(_submit_all(committer, rest)))
        follow.start()
        _wait_for(lambda: len(committer._queue) == len(rest))
    lead.join(30)
    follow.join(30)
    return [*led, *followed]  # in command order, whichever thread ended first


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the committer"
        time.sleep(0.001)


def test_queued_holds_share_one_commit(store_url: str) -> None:
    """Nine holds queued while a commit is in progress are decided and recorded in the next one."""
    with open_store(store_url) as store:
        runtime = Runtime(store, clock)
        _open(runtime)
        committer = HoldCommitter(runtime)
        head = store.max_position()

        results = _queued_then_release(committer, [_place(f"h{i}", 150) for i in range(10)])

        assert committer.commits == 2 and committer.commands == 10
        admitted = [r for r in results if getattr(r, "accepted", False)]
        refused = [r for r in results if getattr(r, "rejection", None) is not None]
        assert len(admitted) == 6 and len(refused) == 4  # 6 * 150 <= 1000 < 7 * 150
        assert {r.rejection.reason for r in refused} == {RejectionReason.BUDGET_EXCEEDED}  # type: ignore[attr-defined]
        records = list(store.read_all(head))
        assert len(records) == 6 * 2 + 4  # placed + reserved each; one rejection event each
        assert runtime.state.budget.accounts["team"].reserved == 900
        again = fold_log(store.read_all())
        ledger.check_invariants(again.budget)
        assert again.budget.accounts["team"].reserved == 900


def test_hot_account_from_many_threads_never_overspends(store_url: str) -> None:
    """Eight threads placing and settling on one account keep spent + reserved <= limit at every decision."""
    with open_store(store_url) as store:
        runtime = Runtime(store, clock)
        _open(runtime)
        committer = HoldCommitter(runtime)
        admitted: list[str] = []
        lock = threading.Lock()

        def worker(w: int) -> None:
            rng = random.Random(w)
            for i in range(20):
                hold_id = f"w{w}-{i}"
                amount = rng.choice([0, 1, 99, 250, LIMIT])
                decision = committer.submit(_place(hold_id, amount))
                if decision.accepted and rng.random() < 0.7:
                    with lock:
                        admitted.append(hold_id)
                    usage = Usage(cost_micros=rng.randint(0, amount + 10))
                    committer.submit(
                        SettleHold(command_id=hold_id + "/s", hold_id=hold_id, usage=usage)
                    )

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        records = list(store.read_all())
        folded = fold_log([])
        for folded in folded_between_decisions(records):
            ledger.check_invariants(folded.budget)
            account = folded.budget.accounts["team"]
            assert account.reserved <= LIMIT
        assert committer.commands == 160 + len(admitted)
        assert all(folded.budget.holds[h].status.value == "settled" for h in admitted)
        assert (
            folded.budget.accounts["team"].reserved
            == runtime.state.budget.accounts["team"].reserved
        )


def test_a_conflicting_writer_makes_the_group_decide_again(tmp_path: object) -> None:
    """A hold another process recorded first is seen when the group is re-decided after the conflict."""
    url = f"sqlite:///{tmp_path}/shared.db"
    with open_store(url) as first, open_store(url) as second:
        ours = Runtime(first, clock, catch_up_first=False)
        _open(ours)
        theirs = Runtime(second, clock)
        theirs.run(
            lambda s, now: decide_place_hold(s.budget, _place("theirs", 700), now_us=now),
            lambda d: d.events,
        )
        committer = HoldCommitter(ours)

        results = _queued_then_release(committer, [_place("a", 200), _place("b", 200)])

        assert ours.conflicts >= 1
        assert sorted(getattr(r, "accepted", None) for r in results) == [False, True]
        assert ours.state.budget.accounts["team"].reserved == 900


class _FailingStore(EventStore):
    """A store whose appends fail as if the database went away."""

    def append(self, events: Sequence[Event]) -> tuple[int, ...]:
        raise StoreUnavailable("database went away")


def test_a_failed_commit_reaches_every_caller_and_records_nothing(tmp_path: object) -> None:
    """When the group's append fails, every caller of the group gets the error and nothing is recorded."""
    url = f"sqlite:///{tmp_path}/failing.db"
    with open_store(url) as store:
        runtime = Runtime(store, clock)
        _open(runtime)
        head = store.max_position()
        store.__class__ = _FailingStore
        committer = HoldCommitter(runtime)

        results = _queued_then_release(committer, [_place(f"h{i}", 1) for i in range(4)])

        assert all(isinstance(r, StoreUnavailable) for r in results)
        store.__class__ = EventStore
        assert store.max_position() == head
        assert runtime.state.budget.accounts["team"].reserved == 0


def test_misuse_is_raised_to_its_caller_only(store_url: str) -> None:
    """A malformed command raises UsageError for its caller; the others in its group are recorded."""
    with open_store(store_url) as store:
        runtime = Runtime(store, clock)
        _open(runtime)
        committer = HoldCommitter(runtime)

        results = _queued_then_release(
            committer, [_place("ok-1", 1), _place("bad id", 1), _place("ok-2", 1)]
        )

        assert isinstance(results[1], UsageError)
        assert [getattr(results[i], "accepted", None) for i in (0, 2)] == [True, True]
        assert set(runtime.state.budget.open_holds) == {"ok-1", "ok-2"}


def test_group_max_is_checked() -> None:
    """A group size outside 1..GROUP_COMMANDS_MAX is refused when the committer is built."""
    with open_store("memory://") as store, pytest.raises(UsageError, match="group_max"):
        HoldCommitter(Runtime(store, clock), group_max=0)


def test_async_callers_share_commits_and_keep_the_limit(tmp_path: object) -> None:
    """Sixty-four tasks placing holds on one account share commits and never exceed its limit."""
    url = f"sqlite:///{tmp_path}/async.db"

    async def main(committer: HoldCommitter) -> list[object]:
        return list(
            await asyncio.gather(
                *(committer.asubmit(_place(f"t{i}", 10)) for i in range(200)),
                return_exceptions=True,
            )
        )

    with open_store(url) as store:
        runtime = Runtime(store, clock)
        _open(runtime)
        committer = HoldCommitter(runtime)

        results = asyncio.run(main(committer))

        assert sum(getattr(r, "accepted", False) for r in results) == LIMIT // 10
        assert committer.commands == 200 and committer.commits < 50
        folded = fold_log(store.read_all())
        ledger.check_invariants(folded.budget)
        assert folded.budget.accounts["team"].reserved == LIMIT


def test_a_cancelled_async_caller_does_not_stall_the_others(tmp_path: object) -> None:
    """Cancelling a task awaiting its hold still records the hold and every other task completes."""
    url = f"sqlite:///{tmp_path}/cancel.db"

    async def main(committer: HoldCommitter) -> list[object]:
        tasks = [asyncio.create_task(committer.asubmit(_place(f"c{i}", 1))) for i in range(20)]
        await asyncio.sleep(0)
        tasks[0].cancel()
        tasks[7].cancel()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    with open_store(url) as store:
        runtime = Runtime(store, clock)
        _open(runtime)
        committer = HoldCommitter(runtime)

        results = asyncio.run(main(committer))

        assert isinstance(results[0], asyncio.CancelledError)
        assert all(getattr(r, "accepted", False) for i, r in enumerate(results) if i not in (0, 7))
        assert set(fold_log(store.read_all()).budget.open_holds) == {f"c{i}" for i in range(20)}


def test_threads_and_tasks_can_share_one_committer(tmp_path: object) -> None:
    """Thread callers and coroutine callers on one committer are all served exactly once."""
    url = f"sqlite:///{tmp_path}/mixed.db"
    with open_store(url) as store:
        runtime = Runtime(store, clock)
        _open(runtime, limit=10**9)
        committer = HoldCommitter(runtime)

        async def tasks() -> list[object]:
            return list(
                await asyncio.gather(*(committer.asubmit(_place(f"a{i}", 1)) for i in range(60)))
            )

        thread_results: list[object] = []
        worker = threading.Thread(
            target=lambda: thread_results.extend(
                _submit_all(committer, [_place(f"t{i}", 1) for i in range(40)])
            )
        )
        worker.start()
        task_results = asyncio.run(tasks())
        worker.join(60)

        assert all(getattr(r, "accepted", False) for r in [*task_results, *thread_results])
        assert len(runtime.state.budget.open_holds) == 100 == committer.commands


def test_commands_a_decider_leaves_wait_for_the_next_group() -> None:
    """Commands a decider does not take stay first in line and are each served exactly once."""
    with open_store("memory://") as store:
        runtime = Runtime(store, clock)

        def one_at_a_time(state: object, commands: Sequence[str], now_us: int) -> list[str]:
            return [f"took {commands[0]} with {len(commands) - 1} behind"]

        committer: GroupCommitter[str, str] = GroupCommitter(
            runtime, one_at_a_time, lambda outcome: ()
        )
        results = _queued_then_release(committer, ["a", "b", "c", "d"])  # type: ignore[arg-type]

        assert sorted(results) == [  # type: ignore[type-var]
            "took a with 0 behind",
            "took b with 2 behind",
            "took c with 1 behind",
            "took d with 0 behind",
        ]
        assert committer.commits == 4 == committer.commands


def test_a_decider_taking_nothing_is_a_bug_reported_to_every_caller() -> None:
    """A group decider that returns no outcome raises InvariantViolation in its callers."""
    with open_store("memory://") as store:
        committer: GroupCommitter[str, str] = GroupCommitter(
            Runtime(store, clock), lambda state, commands, now: [], lambda outcome: ()
        )
        with pytest.raises(InvariantViolation, match="0 outcomes for 1"):
            committer.submit("a")


def test_a_loop_closed_mid_commit_does_not_leave_the_committer_stuck(tmp_path: object) -> None:
    """After an event loop is torn down with a commit in flight and a caller queued, the next loop is served."""
    url = f"sqlite:///{tmp_path}/closed.db"
    with open_store(url) as store:
        runtime = Runtime(store, clock)
        _open(runtime)
        real_append = store.append

        def slow(events: Sequence[Event]) -> tuple[int, ...]:
            time.sleep(0.2)
            return real_append(events)

        store.append = slow  # type: ignore[method-assign]
        committer = HoldCommitter(runtime)

        async def abandon() -> None:
            asyncio.get_running_loop().create_task(committer.asubmit(_place("first", 1)))
            await asyncio.sleep(0.05)  # "first" is being committed
            asyncio.get_running_loop().create_task(committer.asubmit(_place("queued", 1)))
            await asyncio.sleep(0.01)  # "queued" waits; the loop now ends, cancelling both

        asyncio.run(abandon())
        store.append = real_append  # type: ignore[method-assign]

        async def later() -> object:
            return await asyncio.wait_for(committer.asubmit(_place("later", 1)), timeout=10)

        decision = asyncio.run(later())

        assert getattr(decision, "accepted", False)
        assert "later" in runtime.state.budget.open_holds


def _threads_committer(
    runtime: Runtime, alone: Callable[[], bool]
) -> tuple[GroupCommitter[HoldCommand, Decision], list[int]]:
    """A hold committer that notes the thread each group is decided on."""
    threads: list[int] = []

    def decide(state: Folded, commands: Sequence[HoldCommand], now_us: int) -> list[HoldResult]:
        threads.append(threading.get_ident())
        return list(decide_holds(state.budget, commands, now_us=now_us))

    committer: GroupCommitter[HoldCommand, Decision] = GroupCommitter(
        runtime, decide, lambda d: d.events, alone=alone
    )
    return committer, threads


def test_a_lone_coroutine_commits_on_its_loop_and_a_crowd_in_the_worker(tmp_path: object) -> None:
    """While ``alone()`` holds, a coroutine's commit runs on the loop's thread; otherwise in a worker."""
    crowded = False

    async def main(committer: GroupCommitter[HoldCommand, Decision]) -> None:
        await committer.asubmit(_place("lone", 10))
        nonlocal crowded
        crowded = True
        await asyncio.gather(*(committer.asubmit(_place(f"c{i}", 10)) for i in range(8)))

    with open_store(f"sqlite:///{tmp_path}/alone.db") as store:
        runtime = Runtime(store, clock)
        _open(runtime)
        committer, threads = _threads_committer(runtime, lambda: not crowded)

        asyncio.run(main(committer))

        assert threads[0] == threading.get_ident()
        assert threads[1:] and threading.get_ident() not in threads[1:]
        assert fold_log(store.read_all()).budget.accounts["team"].reserved == 90
