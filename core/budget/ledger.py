"""The budget ledger's state, its hold state machine, ``evolve`` and ``fold``.

Rules (the bar is TigerBeetle's pending transfers; ids are from the spec):

* A *hold* reserves an amount on one or more *accounts* (its legs) before a
  provider is called. It is admitted on all of them or on none (L8), each leg
  by the one comparator :func:`admits` (L2).
* A hold resolves exactly once (L4): it is settled with actual usage
  (``min(actual, held)`` posted, the rest released, any excess booked as a
  flagged overage, L3), refunded (everything released), or expired at
  ``placed_at + ttl`` in engine time, never earlier (L6). Usage arriving after
  expiry is booked once as a late posted debit, never dropped.
* For every account, after every event, ``reserved`` equals the sum of the
  open holds' legs on it and is >= 0 (L1). Nothing is ever clamped.
* A period rollover resets period spend only: ``reserved`` and lifetime spend
  are kept and open holds carry over (T2).

Theory of operation. The state is a private mutable accumulator owned by the
fold: :func:`evolve` updates it in place and returns it; it only assigns,
every business ``if`` lives in :mod:`.decide`. Account balances are moved
only by *account-stream* events and hold statuses only by *hold-stream*
events; a decision always writes both sides in one batch, so L1 compares two
independently folded views (:func:`check_invariants`). The hold state machine
is the :data:`TRANSITIONS` table; an event the table does not allow means the
log is corrupt and :func:`evolve` raises :class:`InvariantViolation` naming
the event, the hold and its state. Each stream's last version is kept
(``AccountState.version``, ``HoldState.version``) so deciders stamp the next
one and the store's optimistic check catches concurrent writers (D4).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeAlias

from ..errors import InvariantViolation
from ..streams import hold_stream
from . import events as ev
from .values import BALANCE_MAX, AccountScope, HoldStatus, Leg, PeriodSpec, Rejection, Unit, Usage

__all__ = [
    "TRANSITIONS",
    "AccountState",
    "CommandRecord",
    "HoldAction",
    "HoldState",
    "LedgerState",
    "admits",
    "check_invariants",
    "evolve",
    "fold",
    "hold_account_ids",
    "initial",
    "retire",
]


class HoldAction(enum.Enum):
    """What may happen to an existing hold."""

    #: Identity hash (members are singletons): ``Enum.__hash__`` runs in Python
    #: and the transition table is looked up on every hold command. Nothing
    #: iterates a hash-ordered container of these, so D1 is unaffected.
    __hash__ = object.__hash__

    #: Resolve with actual usage.
    SETTLE = "settle"
    #: Resolve by releasing everything.
    REFUND = "refund"
    #: Resolve because the deadline passed.
    EXPIRE = "expire"
    #: Book usage that arrived after expiry.
    BOOK_LATE = "book_late"
    #: Re-price an open hold.
    ADJUST = "adjust"


#: The hold state machine: (state, action) -> next state. A missing key is an
#: illegal transition: :mod:`.decide` turns it into a typed rejection (L4),
#: :func:`evolve` into an :class:`InvariantViolation` (a corrupt log).
TRANSITIONS: Final[Mapping[tuple[HoldStatus, HoldAction], HoldStatus]] = {
    (HoldStatus.OPEN, HoldAction.SETTLE): HoldStatus.SETTLED,
    (HoldStatus.OPEN, HoldAction.REFUND): HoldStatus.REFUNDED,
    (HoldStatus.OPEN, HoldAction.EXPIRE): HoldStatus.EXPIRED,
    (HoldStatus.OPEN, HoldAction.ADJUST): HoldStatus.OPEN,
    (HoldStatus.EXPIRED, HoldAction.BOOK_LATE): HoldStatus.LATE_BOOKED,
}

#: An idempotency record: the payload digest and the sticky rejection, if any.
CommandRecord: TypeAlias = tuple[str, Rejection | None]


class AccountState:
    """One account's configuration and balances (read-only outside the fold)."""

    __slots__ = (
        "account_id",
        "configured_limit",
        "lifetime_spent",
        "limit",
        "opened_at_us",
        "overage",
        "period",
        "period_end_us",
        "period_start_us",
        "reserved",
        "scope",
        "spent",
        "unit",
        "version",
    )

    def __init__(self, e: ev.AccountOpened) -> None:
        self.account_id: str = e.account_id
        self.scope: AccountScope = e.scope
        self.unit: Unit = e.unit
        self.limit: int = e.limit
        #: The limit the configuration file last set (an operator may have changed ``limit``).
        self.configured_limit: int = e.limit
        self.period: PeriodSpec = e.period
        self.period_start_us: int = e.period_start_us
        self.period_end_us: int = e.period_end_us
        self.opened_at_us: int = e.at_us
        #: Spend of the current period (reset by a rollover).
        self.spent: int = 0
        #: Sum of the open holds' legs on this account (L1).
        self.reserved: int = 0
        #: Spend since opening, never reset (T2).
        self.lifetime_spent: int = 0
        #: Lifetime usage booked above holds (L3), included in the spends.
        self.overage: int = 0
        self.version: int = e.version

    def copy(self) -> AccountState:
        """An independent copy (a group decision folds into copies, never the live state)."""
        new = AccountState.__new__(AccountState)
        for name in AccountState.__slots__:
            setattr(new, name, getattr(self, name))
        return new


class HoldState:
    """One hold (read-only outside the fold)."""

    __slots__ = (
        "command_ids",
        "estimate",
        "expires_at_us",
        "hold_id",
        "last_at_us",
        "legs",
        "placed_at_us",
        "placed_estimate",
        "rejected_account_ids",
        "rejection",
        "status",
        "ttl_us",
        "version",
    )

    def __init__(
        self,
        *,
        hold_id: str,
        status: HoldStatus,
        legs: tuple[Leg, ...],
        rejected_account_ids: tuple[str, ...],
        estimate: Usage,
        ttl_us: int,
        placed_at_us: int,
        expires_at_us: int,
        rejection: Rejection | None,
        version: int,
    ) -> None:
        self.hold_id = hold_id
        self.status = status
        #: One leg per account it holds on (empty for a rejected hold).
        self.legs = legs
        #: The accounts a rejected hold named (empty for an admitted one: see ``legs``).
        self.rejected_account_ids = rejected_account_ids
        #: The current estimate (changed by adjustments).
        self.estimate = estimate
        #: The estimate the hold was placed with (compared on a retried place, X1).
        self.placed_estimate = estimate
        self.ttl_us = ttl_us
        self.placed_at_us = placed_at_us
        self.expires_at_us = expires_at_us
        self.rejection = rejection
        self.version = version
        #: Engine time of the hold's latest event (the retention horizon's clock).
        self.last_at_us = placed_at_us
        #: Ids of the commands recorded on the hold's stream (retired with it).
        self.command_ids: tuple[str, ...] = ()

    def copy(self) -> HoldState:
        """An independent copy (a group decision folds into copies, never the live state)."""
        new = HoldState.__new__(HoldState)
        for name in HoldState.__slots__:
            setattr(new, name, getattr(self, name))
        return new


class LedgerState:
    """The folded ledger: accounts, holds, open holds and idempotency records."""

    __slots__ = ("accounts", "commands", "holds", "open_holds")

    def __init__(self) -> None:
        self.accounts: dict[str, AccountState] = {}
        self.holds: dict[str, HoldState] = {}
        #: The subset of ``holds`` that is OPEN, in placement order.
        self.open_holds: dict[str, HoldState] = {}
        #: (stream id, command id) -> record, for every command that wrote an event.
        self.commands: dict[tuple[str, str], CommandRecord] = {}


def hold_account_ids(hold: HoldState) -> tuple[str, ...]:
    """The accounts ``hold`` names, in command order (admitted or rejected)."""
    return tuple([leg.account_id for leg in hold.legs]) or hold.rejected_account_ids


def initial() -> LedgerState:
    """A fresh, empty ledger."""
    return LedgerState()


def admits(account: AccountState, amount: int) -> bool:
    """The one admission comparator (L2): ``spent + reserved + amount <= limit``.

    A zero amount is always admitted and holds nothing (a zero-cost request
    must not be refused because the account is at or over its limit).
    """
    return amount == 0 or account.spent + account.reserved + amount <= account.limit


def _move(hold: HoldState, action: HoldAction, e: ev.BudgetEvent) -> HoldStatus:
    """The next state of ``hold`` under ``action``; InvariantViolation if the table forbids it."""
    try:
        return TRANSITIONS[(hold.status, action)]
    except KeyError:
        raise InvariantViolation(
            f"{type(e).__name__} at {e.stream_id}@{e.version}: hold {hold.hold_id!r} is "
            f"{hold.status.value}, which does not allow {action.value}"
        ) from None


# --- evolve: one function per event type, each only assigns ------------------


def _account_opened(s: LedgerState, e: ev.AccountOpened) -> None:
    s.accounts[e.account_id] = AccountState(e)
    s.commands[(e.stream_id, e.command_id)] = (e.command_digest, None)


def _limit_changed(s: LedgerState, e: ev.LimitChanged) -> None:
    acc = s.accounts[e.account_id]
    acc.limit = e.limit
    acc.version = e.version
    s.commands[(e.stream_id, e.command_id)] = (e.command_digest, None)


def _limit_configured(s: LedgerState, e: ev.LimitConfigured) -> None:
    acc = s.accounts[e.account_id]
    acc.limit = e.limit
    acc.configured_limit = e.limit
    acc.version = e.version
    s.commands[(e.stream_id, e.command_id)] = (e.command_digest, None)


def _spend_corrected(s: LedgerState, e: ev.SpendCorrected) -> None:
    acc = s.accounts[e.account_id]
    acc.spent += e.delta
    acc.lifetime_spent += e.delta
    acc.version = e.version
    s.commands[(e.stream_id, e.command_id)] = (e.command_digest, None)


def _period_rolled_over(s: LedgerState, e: ev.PeriodRolledOver) -> None:
    acc = s.accounts[e.account_id]
    acc.spent = 0
    acc.period_start_us = e.period_start_us
    acc.period_end_us = e.period_end_us
    acc.version = e.version


def _amount_reserved(s: LedgerState, e: ev.AmountReserved) -> None:
    acc = s.accounts[e.account_id]
    acc.reserved += e.amount
    acc.version = e.version


def _amount_released(s: LedgerState, e: ev.AmountReleased) -> None:
    acc = s.accounts[e.account_id]
    acc.reserved -= e.amount
    acc.version = e.version


def _amount_posted(s: LedgerState, e: ev.AmountPosted) -> None:
    acc = s.accounts[e.account_id]
    acc.reserved -= e.held
    acc.spent += e.posted + e.overage
    acc.lifetime_spent += e.posted + e.overage
    acc.overage += e.overage
    acc.version = e.version


def _account_command_rejected(s: LedgerState, e: ev.AccountCommandRejected) -> None:
    s.accounts[e.account_id].version = e.version
    s.commands[(e.stream_id, e.command_id)] = (e.command_digest, e.rejection)


def _account_command_conflicted(s: LedgerState, e: ev.AccountCommandConflicted) -> None:
    s.accounts[e.account_id].version = e.version


def _hold_placed(s: LedgerState, e: ev.HoldPlaced) -> None:
    hold = HoldState(
        hold_id=e.hold_id,
        status=HoldStatus.OPEN,
        legs=e.legs,
        rejected_account_ids=(),
        estimate=e.estimate,
        ttl_us=e.ttl_us,
        placed_at_us=e.at_us,
        expires_at_us=e.expires_at_us,
        rejection=None,
        version=e.version,
    )
    s.holds[e.hold_id] = hold
    s.open_holds[e.hold_id] = hold


def _hold_rejected(s: LedgerState, e: ev.HoldRejected) -> None:
    s.holds[e.hold_id] = HoldState(
        hold_id=e.hold_id,
        status=HoldStatus.REJECTED,
        legs=(),
        rejected_account_ids=e.account_ids,
        estimate=e.estimate,
        ttl_us=e.ttl_us,
        placed_at_us=e.at_us,
        expires_at_us=e.at_us,
        rejection=e.rejection,
        version=e.version,
    )


def _touch(hold: HoldState, e: ev.HoldEvent) -> None:
    hold.version = e.version
    hold.last_at_us = e.at_us


def _command(s: LedgerState, hold: HoldState, command_id: str, record: CommandRecord) -> None:
    """Record a command on ``hold``'s stream (X1), remembered on the hold for retirement."""
    s.commands[(hold_stream(hold.hold_id), command_id)] = record
    hold.command_ids = (*hold.command_ids, command_id)


def _resolve(s: LedgerState, e: ev.HoldEvent, action: HoldAction) -> HoldState:
    hold = s.holds[e.hold_id]
    hold.status = _move(hold, action, e)
    _touch(hold, e)
    del s.open_holds[e.hold_id]
    return hold


def _hold_settled(s: LedgerState, e: ev.HoldSettled) -> None:
    _command(s, _resolve(s, e, HoldAction.SETTLE), e.command_id, (e.command_digest, None))


def _hold_refunded(s: LedgerState, e: ev.HoldRefunded) -> None:
    _command(s, _resolve(s, e, HoldAction.REFUND), e.command_id, (e.command_digest, None))


def _hold_expired(s: LedgerState, e: ev.HoldExpired) -> None:
    _resolve(s, e, HoldAction.EXPIRE)


def _late_usage_booked(s: LedgerState, e: ev.LateUsageBooked) -> None:
    hold = s.holds[e.hold_id]
    hold.status = _move(hold, HoldAction.BOOK_LATE, e)
    _touch(hold, e)
    _command(s, hold, e.command_id, (e.command_digest, None))


def _hold_adjusted(s: LedgerState, e: ev.HoldAdjusted) -> None:
    hold = s.holds[e.hold_id]
    hold.status = _move(hold, HoldAction.ADJUST, e)
    hold.legs = e.legs
    hold.estimate = e.estimate
    _touch(hold, e)
    _command(s, hold, e.command_id, (e.command_digest, None))


def _hold_command_rejected(s: LedgerState, e: ev.HoldCommandRejected) -> None:
    hold = s.holds[e.hold_id]
    _touch(hold, e)
    _command(s, hold, e.command_id, (e.command_digest, e.rejection))


def _hold_command_conflicted(s: LedgerState, e: ev.HoldCommandConflicted) -> None:
    _touch(s.holds[e.hold_id], e)


def retire(s: LedgerState, before_us: int) -> None:
    """Drop every resolved hold last touched before ``before_us``, with its command records.

    Open holds stay (they expire by their TTL first, L5). Holds are kept in
    the order they were placed: the scan stops at the first one placed at or
    after ``before_us``.
    """
    doomed = []
    for hold in s.holds.values():
        if hold.placed_at_us >= before_us:
            break
        if hold.last_at_us < before_us and hold.status is not HoldStatus.OPEN:
            doomed.append(hold)
    commands = s.commands
    for hold in doomed:
        del s.holds[hold.hold_id]
        stream = hold_stream(hold.hold_id)
        for command_id in hold.command_ids:
            commands.pop((stream, command_id), None)


_Handler: TypeAlias = Callable[[LedgerState, "ev.BudgetEvent"], None]

#: Event type -> the function applying it. Types not in the table (other
#: contexts' events) are ignored.
_HANDLERS: Final[Mapping[type[object], _Handler]] = {
    ev.AccountOpened: _account_opened,  # type: ignore[dict-item]
    ev.LimitChanged: _limit_changed,  # type: ignore[dict-item]
    ev.LimitConfigured: _limit_configured,  # type: ignore[dict-item]
    ev.SpendCorrected: _spend_corrected,  # type: ignore[dict-item]
    ev.PeriodRolledOver: _period_rolled_over,  # type: ignore[dict-item]
    ev.AmountReserved: _amount_reserved,  # type: ignore[dict-item]
    ev.AmountReleased: _amount_released,  # type: ignore[dict-item]
    ev.AmountPosted: _amount_posted,  # type: ignore[dict-item]
    ev.AccountCommandRejected: _account_command_rejected,  # type: ignore[dict-item]
    ev.AccountCommandConflicted: _account_command_conflicted,  # type: ignore[dict-item]
    ev.HoldPlaced: _hold_placed,  # type: ignore[dict-item]
    ev.HoldRejected: _hold_rejected,  # type: ignore[dict-item]
    ev.HoldSettled: _hold_settled,  # type: ignore[dict-item]
    ev.HoldRefunded: _hold_refunded,  # type: ignore[dict-item]
    ev.HoldExpired: _hold_expired,  # type: ignore[dict-item]
    ev.LateUsageBooked: _late_usage_booked,  # type: ignore[dict-item]
    ev.HoldAdjusted: _hold_adjusted,  # type: ignore[dict-item]
    ev.HoldCommandRejected: _hold_command_rejected,  # type: ignore[dict-item]
    ev.HoldCommandConflicted: _hold_command_conflicted,  # type: ignore[dict-item]
}


def _ignore(s: LedgerState, e: object) -> None:
    """Events of other contexts change nothing here."""


def evolve(state: LedgerState, event: object) -> LedgerState:
    """Apply one event in place and return ``state`` (the fold owns it)."""
    _HANDLERS.get(type(event), _ignore)(state, event)  # type: ignore[arg-type]
    return state


def fold(events: Iterable[object], state: LedgerState | None = None) -> LedgerState:
    """Apply ``events`` in order to ``state`` (a fresh one by default) and return it."""
    s = initial() if state is None else state
    handlers = _HANDLERS
    ignore = _ignore
    for e in events:
        handlers.get(type(e), ignore)(s, e)  # type: ignore[arg-type]
    return s


def check_invariants(state: LedgerState) -> None:
    """Raise :class:`InvariantViolation` unless the ledger is consistent (kept on in production).

    L1: every account's ``reserved`` equals the sum of its open holds' legs
    and is >= 0. Also: balances fit signed 64 bits; period spend is >= 0 and
    never above lifetime spend; ``open_holds`` is exactly the OPEN holds; every
    leg names an existing account with an amount >= 0.
    """
    expected: dict[str, int] = dict.fromkeys(state.accounts, 0)
    open_count = 0
    for hold_id, hold in state.holds.items():
        is_open = hold.status is HoldStatus.OPEN
        open_count += is_open
        if is_open != (hold_id in state.open_holds):
            raise InvariantViolation(
                f"hold {hold_id!r} is {hold.status.value} but open_holds says {not is_open}"
            )
        for leg in hold.legs if is_open else ():
            if leg.account_id not in expected or leg.amount < 0:
                raise InvariantViolation(f"hold {hold_id!r} has an invalid leg {leg!r}")
            expected[leg.account_id] += leg.amount
    if len(state.open_holds) != open_count:
        raise InvariantViolation("open_holds holds a hold that is not in holds")
    for account_id, acc in state.accounts.items():
        # Legs are >= 0 (checked above), so equality also proves reserved >= 0.
        if acc.reserved != expected[account_id]:
            raise InvariantViolation(
                f"L1: account {account_id!r} reserved={acc.reserved} but its open holds "
                f"sum to {expected[account_id]}"
            )
        if not (0 <= acc.spent <= acc.lifetime_spent <= BALANCE_MAX):
            raise InvariantViolation(
                f"account {account_id!r}: need 0 <= spent ({acc.spent}) <= lifetime "
                f"({acc.lifetime_spent}) <= {BALANCE_MAX}"
            )
