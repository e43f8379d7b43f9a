"""Budget ledger events. These names and tags are the storage contract.

Two kinds of stream (see ``docs/architecture.md``):

* ``account:<account_id>`` — everything that moves one account's balances:
  :class:`AccountOpened`, :class:`LimitChanged`, :class:`SpendCorrected`,
  :class:`PeriodRolledOver`, and the per-hold entries :class:`AmountReserved`,
  :class:`AmountReleased`, :class:`AmountPosted`, plus the idempotency records
  :class:`AccountCommandRejected` and :class:`AccountCommandConflicted`.
  An account stream alone gives the account's ``spent``/``reserved``.
* ``hold:<hold_id>`` — one hold's lifecycle: :class:`HoldPlaced` or
  :class:`HoldRejected`, then at most one resolution (:class:`HoldSettled`,
  :class:`HoldRefunded`, :class:`HoldExpired`, then possibly
  :class:`LateUsageBooked`), :class:`HoldAdjusted` while open, and the
  idempotency records :class:`HoldCommandRejected`, :class:`HoldCommandConflicted`.

A decision touching a hold is one batch: the hold-stream event plus one entry
on *each* account stream it touches, each at that stream's next version, so
the store's optimistic check makes two processes racing for the same budget
conflict (D4). ``command_digest`` is a canonical string of the command's
payload, so a retry with the same id and another payload is detected (X1).
"""

from __future__ import annotations

import attrs

from ..events import Event, Origin, event
from .values import AccountScope, Leg, PeriodSpec, Rejection, Unit, Usage

__all__ = [
    "AccountCommandConflicted",
    "AccountCommandRejected",
    "AccountEvent",
    "AccountOpened",
    "AmountPosted",
    "AmountReleased",
    "AmountReserved",
    "BudgetEvent",
    "HoldAdjusted",
    "HoldCommandConflicted",
    "HoldCommandRejected",
    "HoldEvent",
    "HoldExpired",
    "HoldPlaced",
    "HoldRefunded",
    "HoldRejected",
    "HoldSettled",
    "LateUsageBooked",
    "LimitChanged",
    "LimitConfigured",
    "PeriodRolledOver",
    "SpendCorrected",
]


@attrs.frozen(kw_only=True)
class BudgetEvent(Event):
    """Base of every budget ledger event (the budget context ignores all others).

    Naming rule: past tense; ``Origin.DECIDED`` for what the ledger decided,
    ``Origin.ADMIN`` for operator changes. Usage figures arrive in commands
    and are recorded inside the decided event that books them.
    """


@attrs.frozen(kw_only=True)
class AccountEvent(BudgetEvent):
    """An event of an ``account:<account_id>`` stream."""

    account_id: str


@attrs.frozen(kw_only=True)
class HoldEvent(BudgetEvent):
    """An event of a ``hold:<hold_id>`` stream."""

    hold_id: str


# --- account streams -------------------------------------------------------


@event("routeledger.AccountOpened", 1, Origin.ADMIN)
@attrs.frozen(kw_only=True)
class AccountOpened(AccountEvent):
    """An operator opened a budget account with its limit and period."""

    command_id: str
    command_digest: str
    scope: AccountScope
    unit: Unit
    limit: int
    period: PeriodSpec
    period_start_us: int
    period_end_us: int


@event("routeledger.LimitChanged", 1, Origin.ADMIN)
@attrs.frozen(kw_only=True)
class LimitChanged(AccountEvent):
    """An operator changed the account's limit (T3: the next decision sees it)."""

    command_id: str
    command_digest: str
    limit: int
    previous_limit: int


@event("routeledger.LimitConfigured", 1, Origin.ADMIN)
@attrs.frozen(kw_only=True)
class LimitConfigured(AccountEvent):
    """The configuration file set a new limit (reconciled at open, T3).

    Kept apart from an operator's ``LimitChanged``: the file's value is applied
    when *it* changes, so an operator's change stands across restarts until the
    file says something new.
    """

    command_id: str
    command_digest: str
    limit: int
    previous_limit: int


@event("routeledger.SpendCorrected", 1, Origin.ADMIN)
@attrs.frozen(kw_only=True)
class SpendCorrected(AccountEvent):
    """An operator corrected period and lifetime spend by ``delta`` (may be negative)."""

    command_id: str
    command_digest: str
    delta: int
    reason: str


@event("routeledger.PeriodRolledOver", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class PeriodRolledOver(AccountEvent):
    """The period ended: period spend restarts at zero; ``reserved`` and lifetime are kept (T2)."""

    closed_spent: int
    period_start_us: int
    period_end_us: int


@event("routeledger.AmountReserved", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class AmountReserved(AccountEvent):
    """``amount`` of the account was reserved for a hold (placement or upward adjustment)."""

    hold_id: str
    amount: int


@event("routeledger.AmountReleased", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class AmountReleased(AccountEvent):
    """``amount`` reserved for a hold went back to the account (refund, expiry, adjust down)."""

    hold_id: str
    amount: int


@event("routeledger.AmountPosted", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class AmountPosted(AccountEvent):
    """A hold's usage was booked: ``held`` leaves ``reserved``; ``posted + overage`` is spent.

    On a settlement ``posted = min(actual, held)`` and ``overage = actual - posted``
    (flagged, L3). On a late booking (``late``) ``held`` is 0: the hold already
    expired and released its reservation, and the whole actual is posted (L6).
    """

    hold_id: str
    held: int
    posted: int
    overage: int
    late: bool


@event("routeledger.AccountCommandRejected", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class AccountCommandRejected(AccountEvent):
    """An admin command on the account was refused; the id stays refused (X2)."""

    command_id: str
    command_digest: str
    rejection: Rejection


@event("routeledger.AccountCommandConflicted", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class AccountCommandConflicted(AccountEvent):
    """A command id was reused on the account with another payload (X1)."""

    command_id: str
    command_digest: str
    recorded_digest: str


# --- hold streams ----------------------------------------------------------


@event("routeledger.HoldPlaced", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class HoldPlaced(HoldEvent):
    """A hold was admitted on every account of ``legs`` (L8); it expires at ``expires_at_us``."""

    legs: tuple[Leg, ...]
    estimate: Usage
    ttl_us: int
    expires_at_us: int


@event("routeledger.HoldRejected", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class HoldRejected(HoldEvent):
    """A hold was refused on every account (L8); the hold id stays refused (X2)."""

    account_ids: tuple[str, ...]
    estimate: Usage
    ttl_us: int
    rejection: Rejection


@event("routeledger.HoldSettled", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class HoldSettled(HoldEvent):
    """The hold resolved with actual ``usage`` (L3); ``overage`` flags usage above the hold."""

    command_id: str
    command_digest: str
    usage: Usage
    overage: bool


@event("routeledger.HoldRefunded", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class HoldRefunded(HoldEvent):
    """The hold resolved by releasing everything (failure before billable output)."""

    command_id: str
    command_digest: str


@event("routeledger.HoldExpired", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class HoldExpired(HoldEvent):
    """The hold resolved by its deadline passing (``at_us >= expires_at_us``, L6)."""

    expires_at_us: int


@event("routeledger.LateUsageBooked", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class LateUsageBooked(HoldEvent):
    """Usage of an expired hold arrived and was booked as a late posted debit (L6)."""

    command_id: str
    command_digest: str
    usage: Usage


@event("routeledger.HoldAdjusted", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class HoldAdjusted(HoldEvent):
    """An open hold was re-priced to ``estimate``; ``legs`` are the new amounts."""

    command_id: str
    command_digest: str
    estimate: Usage
    legs: tuple[Leg, ...]


@event("routeledger.HoldCommandRejected", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class HoldCommandRejected(HoldEvent):
    """A command on the hold (an adjustment over budget) was refused; sticky for its id (X2)."""

    command_id: str
    command_digest: str
    rejection: Rejection


@event("routeledger.HoldCommandConflicted", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class HoldCommandConflicted(HoldEvent):
    """A command id was reused on the hold with another payload (X1)."""

    command_id: str
    command_digest: str
    recorded_digest: str
