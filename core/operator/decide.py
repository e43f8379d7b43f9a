"""Operator commands: one record per command, who and why, idempotent by command id.

An operator (a person at the CLI, a script on the admin API) changes what the
deciders would otherwise decide: lifts a cooldown, suspends a pair, changes a
limit, corrects spend, releases a hold. Each command is decided here, purely,
into the effect's events (from the context that owns it: routing's
:mod:`.routing.admin`, the budget's :mod:`.budget.admin` and hold refund) plus
one :class:`OperatorActed` on ``operator:<command_id>`` naming the actor, the
reason, the action and its target; all of them are appended together.

Idempotency (X1 for operators). The caller passes the record already stored
under the command id, if any (the adapter reads that one stream). The same
command again is a *duplicate*: nothing is appended, the recorded outcome
stands. The same id with another order is a *conflict*: refused, nothing
appended. A command the owning context refuses (an unknown account, a
correction below zero spend) is refused with its reason and, where that
context records refusals, its refusal event only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NamedTuple

import attrs

from ..budget import decide as budget
from ..budget.admin import ChangeLimit, CorrectSpend, decide_change_limit, decide_correct_spend
from ..budget.validate import check_id
from ..errors import CommandError
from ..events import Event
from ..routing.admin import ImposeBlock, LiftBlocks, decide_impose, decide_lift
from ..streams import account_stream, hold_stream, operator_stream
from .events import OperatorActed, OperatorAction

if TYPE_CHECKING:  # fold imports the catalog, which imports this package
    from ..fold import Folded

__all__ = [
    "ACTOR_LENGTH_MAX",
    "REASON_LENGTH_MAX",
    "ChangeLimit",
    "CorrectSpend",
    "ImposeBlock",
    "LiftBlocks",
    "OperatorActed",
    "OperatorAction",
    "OperatorCommand",
    "OperatorDecision",
    "ReleaseHold",
    "decide_operator",
]

#: Longest actor name. Why: a user or service name, shown in one audit line.
ACTOR_LENGTH_MAX: Final = 128
#: Longest reason. Why: one sentence for the audit, like an event's ``detail`` (300).
REASON_LENGTH_MAX: Final = 300


@attrs.frozen(kw_only=True)
class ReleaseHold:
    """Release an open hold now, before its TTL (recorded as the hold's refund)."""

    hold_id: str


#: An order's budget form carries its own ``command_id``; the envelope's wins.
Order = LiftBlocks | ImposeBlock | ChangeLimit | CorrectSpend | ReleaseHold


@attrs.frozen(kw_only=True)
class OperatorCommand:
    """One operator command: its id, who asks, why, and the order."""

    command_id: str
    actor: str
    reason: str
    order: Order


class OperatorDecision(NamedTuple):
    """The events to append, and why nothing or less was done."""

    events: tuple[Event, ...]
    #: The command was already carried out under this id (nothing to append).
    duplicate: bool = False
    #: Why it was refused (``None`` when carried out).
    refused: str | None = None


def _check_text(command: OperatorCommand, name: str, value: object, limit: int) -> None:
    if not (type(value) is str and 0 < len(value) <= limit and value.isprintable()):
        raise CommandError(command, name, f"must be 1..{limit} printable characters")


def _target(order: Order) -> tuple[OperatorAction, str, str]:
    """The action, its target stream and the order's digest (what idempotency compares)."""
    if isinstance(order, LiftBlocks | ImposeBlock):
        credential, model = order.credential_id, order.upstream_model
        target = (
            "*"
            if credential is None
            else (f"pair:{credential}:{model}" if model is not None else f"cred:{credential}")
        )
        if isinstance(order, LiftBlocks):
            return OperatorAction.LIFT_BLOCKS, target, f"lift|{target}"
        return OperatorAction.IMPOSE_BLOCK, target, f"impose|{target}|{order.duration_us}"
    if isinstance(order, ChangeLimit):
        target = account_stream(order.account_id)
        return OperatorAction.CHANGE_LIMIT, target, f"limit|{target}|{order.limit}"
    if isinstance(order, CorrectSpend):
        target = account_stream(order.account_id)
        return OperatorAction.CORRECT_SPEND, target, f"correct|{target}|{order.delta}"
    target = hold_stream(order.hold_id)
    return OperatorAction.RELEASE_HOLD, target, f"release|{target}"


def _effects(
    state: Folded, command: OperatorCommand, now_us: int
) -> tuple[tuple[Event, ...], str | None]:
    """The order's own events, or its context's refusal (with that context's record of it)."""
    order, command_id = command.order, command.command_id
    if isinstance(order, LiftBlocks):
        return decide_lift(state.routing, order, command_id=command_id, now_us=now_us), None
    if isinstance(order, ImposeBlock):
        return (decide_impose(state.routing, order, command_id=command_id, now_us=now_us),), None
    if isinstance(order, ChangeLimit):
        decision = decide_change_limit(
            state.budget, attrs.evolve(order, command_id=command_id), now_us=now_us
        )
    elif isinstance(order, CorrectSpend):
        decision = decide_correct_spend(
            state.budget,
            attrs.evolve(order, command_id=command_id, reason=command.reason),
            now_us=now_us,
        )
    else:
        refund = budget.RefundHold(command_id=command_id, hold_id=order.hold_id)
        decision = budget.decide_refund_hold(state.budget, refund, now_us=now_us)
    return decision.events, _refusal(decision)


def _refusal(decision: budget.Decision) -> str | None:
    rejection = decision.rejection
    if rejection is None:
        return None
    reason = rejection.reason.value
    return f"{reason}: {rejection.detail}" if rejection.detail else reason


def decide_operator(
    state: Folded, recorded: OperatorActed | None, command: OperatorCommand, *, now_us: int
) -> OperatorDecision:
    """The events carrying ``command`` out, given the record already stored under its id."""
    check_id(command.command_id, "command_id", command)
    _check_text(command, "actor", command.actor, ACTOR_LENGTH_MAX)
    _check_text(command, "reason", command.reason, REASON_LENGTH_MAX)
    if not isinstance(command.order, Order):
        raise CommandError(command, "order", f"is not an operator order: {command.order!r}")
    action, target, digest = _target(command.order)
    if recorded is not None:
        if recorded.command_digest == digest:
            return OperatorDecision(events=(), duplicate=True)
        return OperatorDecision(
            events=(),
            refused=f"command id {command.command_id!r} was already used for "
            f"{recorded.command_digest!r}",
        )
    effects, refused = _effects(state, command, now_us)
    if refused is not None:
        return OperatorDecision(events=effects, refused=refused)
    acted = OperatorActed(
        stream_id=operator_stream(command.command_id),
        version=1,
        at_us=now_us,
        command_id=command.command_id,
        command_digest=digest,
        action=action,
        target=target,
        actor=command.actor,
        reason=command.reason,
        effects=len(effects),
    )
    return OperatorDecision(events=(acted, *effects))
