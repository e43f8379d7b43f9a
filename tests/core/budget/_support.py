"""Test helpers: a tiny in-memory store with the real store's optimistic check, and a ledger."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, timedelta, timezone, tzinfo
from typing import Any

from routeledger.core.budget import ledger
from routeledger.core.budget.decide import (
    Decision,
    OpenAccount,
    PlaceHold,
    SettleHold,
    decide_open_account,
    decide_place_hold,
    decide_settle_hold,
)
from routeledger.core.budget.events import BudgetEvent
from routeledger.core.budget.values import AccountScope, PeriodSpec, Unit, Usage
from routeledger.core.time import US_PER_S

#: 2027-01-15T08:00:00Z, a Friday.
T0_US = 1_800_000_000 * US_PER_S
TTL_US = 60 * US_PER_S

FIXED_ZONES: dict[str, tzinfo] = {
    "UTC": UTC,
    "UTC+05:30": timezone(timedelta(hours=5, minutes=30)),
    "UTC-08:00": timezone(timedelta(hours=-8)),
}


def zones(name: str) -> tzinfo:
    """A deterministic zone resolver for tests (fixed offsets)."""
    return FIXED_ZONES[name]


def micros(amount: int) -> Usage:
    """A usage of ``amount`` micro-units of money (and nothing else)."""
    return Usage(cost_micros=amount)


class Conflict(Exception):
    """A stale expected version: nothing of the batch was written (the real store's contract)."""


class Store:
    """Streams of events appended in atomic batches with optimistic concurrency."""

    def __init__(self) -> None:
        self.log: list[BudgetEvent] = []
        self.heads: dict[str, int] = {}

    def append(self, batch: Sequence[BudgetEvent]) -> None:
        """Append ``batch`` atomically, or raise Conflict and write nothing."""
        heads = dict(self.heads)
        for e in batch:
            if e.version != heads.get(e.stream_id, 0) + 1:
                raise Conflict(f"{e.stream_id}: expected {heads.get(e.stream_id, 0) + 1}")
            heads[e.stream_id] = e.version
        self.heads = heads
        self.log.extend(batch)


class Ledger:
    """One process: a state folded from a store, deciding and appending."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store if store is not None else Store()
        self.state = ledger.fold(self.store.log)

    def reload(self) -> None:
        self.state = ledger.fold(self.store.log)

    def run(self, decide: Callable[..., Decision], command: Any = None, **kw: Any) -> Decision:
        """Decide ``command``, append its batch, fold it and check the invariants."""
        args = (self.state,) if command is None else (self.state, command)
        decision = decide(*args, **kw)
        self.store.append(decision.events)
        ledger.fold(decision.events, self.state)
        ledger.check_invariants(self.state)
        return decision

    def open(
        self,
        account_id: str,
        limit: int,
        *,
        unit: Unit = Unit.MICROS,
        period: PeriodSpec | None = None,
        now_us: int = T0_US,
    ) -> Decision:
        return self.run(
            decide_open_account,
            OpenAccount(
                command_id="open-" + account_id,
                account_id=account_id,
                scope=AccountScope.KEY,
                unit=unit,
                limit=limit,
                period=period or PeriodSpec(),
            ),
            now_us=now_us,
            zones=zones,
        )

    def place(
        self,
        hold_id: str,
        amount: int | Usage,
        *accounts: str,
        ttl_us: int = TTL_US,
        now_us: int = T0_US,
    ) -> Decision:
        estimate = micros(amount) if isinstance(amount, int) else amount
        return self.run(
            decide_place_hold,
            PlaceHold(
                hold_id=hold_id, account_ids=accounts or ("a",), estimate=estimate, ttl_us=ttl_us
            ),
            now_us=now_us,
        )

    def settle(
        self, hold_id: str, amount: int | Usage, *, command_id: str = "", now_us: int = T0_US
    ) -> Decision:
        usage = micros(amount) if isinstance(amount, int) else amount
        return self.run(
            decide_settle_hold,
            SettleHold(command_id=command_id or "settle-" + hold_id, hold_id=hold_id, usage=usage),
            now_us=now_us,
        )

    def account(self, account_id: str = "a") -> ledger.AccountState:
        return self.state.accounts[account_id]
