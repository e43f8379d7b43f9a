"""Budget commands and deciders: ``decide_*(state, command, *, now_us) -> Decision``.

Every business rule of the ledger lives here (``evolve`` only assigns). A
decider never mutates the state; it returns a :class:`Decision`: the events to
append as *one batch* (empty for a no-op) and, when the command was refused,
a :class:`Rejection` value. Exceptions are raised only for misuse: a malformed
command (:class:`UsageError`).

Idempotency (X1–X3). Ids come from the caller. A command whose id already
wrote an event on the stream it addresses is compared by payload digest:
same payload -> a duplicate (no events, the recorded outcome again); another
payload -> a recorded :class:`~.events.HoldCommandConflicted` /
:class:`~.events.AccountCommandConflicted`. A state-dependent refusal (over
budget, unknown account) is itself recorded, so the same id stays refused
even after budget is freed (X2). A hold's id is its place command's id.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import attrs

from ..errors import CommandError, UsageError
from ..streams import account_stream, hold_stream
from ..time import ENGINE_TIME_US_MAX
from . import events as ev
from .ledger import (
    TRANSITIONS,
    AccountState,
    HoldAction,
    HoldState,
    LedgerState,
    admits,
    hold_account_ids,
)
from .periods import ZoneResolver, period_bounds
from .validate import check_id, check_now, check_place, usage_problem
from .values import (
    LIMIT_MAX,
    AccountScope,
    HoldStatus,
    Leg,
    PeriodKind,
    PeriodSpec,
    Rejection,
    RejectionReason,
    Unit,
    Usage,
    amount_problem,
)

__all__ = [
    "EXPIRE_BATCH_MAX",
    "AdjustHold",
    "Decision",
    "OpenAccount",
    "PlaceHold",
    "RefundHold",
    "SettleHold",
    "decide_adjust_hold",
    "decide_expire_due",
    "decide_open_account",
    "decide_place_hold",
    "decide_refund_hold",
    "decide_settle_hold",
]

#: Most holds one expiry pass resolves. Why: it bounds one batch (each hold
#: adds 1 + legs events); the caller loops until a pass returns nothing (L5).
EXPIRE_BATCH_MAX: Final = 1_000


# --- commands (imperative) ---------------------------------------------------


@attrs.frozen(kw_only=True)
class OpenAccount:
    """Open a budget account."""

    command_id: str
    account_id: str
    scope: AccountScope
    unit: Unit
    limit: int
    period: PeriodSpec = attrs.field(factory=PeriodSpec)


@attrs.frozen(kw_only=True)
class PlaceHold:
    """Hold ``estimate`` (the worst case) on every account in ``account_ids`` for ``ttl_us``.

    ``hold_id`` is the caller's reservation id and the command's id (X3).
    """

    hold_id: str
    account_ids: tuple[str, ...]
    estimate: Usage
    ttl_us: int


@attrs.frozen(kw_only=True)
class SettleHold:
    """Resolve a hold with the actual ``usage`` (or book it late if the hold expired)."""

    command_id: str
    hold_id: str
    usage: Usage


@attrs.frozen(kw_only=True)
class RefundHold:
    """Resolve a hold by releasing everything (failure before billable output)."""

    command_id: str
    hold_id: str


@attrs.frozen(kw_only=True)
class AdjustHold:
    """Re-price an open hold to ``estimate`` (increase admitted like a new hold)."""

    command_id: str
    hold_id: str
    estimate: Usage


class Decision(NamedTuple):
    """What a decider decided: a batch of events and, if refused, why.

    A named tuple rather than an attrs class: one is built per command on the
    hot path (``ledger.place_settle.us``).
    """

    #: The batch to append atomically (empty: nothing to do).
    events: tuple[ev.BudgetEvent, ...]
    #: Why the command was refused, or ``None``.
    rejection: Rejection | None = None
    #: The command was a repeat of a recorded one (X1): nothing to append.
    duplicate: bool = False

    @property
    def accepted(self) -> bool:
        """Tell whether the command was not refused."""
        return self.rejection is None


_NOTHING: Final = Decision(events=())


# --- decision helpers --------------------------------------------------------


def _invalid(detail: str, *, account_id: str | None = None, hold_id: str | None = None) -> Decision:
    return Decision(
        events=(),
        rejection=Rejection(
            reason=RejectionReason.AMOUNT_INVALID,
            account_id=account_id,
            hold_id=hold_id,
            detail=detail,
        ),
    )


def _digest_usage(u: Usage) -> str:
    return f"{u.cost_micros}/{u.tokens}/{u.requests}"


def _replay(
    state: LedgerState, stream_id: str, command_id: str, digest: str
) -> tuple[bool, Rejection | None, str | None]:
    """Look the command up: (seen, recorded rejection, recorded digest if it differs)."""
    record = state.commands.get((stream_id, command_id))
    if record is None:
        return False, None, None
    if record[0] == digest:
        return True, record[1], None
    return True, None, record[0]


def _conflict(
    command_id: str, recorded: str, *, account_id: str | None = None, hold_id: str | None = None
) -> Rejection:
    return Rejection(
        reason=RejectionReason.COMMAND_CONFLICT,
        account_id=account_id,
        hold_id=hold_id,
        detail=f"command id {command_id!r} was recorded with payload {recorded!r}",
    )


def account_conflict(
    acc: AccountState, command_id: str, digest: str, recorded: str, now_us: int
) -> Decision:
    """``command_id`` was recorded on ``acc`` with another payload: a recorded conflict (X1)."""
    return Decision(
        events=(
            ev.AccountCommandConflicted(
                stream_id=account_stream(acc.account_id),
                version=acc.version + 1,
                at_us=now_us,
                account_id=acc.account_id,
                command_id=command_id,
                command_digest=digest,
                recorded_digest=recorded,
            ),
        ),
        rejection=_conflict(command_id, recorded, account_id=acc.account_id),
    )


# --- accounts ----------------------------------------------------------------


def decide_open_account(
    state: LedgerState, command: OpenAccount, *, now_us: int, zones: ZoneResolver
) -> Decision:
    """Open an account; its first period is computed in its zone (calendar kinds)."""
    now_us = check_now(now_us)
    account_id = check_id(command.account_id, "account_id", command)
    command_id = check_id(command.command_id, "command_id", command)
    period = command.period
    if period.kind is PeriodKind.ROLLING and not (
        type(period.length_us) is int and 0 < period.length_us <= ENGINE_TIME_US_MAX
    ):
        raise CommandError(
            command,
            "period.length_us",
            f"a rolling period needs 0 < length_us, got {period.length_us!r}",
        )
    stream = account_stream(account_id)
    digest = (
        f"open|{command.scope.value}|{command.unit.value}|{command.limit}|"
        f"{period.kind.value}|{period.length_us}|{period.zone}"
    )
    seen, rejection, recorded = _replay(state, stream, command_id, digest)
    if seen and recorded is None:
        return Decision(events=(), rejection=rejection, duplicate=True)
    acc = state.accounts.get(account_id)
    if acc is not None and recorded is not None:
        return account_conflict(acc, command_id, digest, recorded, now_us)
    if acc is not None:
        return Decision(
            events=(),
            rejection=Rejection(reason=RejectionReason.ACCOUNT_EXISTS, account_id=account_id),
        )
    problem = amount_problem(command.limit, maximum=LIMIT_MAX)
    if problem is not None:
        return _invalid(f"limit: {problem}", account_id=account_id)
    start, end = period_bounds(period, now_us, anchor_us=now_us, zones=zones)
    return Decision(
        events=(
            ev.AccountOpened(
                stream_id=stream,
                version=1,
                at_us=now_us,
                account_id=account_id,
                command_id=command_id,
                command_digest=digest,
                scope=command.scope,
                unit=command.unit,
                limit=command.limit,
                period=period,
                period_start_us=start,
                period_end_us=end,
            ),
        )
    )


# --- holds -------------------------------------------------------------------


def _over_budget(acc: AccountState, hold_id: str, requested: int) -> Rejection:
    """The rejection of ``requested`` more on ``acc``, with the figures that refused it (L2)."""
    return Rejection(
        reason=RejectionReason.BUDGET_EXCEEDED,
        account_id=acc.account_id,
        scope=acc.scope,
        hold_id=hold_id,
        limit=acc.limit,
        spent=acc.spent,
        reserved=acc.reserved,
        requested=requested,
    )


def _admit(
    accounts: dict[str, AccountState], account_ids: tuple[str, ...], estimate: Usage, hold_id: str
) -> list[Leg] | Rejection:
    """The legs of a new hold if every account admits it, else the first refusal (L8)."""
    legs: list[Leg] = []
    for account_id in account_ids:
        acc = accounts.get(account_id)
        if acc is None:
            return Rejection(
                reason=RejectionReason.UNKNOWN_ACCOUNT, account_id=account_id, hold_id=hold_id
            )
        amount = estimate.amount_in(acc.unit)
        if not admits(acc, amount):
            return _over_budget(acc, hold_id, amount)
        legs.append(Leg(account_id=account_id, amount=amount))
    return legs


def decide_place_hold(state: LedgerState, command: PlaceHold, *, now_us: int) -> Decision:
    """Admit a hold on all its accounts or on none (L8), by the one comparator (L2)."""
    now_us = check_now(now_us)
    hold_id = check_place(command)
    estimate = command.estimate
    problem = usage_problem(estimate)
    if problem is not None:
        return _invalid(f"estimate: {problem}", hold_id=hold_id)
    stream = hold_stream(hold_id)
    hold = state.holds.get(hold_id)
    if hold is not None:
        return _place_again(hold, command, stream, now_us)
    accounts = state.accounts
    legs = _admit(accounts, command.account_ids, estimate, hold_id)
    if isinstance(legs, Rejection):
        return Decision(
            events=(
                ev.HoldRejected(
                    stream_id=stream,
                    version=1,
                    at_us=now_us,
                    hold_id=hold_id,
                    account_ids=command.account_ids,
                    estimate=estimate,
                    ttl_us=command.ttl_us,
                    rejection=legs,
                ),
            ),
            rejection=legs,
        )
    batch: list[ev.BudgetEvent] = [
        ev.HoldPlaced(
            stream_id=stream,
            version=1,
            at_us=now_us,
            hold_id=hold_id,
            legs=tuple(legs),
            estimate=estimate,
            ttl_us=command.ttl_us,
            expires_at_us=min(now_us + command.ttl_us, ENGINE_TIME_US_MAX),
        )
    ]
    for leg in legs:
        acc = accounts[leg.account_id]
        batch.append(
            ev.AmountReserved(
                stream_id=account_stream(leg.account_id),
                version=acc.version + 1,
                at_us=now_us,
                account_id=leg.account_id,
                hold_id=hold_id,
                amount=leg.amount,
            )
        )
    return Decision(events=tuple(batch))


def _place_again(hold: HoldState, command: PlaceHold, stream: str, now_us: int) -> Decision:
    """A place command for a hold id already used: a duplicate or a conflict (X1, X2)."""
    account_ids = hold_account_ids(hold)
    if account_ids == command.account_ids and (hold.placed_estimate, hold.ttl_us) == (
        command.estimate,
        command.ttl_us,
    ):
        return Decision(events=(), rejection=hold.rejection, duplicate=True)
    recorded = f"place|{','.join(account_ids)}|{_digest_usage(hold.placed_estimate)}|{hold.ttl_us}"
    return Decision(
        events=(
            ev.HoldCommandConflicted(
                stream_id=stream,
                version=hold.version + 1,
                at_us=now_us,
                hold_id=hold.hold_id,
                command_id=hold.hold_id,
                command_digest=(
                    f"place|{','.join(command.account_ids)}|{_digest_usage(command.estimate)}|"
                    f"{command.ttl_us}"
                ),
                recorded_digest=recorded,
            ),
        ),
        rejection=_conflict(hold.hold_id, recorded, hold_id=hold.hold_id),
    )


def _hold_command(
    state: LedgerState, hold_id: str, command_id: str, digest: str, now_us: int
) -> HoldState | Decision:
    """Common prologue of hold commands: the hold, or the decision already made."""
    hold_id = check_id(hold_id, "hold_id")
    command_id = check_id(command_id, "command_id")
    hold = state.holds.get(hold_id)
    if hold is None:
        return Decision(
            events=(), rejection=Rejection(reason=RejectionReason.UNKNOWN_HOLD, hold_id=hold_id)
        )
    seen, rejection, recorded = _replay(state, hold_stream(hold_id), command_id, digest)
    if not seen:
        return hold
    if recorded is None:
        return Decision(events=(), rejection=rejection, duplicate=True)
    return Decision(
        events=(
            ev.HoldCommandConflicted(
                stream_id=hold_stream(hold_id),
                version=hold.version + 1,
                at_us=now_us,
                hold_id=hold_id,
                command_id=command_id,
                command_digest=digest,
                recorded_digest=recorded,
            ),
        ),
        rejection=_conflict(command_id, recorded, hold_id=hold_id),
    )


def _expiry(
    state: LedgerState, hold: HoldState, now_us: int, next_version: dict[str, int]
) -> list[ev.BudgetEvent]:
    """The events expiring ``hold`` (everything released); ``next_version`` tracks accounts."""
    batch: list[ev.BudgetEvent] = [
        ev.HoldExpired(
            stream_id=hold_stream(hold.hold_id),
            version=hold.version + 1,
            at_us=now_us,
            hold_id=hold.hold_id,
            expires_at_us=hold.expires_at_us,
        )
    ]
    for leg in hold.legs:
        version = next_version.get(leg.account_id, state.accounts[leg.account_id].version) + 1
        next_version[leg.account_id] = version
        batch.append(
            ev.AmountReleased(
                stream_id=account_stream(leg.account_id),
                version=version,
                at_us=now_us,
                account_id=leg.account_id,
                hold_id=hold.hold_id,
                amount=leg.amount,
            )
        )
    return batch


def _expired_now(state: LedgerState, hold: HoldState, now_us: int) -> Decision:
    """An overdue hold met by a command: expire it now and refuse the command (L6)."""
    return Decision(
        events=tuple(_expiry(state, hold, now_us, {})),
        rejection=Rejection(
            reason=RejectionReason.HOLD_EXPIRED,
            hold_id=hold.hold_id,
            resolved_as=HoldStatus.EXPIRED,
        ),
    )


def _is_overdue(hold: HoldState, now_us: int) -> bool:
    """An open hold whose deadline passed (L6: at ``placed_at + ttl``, never earlier)."""
    return hold.status is HoldStatus.OPEN and now_us >= hold.expires_at_us


def _resolved(hold: HoldState, action: HoldAction) -> Decision:
    """The rejection for an action the hold's state does not allow (L4)."""
    expired = hold.status in (HoldStatus.EXPIRED, HoldStatus.LATE_BOOKED)
    return Decision(
        events=(),
        rejection=Rejection(
            reason=RejectionReason.HOLD_EXPIRED
            if expired and action is not HoldAction.SETTLE
            else RejectionReason.ALREADY_RESOLVED,
            hold_id=hold.hold_id,
            resolved_as=hold.status,
        ),
    )


def decide_settle_hold(state: LedgerState, command: SettleHold, *, now_us: int) -> Decision:
    """Settle with actual usage (L3), or book it late if the hold expired (L6).

    Each leg posts ``min(actual, held)``, releases the rest, and books usage
    above the hold as a flagged overage. A hold past its deadline is expired
    in the same batch and the usage booked as a late posted debit, never
    dropped.
    """
    now_us = check_now(now_us)
    usage = command.usage
    problem = usage_problem(usage)
    if problem is not None:
        return _invalid(f"usage: {problem}", hold_id=str(command.hold_id))
    digest = "settle|" + _digest_usage(usage)
    hold = _hold_command(state, command.hold_id, command.command_id, digest, now_us)
    if isinstance(hold, Decision):
        return hold
    if _is_overdue(hold, now_us):
        batch = _expiry(state, hold, now_us, {})
        return Decision(events=(*batch, *_late(state, hold, command, digest, now_us, 2)))
    if (hold.status, HoldAction.BOOK_LATE) in TRANSITIONS:
        return Decision(events=tuple(_late(state, hold, command, digest, now_us, 1)))
    if (hold.status, HoldAction.SETTLE) not in TRANSITIONS:
        return _resolved(hold, HoldAction.SETTLE)
    accounts = state.accounts
    entries: list[ev.BudgetEvent] = []
    over = False
    for leg in hold.legs:
        acc = accounts[leg.account_id]
        actual = usage.amount_in(acc.unit)
        posted = min(actual, leg.amount)
        over = over or actual > posted
        entries.append(
            ev.AmountPosted(
                stream_id=account_stream(leg.account_id),
                version=acc.version + 1,
                at_us=now_us,
                account_id=leg.account_id,
                hold_id=hold.hold_id,
                held=leg.amount,
                posted=posted,
                overage=actual - posted,
                late=False,
            )
        )
    settled = ev.HoldSettled(
        stream_id=hold_stream(hold.hold_id),
        version=hold.version + 1,
        at_us=now_us,
        hold_id=hold.hold_id,
        command_id=command.command_id,
        command_digest=digest,
        usage=usage,
        overage=over,
    )
    return Decision(events=(settled, *entries))


def _late(
    state: LedgerState,
    hold: HoldState,
    command: SettleHold,
    digest: str,
    now_us: int,
    offset: int,
) -> list[ev.BudgetEvent]:
    """Book the usage of an expired hold as a late posted debit on every leg (L6)."""
    batch: list[ev.BudgetEvent] = [
        ev.LateUsageBooked(
            stream_id=hold_stream(hold.hold_id),
            version=hold.version + offset,
            at_us=now_us,
            hold_id=hold.hold_id,
            command_id=command.command_id,
            command_digest=digest,
            usage=command.usage,
        )
    ]
    for leg in hold.legs:
        acc = state.accounts[leg.account_id]
        batch.append(
            ev.AmountPosted(
                stream_id=account_stream(leg.account_id),
                version=acc.version + offset,
                at_us=now_us,
                account_id=leg.account_id,
                hold_id=hold.hold_id,
                held=0,
                posted=command.usage.amount_in(acc.unit),
                overage=0,
                late=True,
            )
        )
    return batch


def decide_refund_hold(state: LedgerState, command: RefundHold, *, now_us: int) -> Decision:
    """Release the whole hold (failure before any billable output, L11)."""
    now_us = check_now(now_us)
    hold = _hold_command(state, command.hold_id, command.command_id, "refund", now_us)
    if isinstance(hold, Decision):
        return hold
    if _is_overdue(hold, now_us):
        return _expired_now(state, hold, now_us)
    if (hold.status, HoldAction.REFUND) not in TRANSITIONS:
        return _resolved(hold, HoldAction.REFUND)
    batch: list[ev.BudgetEvent] = [
        ev.HoldRefunded(
            stream_id=hold_stream(hold.hold_id),
            version=hold.version + 1,
            at_us=now_us,
            hold_id=hold.hold_id,
            command_id=command.command_id,
            command_digest="refund",
        )
    ]
    for leg in hold.legs:
        batch.append(
            ev.AmountReleased(
                stream_id=account_stream(leg.account_id),
                version=state.accounts[leg.account_id].version + 1,
                at_us=now_us,
                account_id=leg.account_id,
                hold_id=hold.hold_id,
                amount=leg.amount,
            )
        )
    return Decision(events=tuple(batch))


def _hold_refused(
    hold: HoldState, command_id: str, digest: str, rejection: Rejection, now_us: int
) -> Decision:
    """Record a refused hold command on the hold's stream, sticky for its id (X2)."""
    return Decision(
        events=(
            ev.HoldCommandRejected(
                stream_id=hold_stream(hold.hold_id),
                version=hold.version + 1,
                at_us=now_us,
                hold_id=hold.hold_id,
                command_id=command_id,
                command_digest=digest,
                rejection=rejection,
            ),
        ),
        rejection=rejection,
    )


def decide_adjust_hold(state: LedgerState, command: AdjustHold, *, now_us: int) -> Decision:
    """Re-price an open hold: increases are admitted like a new hold (L2, L8), decreases release.

    A refused increase is recorded (sticky for the command id, X2) and the
    hold keeps its previous amounts.
    """
    now_us = check_now(now_us)
    estimate = command.estimate
    problem = usage_problem(estimate)
    if problem is not None:
        return _invalid(f"estimate: {problem}", hold_id=str(command.hold_id))
    digest = "adjust|" + _digest_usage(estimate)
    hold = _hold_command(state, command.hold_id, command.command_id, digest, now_us)
    if isinstance(hold, Decision):
        return hold
    if _is_overdue(hold, now_us):
        return _expired_now(state, hold, now_us)
    if (hold.status, HoldAction.ADJUST) not in TRANSITIONS:
        return _resolved(hold, HoldAction.ADJUST)
    legs: list[Leg] = []
    entries: list[ev.BudgetEvent] = []
    for leg in hold.legs:
        acc = state.accounts[leg.account_id]
        amount = estimate.amount_in(acc.unit)
        delta = amount - leg.amount
        if delta > 0 and not admits(acc, delta):
            rejection = _over_budget(acc, hold.hold_id, delta)
            return _hold_refused(hold, command.command_id, digest, rejection, now_us)
        legs.append(Leg(account_id=leg.account_id, amount=amount))
        entry_type = ev.AmountReserved if delta >= 0 else ev.AmountReleased
        entries.append(
            entry_type(
                stream_id=account_stream(acc.account_id),
                version=acc.version + 1,
                at_us=now_us,
                account_id=acc.account_id,
                hold_id=hold.hold_id,
                amount=abs(delta),
            )
        )
    adjusted = ev.HoldAdjusted(
        stream_id=hold_stream(hold.hold_id),
        version=hold.version + 1,
        at_us=now_us,
        hold_id=hold.hold_id,
        command_id=command.command_id,
        command_digest=digest,
        estimate=estimate,
        legs=tuple(legs),
    )
    return Decision(events=(adjusted, *entries))


def decide_expire_due(
    state: LedgerState, *, now_us: int, batch_max: int = EXPIRE_BATCH_MAX
) -> Decision:
    """Expire every open hold whose deadline ``placed_at + ttl`` is ``<= now_us`` (L5, L6).

    At most ``batch_max`` holds per decision, oldest placement first; call
    again until the decision is empty.
    """
    now_us = check_now(now_us)
    if not (type(batch_max) is int and 1 <= batch_max <= EXPIRE_BATCH_MAX):
        raise UsageError(f"batch_max must be an int in 1..{EXPIRE_BATCH_MAX}, got {batch_max!r}")
    batch: list[ev.BudgetEvent] = []
    next_version: dict[str, int] = {}
    count = 0
    for hold in state.open_holds.values():
        if count == batch_max:
            break
        if now_us >= hold.expires_at_us:
            batch.extend(_expiry(state, hold, now_us, next_version))
            count += 1
    return Decision(events=tuple(batch))
