"""Group commit of budget hold commands: many concurrent holds, one durable commit.

A durable append costs one sync (see ``bench/README.md``), so appending each
hold on its own caps a gateway at the commit rate however many requests run
at once. :class:`HoldCommitter` lets
concurrent callers share commits, leader/follower style, as databases do:

1. a caller queues its command;
2. while another caller leads a commit, it sleeps until its command is done
   or it is woken to lead the next group;
3. a leader (the first caller when no one leads, then the oldest waiting
   caller, handed over by the previous leader) takes up to
   :data:`~routeledger.core.budget.group.GROUP_COMMANDS_MAX` queued commands,
   decides them as one group (:func:`~routeledger.core.budget.group.decide_holds`:
   each sees the ones before it, exactly as if appended one by one), appends
   all their events in one atomic batch and hands every caller its decision.

While a leader waits for the disk, newcomers queue; the next leader commits
them together. A lone caller pays no extra latency: it is its own leader at
once. Safety: the group is decided from the state folded from the log, its
events are recorded before anyone acts on them (L10), and a conflict with
another process re-decides the whole group from fresher state through
:meth:`Runtime.run` (nothing was folded in between, so nothing needs undoing).
If the append fails for good, every caller of the group gets the error and
nothing of the group was recorded.

Async callers (:meth:`GroupCommitter.asubmit`) never lead: a driver task on
their event loop commits groups in the default executor, so the loop keeps
queueing new commands while the disk syncs (one loop, one worker thread: no
convoy of threads fighting for the interpreter lock). Cancelling an awaiting
caller does not withdraw its command: once queued it is decided and recorded
like the others (the caller that gave up must resolve what it started; the
engine does).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from routeledger.adapters.engine.runtime import Runtime
from routeledger.core.budget.decide import Decision
from routeledger.core.budget.group import GROUP_COMMANDS_MAX, HoldCommand, HoldResult, decide_holds
from routeledger.core.errors import InvariantViolation, UsageError
from routeledger.core.events import Event
from routeledger.core.fold import Folded

__all__ = ["GroupCommitter", "HoldCommitter", "Slot"]

C = TypeVar("C")
R = TypeVar("R")


class Slot(Generic[C, R]):
    """One queued command and, once committed, what it came to."""

    __slots__ = ("command", "done", "error", "future", "loop", "outcome", "wake")

    def __init__(self, command: C, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.command = command
        self.done = False
        self.outcome: R | None = None
        self.error: BaseException | None = None
        self.loop = loop
        #: A waiting thread caller's wake-up (see :meth:`will_wait`); a caller
        #: that leads at once never waits and has none.
        self.wake: threading.Lock | None = None
        if loop is not None:
            self.future: asyncio.Future[None] = loop.create_future()

    def will_wait(self) -> threading.Lock:
        """A thread caller is about to wait (called under the committer's mutex, before queueing).

        The lock is held until the caller may go on (its command is done, or it
        is to lead the next group): a bare lock is the cheapest wake-up.
        """
        wake = self.wake = threading.Lock()
        wake.acquire()
        return wake

    def resume(self) -> None:
        """Let the caller go on (from any thread)."""
        if self.loop is None:
            if self.wake is not None:  # None: the caller leads, it is not waiting
                self.wake.release()
        else:
            self.loop.call_soon_threadsafe(_settle, self.future)

    def result(self) -> R:
        if self.error is not None:
            raise self.error
        outcome = self.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert self.done
        return outcome  # type: ignore[return-value]


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class GroupCommitter(Generic[C, R]):
    """Thread- and task-safe group commit of commands on one :class:`Runtime`.

    ``decide_group(state, commands, now_us)`` must decide the commands in order,
    each seeing the ones before, without modifying ``state``, and return one
    outcome per command (a result, or the exception its caller should get) for
    the commands it took: all of them, or a prefix of at least one when the
    rest cannot be decided exactly in the same batch (they wait for the next).
    ``events_of(outcome)`` gives the events an outcome records.
    """

    def __init__(
        self,
        runtime: Runtime,
        decide_group: Callable[[Folded, Sequence[C], int], Sequence[R | Exception]],
        events_of: Callable[[R], Sequence[Event]],
        *,
        group_max: int = GROUP_COMMANDS_MAX,
        inline: bool = False,
        alone: Callable[[], bool] | None = None,
    ) -> None:
        if not (type(group_max) is int and 1 <= group_max <= GROUP_COMMANDS_MAX):
            raise UsageError(
                f"group_max must be an int in 1..{GROUP_COMMANDS_MAX}, got {group_max!r}"
            )
        self.runtime = runtime
        self.group_max = group_max
        #: Coroutines commit on the event loop itself, as :meth:`submit` does
        #: (for a store whose append does no I/O: a thread hop would cost
        #: more than the commit).
        self.inline = inline
        #: Whether the caller is the only one with work in flight (then a
        #: coroutine commits on the loop: no one could use the loop while the
        #: commit blocks it, and the thread hop costs two wake-ups).
        self._alone = alone
        self._decide_group = decide_group
        self._events_of = events_of
        self._queue: list[Slot[C, R]] = []
        #: Guards the queue and the leader flag (held only for list operations).
        self._mutex = threading.Lock()
        #: Whether someone leads commits (a thread caller or a loop's driver).
        self._leading = False
        #: The event loop whose driver leads (``None`` while a thread leads).
        self._leader_loop: asyncio.AbstractEventLoop | None = None
        self._drivers: set[asyncio.Task[None]] = set()
        #: Commits made and commands they carried (for benchmarks and metrics).
        self.commits = 0
        self.commands = 0
        #: Called after each group commit with its commands and seconds (metrics).
        self.on_commit: Callable[[int, float], None] | None = None

    # --- thread callers -------------------------------------------------------

    def submit(self, command: C) -> R:
        """Decide and durably record ``command`` (possibly with others); return its outcome.

        Raises the command's own error (e.g. :class:`UsageError` for misuse), or
        the store's error if its group could not be recorded (then nothing of it
        was).
        """
        slot: Slot[C, R] = Slot(command)
        with self._mutex:
            self._recover_from_closed_loop()
            lead = not self._leading
            if lead:
                # Nobody leads, so nobody waits (leadership never lapses while
                # commands wait): lead at once, our command first in the group.
                self._leading = True
                self._leader_loop = None
            else:
                wake = slot.will_wait()
                self._queue.append(slot)
        if lead:
            self._commit_next(own=slot, queued=False)
        else:
            # Woken when our command is done, or to lead the next group (we are
            # then the oldest waiting caller: our command is first in it).
            wake.acquire()
            if not slot.done:
                self._commit_next(own=slot)
        return slot.result()

    # --- async callers ----------------------------------------------------------

    async def asubmit(
        self, command: C, *, on_abandoned: Callable[[Slot[C, R]], None] | None = None
    ) -> R:
        """:meth:`submit` for coroutines: the event loop runs while the group is recorded.

        If the awaiting task is cancelled, the command is still decided and
        recorded; ``on_abandoned(slot)`` is then called on the loop once it is
        done (``slot.result()`` gives the outcome or raises its error), so the
        caller can resolve what it started.
        """
        if self._on_loop():
            return self.submit(command)
        loop = asyncio.get_running_loop()
        slot: Slot[C, R] = Slot(command, loop)
        if self._enqueue(slot):
            self._start_driver()
        try:
            await asyncio.shield(slot.future)
        except asyncio.CancelledError:
            if on_abandoned is not None:
                slot.future.add_done_callback(lambda _: on_abandoned(slot))
            raise
        return slot.result()

    async def asubmit_all(
        self, commands: Sequence[C], *, on_abandoned: Callable[[], None] | None = None
    ) -> list[R]:
        """:meth:`asubmit` for several commands, queued together and decided in this order.

        All are queued before the only await, so a cancellation cannot
        withdraw a later one; ``on_abandoned()`` then runs once all are done.
        An error of any of them is raised after all were done.
        """
        if self._on_loop():
            return [self.submit(command) for command in commands]
        loop = asyncio.get_running_loop()
        slots: list[Slot[C, R]] = [Slot(command, loop) for command in commands]
        lead = False
        for slot in slots:
            lead = self._enqueue(slot) or lead
        if lead:
            self._start_driver()
        waiter = asyncio.gather(*(slot.future for slot in slots))
        try:
            await asyncio.shield(waiter)
        except asyncio.CancelledError:
            if on_abandoned is not None:
                waiter.add_done_callback(lambda _: on_abandoned())
            raise
        return [slot.result() for slot in slots]

    def _on_loop(self) -> bool:
        """Whether a coroutine's command commits on the loop itself (see ``inline``, ``alone``).

        Only while nobody leads: a commit in flight elsewhere would block the loop.
        """
        if self.inline:
            return True
        return self._alone is not None and not self._leading and self._alone()

    def _enqueue(self, slot: Slot[C, R]) -> bool:
        """Queue ``slot``; return whether its caller leads the next group (nobody was leading)."""
        with self._mutex:
            self._recover_from_closed_loop()
            self._queue.append(slot)
            lead = not self._leading
            self._leading = True
            if lead:
                self._leader_loop = slot.loop
        return lead

    def _recover_from_closed_loop(self) -> None:
        """Under the mutex: if the leading loop was closed mid-commit, nobody can drive it.

        Its queued callers are gone with it (they are told so), and leadership
        is free again; without this, the next caller would wait forever.
        """
        loop = self._leader_loop
        if self._leading and loop is not None and loop.is_closed():
            self._drop_loop_locked(loop)

    def _drop_loop_locked(self, loop: asyncio.AbstractEventLoop) -> None:
        """Under the mutex: ``loop`` can drive no more; fail its callers, pass leadership on."""
        error = RuntimeError("the event loop driving this commit was closed")
        for slot in [q for q in self._queue if q.loop is loop]:
            slot.error, slot.done = error, True
        self._queue = [q for q in self._queue if q.loop is not loop]
        self._leader_loop = None
        if self._queue:
            self._hand_over_locked()
        else:
            self._leading = False

    def _start_driver(self) -> None:
        # The leading loop is this one: set by _enqueue or _hand_over_locked.
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._drive())
        self._drivers.add(task)
        task.add_done_callback(self._drivers.discard)

    async def _drive(self) -> None:
        """Commit groups in the executor while the queue's oldest caller is a coroutine.

        The commit *and* the hand-over run in the worker thread, so a thread
        caller waiting to lead is woken even if this loop is blocked.
        """
        loop = asyncio.get_running_loop()
        keep = functools.partial(_same_loop, loop)
        while True:
            group = self._take()
            try:
                pending = loop.run_in_executor(None, self._commit_and_hand_over, group, keep)
            except RuntimeError as error:  # the loop is shutting down: nothing commits here
                with self._mutex:
                    for slot in group:
                        slot.error, slot.done = error, True
                    self._drop_loop_locked(loop)
                return
            try:
                keep_leading = await asyncio.shield(pending)
            except asyncio.CancelledError:
                # The commit and hand-over go on in the thread; only this driver
                # stops, so a kept leadership must pass to a new driver.
                pending.add_done_callback(self._after_cancel)
                raise
            if not keep_leading:
                return

    def _after_cancel(self, pending: asyncio.Future[bool]) -> None:
        if not pending.cancelled() and pending.exception() is None and pending.result():
            self._start_driver()

    def _commit_and_hand_over(
        self, group: list[Slot[C, R]], keep: Callable[[Slot[C, R]], bool]
    ) -> bool:
        try:
            self._commit_locked(group)
        finally:
            for slot in group:
                if slot.done:
                    slot.resume()
        return self._hand_over(keep)

    # --- both -----------------------------------------------------------------

    def _take(self, limit: int | None = None) -> list[Slot[C, R]]:
        """The oldest queued commands, up to ``limit`` (a whole group by default)."""
        limit = self.group_max if limit is None else limit
        with self._mutex:
            group = self._queue[:limit]
            del self._queue[:limit]
        return group

    def _hand_over(self, keep: Callable[[Slot[C, R]], bool]) -> bool:
        """After a commit: keep leading if ``keep(oldest waiting)``; else wake the next leader.

        Leadership never lapses while commands wait, so none is left behind.
        """
        with self._mutex:
            if not self._queue:
                self._leading = False
                return False
            if keep(self._queue[0]):
                return True
            self._hand_over_locked()
        return False

    def _hand_over_locked(self) -> None:
        """Wake the oldest waiting caller to lead (a thread), or start a driver on its loop."""
        head = self._queue[0]
        if head.loop is None:
            self._leader_loop = None
            head.resume()  # a thread caller: it leads the next group
        else:
            self._leader_loop = head.loop
            # A closed loop raises; the next caller recovers (_recover_from_closed_loop).
            with contextlib.suppress(RuntimeError):
                head.loop.call_soon_threadsafe(self._start_driver)

    def _commit_next(self, own: Slot[C, R], *, queued: bool = True) -> None:
        """A thread caller leads one group (its own command first in it), then hands over.

        ``queued``: ``own`` waited in the queue (it is at its head); otherwise the
        caller took the lead at once and joins whoever queued meanwhile.
        """
        if queued:
            group = self._take()
        else:
            # Reading the queue unlocked is safe: a caller queued just after this
            # check is handed the lead (or served) by the hand-over below.
            group = [own, *self._take(self.group_max - 1)] if self._queue else [own]
        try:
            self._commit_locked(group)
        finally:
            for slot in group:
                if slot.done and slot is not own:
                    slot.resume()
            self._hand_over(_never)

    def _commit_locked(self, group: list[Slot[C, R]]) -> None:
        """Decide and record ``group`` (or the prefix the decider takes; the rest wait again)."""
        commands = [slot.command for slot in group]
        decide_group = self._decide_group
        events_of = self._events_of

        def decide(state: Folded, now_us: int) -> Sequence[R | Exception]:
            return decide_group(state, commands, now_us)

        def events(outcomes: Sequence[R | Exception]) -> list[Event]:
            return [e for o in outcomes if not isinstance(o, BaseException) for e in events_of(o)]

        on_commit = self.on_commit  # timed only for a listener (metrics)
        began = time.perf_counter() if on_commit is not None else 0.0
        try:
            outcomes = self.runtime.run(decide, events)  # under the runtime's lock
            if not 1 <= len(outcomes) <= len(group):
                raise InvariantViolation(
                    f"a group decider returned {len(outcomes)} outcomes for {len(group)} commands"
                )
        except BaseException as error:
            # Every caller of the group hears of it; only an interrupt also
            # propagates here (the callers have been told).
            for slot in group:
                slot.error = error
                slot.done = True
            if not isinstance(error, Exception):
                raise
            return
        self.commits += 1
        self.commands += len(outcomes)
        if on_commit is not None:
            on_commit(len(outcomes), time.perf_counter() - began)
        for slot, outcome in zip(group, outcomes, strict=False):
            slot.outcome = outcome  # type: ignore[assignment]
            slot.done = True
        later = group[len(outcomes) :]
        if later:
            # Not decided in this group (see the decider): first in line again.
            with self._mutex:
                self._queue[0:0] = later


def _same_loop(loop: asyncio.AbstractEventLoop, head: Slot[Any, Any]) -> bool:
    return head.loop is loop


def _never(head: Slot[Any, Any]) -> bool:
    return False


def _decide_holds(
    state: Folded, commands: Sequence[HoldCommand], now_us: int
) -> Sequence[HoldResult]:
    return decide_holds(state.budget, commands, now_us=now_us)


def _hold_events(decision: Decision) -> Sequence[Event]:
    return decision.events


class HoldCommitter(GroupCommitter[HoldCommand, Decision]):
    """Group commit of budget hold commands (place, settle, refund, adjust)."""

    def __init__(self, runtime: Runtime, *, group_max: int = GROUP_COMMANDS_MAX) -> None:
        super().__init__(runtime, _decide_holds, _hold_events, group_max=group_max)
