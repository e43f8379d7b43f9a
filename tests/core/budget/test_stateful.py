"""D3 for the budget ledger: generated histories against a naive recompute-from-the-log model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from routeledger.core.budget import events as ev
from routeledger.core.budget import ledger
from routeledger.core.budget.admin import (
    ChangeLimit,
    decide_change_limit,
    decide_roll_period,
    periods_due,
)
from routeledger.core.budget.decide import (
    AdjustHold,
    Decision,
    PlaceHold,
    RefundHold,
    SettleHold,
    decide_adjust_hold,
    decide_expire_due,
    decide_place_hold,
    decide_refund_hold,
    decide_settle_hold,
)
from routeledger.core.budget.values import (
    AMOUNT_MAX,
    HoldStatus,
    PeriodKind,
    PeriodSpec,
    RejectionReason,
    Unit,
    Usage,
)
from routeledger.core.time import US_PER_H, US_PER_S

from ._support import T0_US, Ledger, zones

TTL_US = 30 * US_PER_S
EDGES = ("zero", "one", "room-1", "room", "room+1", "limit", "huge", "invalid", "any")
LIMITS = st.sampled_from([0, 1, 100, 1_000, AMOUNT_MAX]) | st.integers(0, 5_000)


class NaiveModel:
    """Recomputes every balance from the raw list of events, from the hold side of the log."""

    def __init__(self, log: list[ev.BudgetEvent]) -> None:
        self.limit: dict[str, int] = {}
        self.unit: dict[str, Unit] = {}
        self.spent: dict[str, int] = {}
        self.lifetime: dict[str, int] = {}
        self.status: dict[str, HoldStatus] = {}
        self.legs: dict[str, dict[str, int]] = {}
        self.resolutions: dict[str, int] = {}
        for e in log:
            self._apply(e)

    def _book(self, hold_id: str, usage: Usage) -> None:
        for account_id in self.legs[hold_id]:
            amount = usage.amount_in(self.unit[account_id])
            self.spent[account_id] += amount
            self.lifetime[account_id] += amount

    def _apply(self, e: ev.BudgetEvent) -> None:
        if isinstance(e, ev.AccountOpened):
            self.limit[e.account_id] = e.limit
            self.unit[e.account_id] = e.unit
            self.spent[e.account_id] = self.lifetime[e.account_id] = 0
        elif isinstance(e, ev.LimitChanged):
            self.limit[e.account_id] = e.limit
        elif isinstance(e, ev.SpendCorrected):
            self.spent[e.account_id] += e.delta
            self.lifetime[e.account_id] += e.delta
        elif isinstance(e, ev.PeriodRolledOver):
            self.spent[e.account_id] = 0
        elif isinstance(e, ev.HoldPlaced | ev.HoldAdjusted):
            self.status[e.hold_id] = HoldStatus.OPEN
            self.legs[e.hold_id] = {leg.account_id: leg.amount for leg in e.legs}
        elif isinstance(e, ev.HoldRejected):
            self.status[e.hold_id] = HoldStatus.REJECTED
        elif isinstance(e, ev.HoldSettled):
            self.status[e.hold_id] = HoldStatus.SETTLED
            self._book(e.hold_id, e.usage)
        elif isinstance(e, ev.LateUsageBooked):
            self.status[e.hold_id] = HoldStatus.LATE_BOOKED
            self._book(e.hold_id, e.usage)
        elif isinstance(e, ev.HoldRefunded):
            self.status[e.hold_id] = HoldStatus.REFUNDED
        elif isinstance(e, ev.HoldExpired):
            self.status[e.hold_id] = HoldStatus.EXPIRED
        if isinstance(e, ev.HoldSettled | ev.HoldRefunded | ev.HoldExpired):
            self.resolutions[e.hold_id] = self.resolutions.get(e.hold_id, 0) + 1

    def reserved(self, account_id: str) -> int:
        return sum(
            legs.get(account_id, 0)
            for hold_id, legs in self.legs.items()
            if self.status[hold_id] is HoldStatus.OPEN
        )

    def fits(self, account_id: str, amount: int) -> bool:
        """L2, restated naively."""
        used = self.spent[account_id] + self.reserved(account_id)
        return amount == 0 or used + amount <= self.limit[account_id]


def _snapshot(state: ledger.LedgerState) -> Any:
    accounts = {
        k: (a.limit, a.spent, a.reserved, a.lifetime_spent, a.overage, a.version, a.period_end_us)
        for k, a in state.accounts.items()
    }
    holds = {k: (h.status, h.legs, h.estimate, h.version) for k, h in state.holds.items()}
    return accounts, holds, dict(state.commands), list(state.open_holds)


class LedgerMachine(RuleBasedStateMachine):
    """Place / settle / refund / expire / late settle / re-deliver / limit / rollover / crash."""

    accounts = Bundle("accounts")
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.lg = Ledger()
        self.now = T0_US
        self.count = 0
        self.last: tuple[Callable[..., Decision], Any] | None = None
        #: L2: every admission and refusal, with the naive figures before it.
        self.admissions: list[tuple[bool, RejectionReason | None, list[bool]]] = []

    def _new_id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def _amount(self, edge: str, account_id: str, any_amount: int) -> int:
        acc = self.lg.state.accounts[account_id]
        room = acc.limit - acc.spent - acc.reserved
        return {
            "zero": 0,
            "one": 1,
            "room-1": room - 1,
            "room": room,
            "room+1": room + 1,
            "limit": acc.limit,
            "huge": AMOUNT_MAX,
            "invalid": AMOUNT_MAX + 1,
            "any": any_amount,
        }[edge]

    def _do(self, decide: Callable[..., Decision], command: Any, **kw: Any) -> Decision:
        decision = self.lg.run(decide, command, now_us=self.now, **kw)
        self.last = (decide, command)
        return decision

    @initialize(target=accounts)
    def first_account(self) -> str:
        self.lg.open("acc0", 1_000, now_us=self.now)
        return "acc0"

    @rule(
        target=accounts,
        limit=LIMITS,
        daily=st.booleans(),
        unit=st.sampled_from([Unit.MICROS, Unit.TOKENS]),
    )
    def open_account(self, limit: int, daily: bool, unit: Unit) -> str:
        account_id = self._new_id("acc")
        period = PeriodSpec(kind=PeriodKind.DAY, zone="UTC") if daily else PeriodSpec()
        self.lg.open(account_id, limit, unit=unit, period=period, now_us=self.now)
        return account_id

    @rule(
        target=holds,
        account_ids=st.lists(accounts, min_size=1, max_size=3, unique=True),
        edge=st.sampled_from(EDGES),
        any_amount=st.integers(0, 3_000),
    )
    def place(self, account_ids: list[str], edge: str, any_amount: int) -> str:
        hold_id = self._new_id("h")
        amount = self._amount(edge, account_ids[0], any_amount)
        estimate = Usage(cost_micros=max(amount, 0), tokens=max(amount, 0))
        model = NaiveModel(self.lg.store.log)
        fits = [model.fits(a, estimate.amount_in(model.unit[a])) for a in account_ids]
        decision = self._do(
            decide_place_hold,
            PlaceHold(
                hold_id=hold_id, account_ids=tuple(account_ids), estimate=estimate, ttl_us=TTL_US
            ),
        )
        reason = None if decision.rejection is None else decision.rejection.reason
        self.admissions.append((decision.accepted, reason, fits))
        return hold_id

    @rule(hold_id=holds, edge=st.sampled_from(EDGES), any_amount=st.integers(0, 3_000))
    def settle(self, hold_id: str, edge: str, any_amount: int) -> None:
        hold = self.lg.state.holds.get(hold_id)
        account_id = hold.legs[0].account_id if hold is not None and hold.legs else "acc0"
        amount = min(max(self._amount(edge, account_id, any_amount), 0), AMOUNT_MAX)
        self._do(
            decide_settle_hold,
            SettleHold(
                command_id=self._new_id("s"), hold_id=hold_id, usage=Usage(cost_micros=amount)
            ),
        )

    @rule(hold_id=holds)
    def refund(self, hold_id: str) -> None:
        self._do(decide_refund_hold, RefundHold(command_id=self._new_id("r"), hold_id=hold_id))

    @rule(hold_id=holds, edge=st.sampled_from(EDGES), any_amount=st.integers(0, 3_000))
    def adjust(self, hold_id: str, edge: str, any_amount: int) -> None:
        amount = max(self._amount(edge, "acc0", any_amount), 0)
        self._do(
            decide_adjust_hold,
            AdjustHold(
                command_id=self._new_id("a"),
                hold_id=hold_id,
                estimate=Usage(cost_micros=amount, tokens=amount),
            ),
        )

    @rule(dt=st.sampled_from([1, TTL_US - 1, TTL_US, TTL_US + 1]) | st.integers(1, 3 * TTL_US))
    def tick(self, dt: int) -> None:
        self.now += dt

    @rule()
    def expire(self) -> None:
        before = set(self.lg.state.open_holds)
        self.lg.run(decide_expire_due, now_us=self.now)
        for hold_id in before - set(self.lg.state.open_holds):
            assert self.lg.state.holds[hold_id].expires_at_us <= self.now  # L6: never earlier

    @rule(hold_id=consumes(holds), amount=st.integers(0, 3_000))
    def late_settle(self, hold_id: str, amount: int) -> None:
        hold = self.lg.state.holds.get(hold_id)
        if hold is not None:  # an invalid amount never created the hold
            self.now = max(self.now, hold.expires_at_us)
        self.lg.run(decide_expire_due, now_us=self.now)
        self._do(
            decide_settle_hold,
            SettleHold(
                command_id=self._new_id("late"), hold_id=hold_id, usage=Usage(cost_micros=amount)
            ),
        )

    @precondition(lambda self: self.last is not None)
    @rule()
    def redeliver(self) -> None:
        assert self.last is not None
        decide, command = self.last
        before = _snapshot(self.lg.state)
        decision = self.lg.run(decide, command, now_us=self.now)
        if not decision.events:  # X1: a duplicate is a no-op
            assert _snapshot(self.lg.state) == before

    @rule(account_id=accounts, limit=LIMITS)
    def change_limit(self, account_id: str, limit: int) -> None:
        self._do(
            decide_change_limit,
            ChangeLimit(command_id=self._new_id("l"), account_id=account_id, limit=limit),
        )

    @rule()
    def rollover(self) -> None:
        self.now += 24 * US_PER_H
        for account_id in periods_due(self.lg.state, now_us=self.now):
            reserved = self.lg.state.accounts[account_id].reserved
            self.lg.run(decide_roll_period, account_id, now_us=self.now, zones=zones)
            assert self.lg.state.accounts[account_id].reserved == reserved  # T2

    @rule(hold_id=holds, account_ids=st.lists(accounts, min_size=1, max_size=2, unique=True))
    def crash(self, hold_id: str, account_ids: list[str]) -> None:
        """Decisions made but never appended (a crash) leave no trace after a reload."""
        before = _snapshot(self.lg.state)
        decide_settle_hold(
            self.lg.state,
            SettleHold(command_id="lost", hold_id=hold_id, usage=Usage(cost_micros=1)),
            now_us=self.now,
        )
        decide_place_hold(
            self.lg.state,
            PlaceHold(
                hold_id="lost", account_ids=tuple(account_ids), estimate=Usage(), ttl_us=TTL_US
            ),
            now_us=self.now,
        )
        self.lg.reload()
        assert _snapshot(self.lg.state) == before  # D2: a fresh fold equals the live state

    @invariant()
    def l1_reserved_is_the_sum_of_open_holds(self) -> None:
        model = NaiveModel(self.lg.store.log)
        for account_id, acc in self.lg.state.accounts.items():
            assert acc.reserved == model.reserved(account_id) >= 0

    @invariant()
    def l2_every_admission_used_the_comparator(self) -> None:
        for admitted, reason, fits in self.admissions:
            if admitted:
                assert all(fits)
            elif reason is RejectionReason.BUDGET_EXCEEDED:
                assert not all(fits)
            else:  # only an invalid amount may refuse a hold that fits everywhere
                assert reason is RejectionReason.AMOUNT_INVALID

    @invariant()
    def l4_holds_resolve_at_most_once(self) -> None:
        model = NaiveModel(self.lg.store.log)
        assert all(n == 1 for n in model.resolutions.values())
        for hold_id, hold in self.lg.state.holds.items():
            assert hold.status is model.status[hold_id]

    @invariant()
    def l7_spend_is_conserved(self) -> None:
        model = NaiveModel(self.lg.store.log)
        for account_id, acc in self.lg.state.accounts.items():
            assert (acc.spent, acc.lifetime_spent) == (
                model.spent[account_id],
                model.lifetime[account_id],
            )
        posted = sum(
            e.posted + e.overage for e in self.lg.store.log if isinstance(e, ev.AmountPosted)
        )
        corrected = sum(e.delta for e in self.lg.store.log if isinstance(e, ev.SpendCorrected))
        lifetime = sum(a.lifetime_spent for a in self.lg.state.accounts.values())
        assert lifetime == posted + corrected


TestLedgerMachine = LedgerMachine.TestCase
