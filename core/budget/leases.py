"""Leases: per-process sub-allocations of a hot account that are themselves holds (D4).

Every admission on an account is a conditional append on its stream, so a
team account shared by a whole fleet serialises the fleet. A *lease* moves
most of that traffic off the hot stream without weakening the bound:

1. :func:`decide_take_lease` places an ordinary hold ``lease_id`` on the hot
   account (admitted by the same comparator, so Σ leases + spend <= limit)
   and, in the same batch, opens a *lease account* ``lease_id`` whose limit is
   the leased amount, in the hot account's unit.
2. The owning process admits its requests against the lease account instead
   of the hot one (``PlaceHold(account_ids=(key, user, lease_id))``): only it
   writes that stream, so those appends never conflict across processes.
3. :func:`decide_return_lease` settles the lease hold with everything the
   lease account spent (so the hot account is charged exactly that and gets
   the rest back) and closes the lease account (limit 0). It is refused with
   ``LEASE_IN_USE`` while holds are still open on the lease account.

If the owner dies, the lease hold expires like any hold (L5) and releases the
leased amount; a sweeper then returns the lease, which books what the lease
account had spent as a late debit on the hot account (L6). Until that
return, the hot account may re-admit up to that spend: the overshoot is
bounded by one lease per crashed process (see ``docs/budget.md``). Lease
policy (size, renewal, which requests use which lease) is the engine's.
"""

from __future__ import annotations

import attrs

from ..streams import account_stream
from ..time import ENGINE_TIME_US_MAX
from . import events as ev
from .decide import (
    Decision,
    PlaceHold,
    SettleHold,
    decide_place_hold,
    decide_settle_hold,
)
from .ledger import LedgerState
from .values import AMOUNT_MAX, PeriodSpec, Rejection, RejectionReason, Usage, amount_problem

__all__ = ["ReturnLease", "TakeLease", "decide_return_lease", "decide_take_lease"]


@attrs.frozen(kw_only=True)
class TakeLease:
    """Lease ``amount`` (in the hot account's unit) of ``account_id`` for ``ttl_us``.

    ``lease_id`` is both the hold id on the hot account and the lease
    account's id (X3: the caller's id).
    """

    lease_id: str
    account_id: str
    amount: int
    ttl_us: int


@attrs.frozen(kw_only=True)
class ReturnLease:
    """Settle a lease with what its account spent and close the lease account."""

    command_id: str
    lease_id: str


def decide_take_lease(state: LedgerState, command: TakeLease, *, now_us: int) -> Decision:
    """Hold the lease on the hot account and open the lease account, in one batch."""
    hot = state.accounts.get(command.account_id)
    if hot is None:
        return Decision(
            events=(),
            rejection=Rejection(
                reason=RejectionReason.UNKNOWN_ACCOUNT, account_id=command.account_id
            ),
        )
    problem = amount_problem(command.amount, maximum=AMOUNT_MAX)
    if problem is not None:
        return Decision(
            events=(),
            rejection=Rejection(
                reason=RejectionReason.AMOUNT_INVALID, hold_id=command.lease_id, detail=problem
            ),
        )
    placed = decide_place_hold(
        state,
        PlaceHold(
            hold_id=command.lease_id,
            account_ids=(command.account_id,),
            estimate=Usage.of(hot.unit, command.amount),
            ttl_us=command.ttl_us,
        ),
        now_us=now_us,
    )
    if not placed.accepted or placed.duplicate:
        return placed
    if command.lease_id in state.accounts:
        return Decision(
            events=(),
            rejection=Rejection(reason=RejectionReason.ACCOUNT_EXISTS, account_id=command.lease_id),
        )
    opened = ev.AccountOpened(
        stream_id=account_stream(command.lease_id),
        version=1,
        at_us=now_us,
        account_id=command.lease_id,
        command_id=command.lease_id,
        command_digest=f"lease|{command.account_id}|{command.amount}|{command.ttl_us}",
        scope=hot.scope,
        unit=hot.unit,
        limit=command.amount,
        period=PeriodSpec(),
        period_start_us=now_us,
        period_end_us=ENGINE_TIME_US_MAX,
    )
    return Decision(events=(*placed.events, opened))


def decide_return_lease(state: LedgerState, command: ReturnLease, *, now_us: int) -> Decision:
    """Charge the hot account what the lease account spent, release the rest, close the lease.

    After the lease expired this books the spend as a late debit (L6); it is
    refused with ``LEASE_IN_USE`` while holds are open on the lease account.
    """
    local = state.accounts.get(command.lease_id)
    if local is None or command.lease_id not in state.holds:
        return Decision(
            events=(),
            rejection=Rejection(reason=RejectionReason.UNKNOWN_HOLD, hold_id=command.lease_id),
        )
    if local.reserved:
        return Decision(
            events=(),
            rejection=Rejection(
                reason=RejectionReason.LEASE_IN_USE,
                account_id=local.account_id,
                hold_id=command.lease_id,
                reserved=local.reserved,
            ),
        )
    settled = decide_settle_hold(
        state,
        SettleHold(
            command_id=command.command_id,
            hold_id=command.lease_id,
            usage=Usage.of(local.unit, local.lifetime_spent),
        ),
        now_us=now_us,
    )
    if not settled.accepted or settled.duplicate:
        return settled
    closed = ev.LimitChanged(
        stream_id=account_stream(local.account_id),
        version=local.version + 1,
        at_us=now_us,
        account_id=local.account_id,
        command_id=command.command_id,
        command_digest="close-lease",
        limit=0,
        previous_limit=local.limit,
    )
    return Decision(events=(*settled.events, closed))
