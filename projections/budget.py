"""The budget board: per account, its limit, spends, reservations and open holds.

Folded from the budget context's events: account-stream events move balances
(``AmountReserved``, ``AmountReleased``, ``AmountPosted``, ``SpendCorrected``,
``PeriodRolledOver``, ``LimitChanged``), hold-stream events open and close
holds (``HoldPlaced``, then exactly one of ``HoldSettled``, ``HoldRefunded``,
``HoldExpired``; ``HoldAdjusted`` re-prices the legs). So, as in the ledger,
``reserved`` equals the sum of the open holds' legs on the account (L1) — a
board where it does not is a corrupt log, which ``replay --verify`` reports.

:meth:`BudgetBoard.rows` gives each account at ``now_us`` with its open holds
and their age (``now_us - placed_at_us``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from routeledger.core.budget import events as ev
from routeledger.core.budget.values import AccountScope, Leg, Unit
from routeledger.core.events import Event
from routeledger.projections.base import Projection

__all__ = ["AccountRecord", "AccountRow", "BudgetBoard", "HoldRecord", "OpenHold"]


class AccountRecord:
    """One account's folded balances (read-only outside the fold)."""

    __slots__ = (
        "account_id",
        "lifetime_spent",
        "limit",
        "overage",
        "period_end_us",
        "period_start_us",
        "reserved",
        "scope",
        "since_position",
        "spent",
        "unit",
    )

    def __init__(self, evt: ev.AccountOpened, position: int) -> None:
        self.account_id = evt.account_id
        self.scope: AccountScope = evt.scope
        self.unit: Unit = evt.unit
        self.limit = evt.limit
        self.period_start_us = evt.period_start_us
        self.period_end_us = evt.period_end_us
        #: Spend of the current period.
        self.spent = 0
        self.reserved = 0
        self.lifetime_spent = 0
        self.overage = 0
        #: The account's last event.
        self.since_position = position


class HoldRecord:
    """One open hold (read-only outside the fold)."""

    __slots__ = ("expires_at_us", "hold_id", "legs", "placed_at_us", "position")

    def __init__(self, evt: ev.HoldPlaced, position: int) -> None:
        self.hold_id = evt.hold_id
        self.legs: tuple[Leg, ...] = evt.legs
        self.placed_at_us = evt.at_us
        self.expires_at_us = evt.expires_at_us
        self.position = position


@attrs.frozen(kw_only=True)
class OpenHold:
    """An open hold's leg on one account, at an instant."""

    hold_id: str
    amount: int
    placed_at_us: int
    expires_at_us: int
    age_us: int


@attrs.frozen(kw_only=True)
class AccountRow:
    """One line of the budget board."""

    account_id: str
    scope: AccountScope
    unit: Unit
    limit: int
    spent: int
    reserved: int
    #: ``limit - spent - reserved`` (negative after overage).
    available: int
    lifetime_spent: int
    overage: int
    period_start_us: int
    period_end_us: int
    holds: tuple[OpenHold, ...]

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "account_id": self.account_id,
            "scope": self.scope.value,
            "unit": self.unit.value,
            "limit": self.limit,
            "spent": self.spent,
            "reserved": self.reserved,
            "available": self.available,
            "lifetime_spent": self.lifetime_spent,
            "overage": self.overage,
            "period_start_us": self.period_start_us,
            "period_end_us": self.period_end_us,
            "holds": [attrs.asdict(hold) for hold in self.holds],
        }


class BudgetBoard(Projection):
    """Accounts and open holds, folded from budget events."""

    __slots__ = ("accounts", "holds")

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, AccountRecord] = {}
        #: Open holds by hold id.
        self.holds: dict[str, HoldRecord] = {}

    def _account(self, evt: ev.AccountEvent, position: int) -> AccountRecord:
        record = self.accounts[evt.account_id]
        record.since_position = position
        return record

    def _on_opened(self, position: int, evt: ev.AccountOpened) -> None:
        self.accounts[evt.account_id] = AccountRecord(evt, position)

    def _on_limit(self, position: int, evt: ev.LimitChanged | ev.LimitConfigured) -> None:
        self._account(evt, position).limit = evt.limit

    def _on_corrected(self, position: int, evt: ev.SpendCorrected) -> None:
        record = self._account(evt, position)
        record.spent += evt.delta
        record.lifetime_spent += evt.delta

    def _on_rolled(self, position: int, evt: ev.PeriodRolledOver) -> None:
        record = self._account(evt, position)
        record.spent = 0
        record.period_start_us = evt.period_start_us
        record.period_end_us = evt.period_end_us

    def _on_reserved(self, position: int, evt: ev.AmountReserved) -> None:
        self._account(evt, position).reserved += evt.amount

    def _on_released(self, position: int, evt: ev.AmountReleased) -> None:
        self._account(evt, position).reserved -= evt.amount

    def _on_posted(self, position: int, evt: ev.AmountPosted) -> None:
        record = self._account(evt, position)
        record.reserved -= evt.held
        record.spent += evt.posted + evt.overage
        record.lifetime_spent += evt.posted + evt.overage
        record.overage += evt.overage

    def _on_placed(self, position: int, evt: ev.HoldPlaced) -> None:
        self.holds[evt.hold_id] = HoldRecord(evt, position)

    def _on_adjusted(self, position: int, evt: ev.HoldAdjusted) -> None:
        self.holds[evt.hold_id].legs = evt.legs

    def _on_closed(self, position: int, evt: ev.HoldEvent) -> None:
        del self.holds[evt.hold_id]

    _HANDLERS: ClassVar[dict[type[Event], Callable[[Any, int, Any], None]]] = {
        ev.AccountOpened: _on_opened,
        ev.LimitChanged: _on_limit,
        ev.LimitConfigured: _on_limit,
        ev.SpendCorrected: _on_corrected,
        ev.PeriodRolledOver: _on_rolled,
        ev.AmountReserved: _on_reserved,
        ev.AmountReleased: _on_released,
        ev.AmountPosted: _on_posted,
        ev.HoldPlaced: _on_placed,
        ev.HoldAdjusted: _on_adjusted,
        ev.HoldSettled: _on_closed,
        ev.HoldRefunded: _on_closed,
        ev.HoldExpired: _on_closed,
    }

    def document(self, now_us: int) -> dict[str, object]:
        """The board at ``now_us`` as JSON-ready data (``routeledger budget --json``)."""
        return {
            "at_us": now_us,
            "position": self.position,
            "accounts": [row.as_json() for row in self.rows(now_us)],
        }

    def rows(self, now_us: int) -> list[AccountRow]:
        """Every account at ``now_us``, sorted by id, with its open holds oldest first."""
        by_account: dict[str, list[OpenHold]] = {}
        for hold in self.holds.values():
            for leg in hold.legs:
                by_account.setdefault(leg.account_id, []).append(
                    OpenHold(
                        hold_id=hold.hold_id,
                        amount=leg.amount,
                        placed_at_us=hold.placed_at_us,
                        expires_at_us=hold.expires_at_us,
                        age_us=max(0, now_us - hold.placed_at_us),
                    )
                )
        rows = []
        for account_id in sorted(self.accounts):
            record = self.accounts[account_id]
            holds = sorted(
                by_account.get(account_id, ()), key=lambda h: (h.placed_at_us, h.hold_id)
            )
            rows.append(
                AccountRow(
                    account_id=account_id,
                    scope=record.scope,
                    unit=record.unit,
                    limit=record.limit,
                    spent=record.spent,
                    reserved=record.reserved,
                    available=record.limit - record.spent - record.reserved,
                    lifetime_spent=record.lifetime_spent,
                    overage=record.overage,
                    period_start_us=record.period_start_us,
                    period_end_us=record.period_end_us,
                    holds=tuple(holds),
                )
            )
        return rows
