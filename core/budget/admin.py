"""Budget deciders an operator or the maintenance loop runs, not a request: limits,
spend corrections, period rollover.

The engine's maintenance loop rolls periods over; its configuration
reconciliation and operator commands (``routeledger.core.operator``) change
limits and correct spend. They decide exactly like the request-path
deciders in :mod:`.decide` (validation, idempotency by command id, X1) and
share its helpers.
"""

from __future__ import annotations

import attrs

from ..errors import CommandError
from ..streams import account_stream
from . import events as ev
from .decide import _NOTHING, Decision, _invalid, _replay, account_conflict
from .ledger import AccountState, LedgerState
from .periods import ZoneResolver, period_bounds
from .validate import check_id, check_now
from .values import AMOUNT_MAX, LIMIT_MAX, PeriodKind, Rejection, RejectionReason, amount_problem

__all__ = [
    "ChangeLimit",
    "CorrectSpend",
    "decide_change_limit",
    "decide_correct_spend",
    "decide_roll_period",
    "periods_due",
]


@attrs.frozen(kw_only=True)
class ChangeLimit:
    """Set an account's limit (takes effect at the very next decision, T3)."""

    command_id: str
    account_id: str
    limit: int


@attrs.frozen(kw_only=True)
class CorrectSpend:
    """Correct an account's spend by ``delta`` (negative to credit)."""

    command_id: str
    account_id: str
    delta: int
    reason: str


def _account_command(
    state: LedgerState, account_id: str, command_id: str, digest: str, now_us: int
) -> AccountState | Decision:
    """Common prologue of admin commands: the account, or the decision already made."""
    account_id = check_id(account_id, "account_id")
    command_id = check_id(command_id, "command_id")
    acc = state.accounts.get(account_id)
    if acc is None:
        return Decision(
            events=(),
            rejection=Rejection(reason=RejectionReason.UNKNOWN_ACCOUNT, account_id=account_id),
        )
    stream = account_stream(account_id)
    seen, rejection, recorded = _replay(state, stream, command_id, digest)
    if not seen:
        return acc
    if recorded is None:
        return Decision(events=(), rejection=rejection, duplicate=True)
    return account_conflict(acc, command_id, digest, recorded, now_us)


def decide_change_limit(
    state: LedgerState, command: ChangeLimit, *, now_us: int, configured: bool = False
) -> Decision:
    """Change an account's limit; the very next decision sees it (T3).

    ``configured``: the change comes from the configuration file
    (``LimitConfigured``), not from an operator (``LimitChanged``).
    """
    now_us = check_now(now_us)
    acc = _account_command(
        state, command.account_id, command.command_id, f"limit|{command.limit}", now_us
    )
    if isinstance(acc, Decision):
        return acc
    problem = amount_problem(command.limit, maximum=LIMIT_MAX)
    if problem is not None:
        return _invalid(f"limit: {problem}", account_id=acc.account_id)
    return Decision(
        events=(
            (ev.LimitConfigured if configured else ev.LimitChanged)(
                stream_id=account_stream(acc.account_id),
                version=acc.version + 1,
                at_us=now_us,
                account_id=acc.account_id,
                command_id=command.command_id,
                command_digest=f"limit|{command.limit}",
                limit=command.limit,
                previous_limit=acc.limit,
            ),
        )
    )


def decide_correct_spend(state: LedgerState, command: CorrectSpend, *, now_us: int) -> Decision:
    """Correct spend by a signed delta; a correction below zero spend is refused (sticky)."""
    now_us = check_now(now_us)
    if type(command.reason) is not str:
        raise CommandError(command, "reason", f"must be a str, got {command.reason!r}")
    digest = f"correct|{command.delta}|{command.reason}"
    acc = _account_command(state, command.account_id, command.command_id, digest, now_us)
    if isinstance(acc, Decision):
        return acc
    problem = amount_problem(command.delta, minimum=-AMOUNT_MAX)
    if problem is not None:
        return _invalid(f"delta: {problem}", account_id=acc.account_id)
    stream = account_stream(acc.account_id)
    if acc.spent + command.delta < 0:
        rejection = Rejection(
            reason=RejectionReason.AMOUNT_INVALID,
            account_id=acc.account_id,
            spent=acc.spent,
            requested=command.delta,
            detail="a correction cannot make period spend negative",
        )
        return Decision(
            events=(
                ev.AccountCommandRejected(
                    stream_id=stream,
                    version=acc.version + 1,
                    at_us=now_us,
                    account_id=acc.account_id,
                    command_id=command.command_id,
                    command_digest=digest,
                    rejection=rejection,
                ),
            ),
            rejection=rejection,
        )
    return Decision(
        events=(
            ev.SpendCorrected(
                stream_id=stream,
                version=acc.version + 1,
                at_us=now_us,
                account_id=acc.account_id,
                command_id=command.command_id,
                command_digest=digest,
                delta=command.delta,
                reason=command.reason,
            ),
        )
    )


def periods_due(state: LedgerState, *, now_us: int) -> tuple[str, ...]:
    """The ids of accounts whose period ended at or before ``now_us``, in id order."""
    return tuple(
        sorted(
            a.account_id
            for a in state.accounts.values()
            if a.period.kind is not PeriodKind.NONE and now_us >= a.period_end_us
        )
    )


def decide_roll_period(
    state: LedgerState, account_id: str, *, now_us: int, zones: ZoneResolver
) -> Decision:
    """Start the period containing ``now_us`` if the current one ended (T2).

    Period spend restarts at zero; ``reserved`` and lifetime spend are kept,
    open holds carry over. Nothing to do (no events) before the boundary.
    """
    now_us = check_now(now_us)
    acc = state.accounts.get(account_id)
    if acc is None:
        return Decision(
            events=(),
            rejection=Rejection(reason=RejectionReason.UNKNOWN_ACCOUNT, account_id=account_id),
        )
    if acc.period.kind is PeriodKind.NONE or now_us < acc.period_end_us:
        return _NOTHING
    start, end = period_bounds(acc.period, now_us, anchor_us=acc.opened_at_us, zones=zones)
    return Decision(
        events=(
            ev.PeriodRolledOver(
                stream_id=account_stream(account_id),
                version=acc.version + 1,
                at_us=now_us,
                account_id=account_id,
                closed_spent=acc.spent,
                period_start_us=start,
                period_end_us=end,
            ),
        )
    )
