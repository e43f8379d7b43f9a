"""Group commit: decide several hold commands as one batch, exactly as if one by one.

A durable store pays one sync per commit, so a gateway placing one hold per
commit is capped by the commit rate (``ledger.sqlite.serial.holds_per_s`` in
``bench/README.md``). Holds arriving
together can share a commit: :func:`decide_holds` decides them in order, each
seeing the effect of those before it (a hot account's ``reserved`` grows hold
by hold, so L2 is judged exactly as if they were appended one at a time), and
returns every decision; the caller appends all their events in one atomic
batch.

Why it is exact without touching the live state: a hold command reads only
the hold it names, the accounts of that hold's legs (or, for a placement, the
accounts it names) and the idempotency record of its own command id. The
group decides and folds into a *scratch* ledger holding copies of exactly
those, so the live state is never modified before the batch is recorded (L10)
and nothing needs undoing when the append conflicts: the caller catches up
and decides the group again. ``tests/core/budget/test_group.py`` checks the
equivalence with deciding one by one on random histories.

A command that is misuse (:class:`~..errors.UsageError`) gets its error back
in its slot and changes nothing; the others are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

from ..errors import UsageError
from ..streams import hold_stream
from .decide import (
    AdjustHold,
    Decision,
    PlaceHold,
    RefundHold,
    SettleHold,
    decide_adjust_hold,
    decide_place_hold,
    decide_refund_hold,
    decide_settle_hold,
)
from .ledger import LedgerState, fold

__all__ = ["GROUP_COMMANDS_MAX", "HoldCommand", "HoldGroup", "HoldResult", "decide_holds"]

#: Commands decided as one batch, at most. Why: a hold's CPU work (decide,
#: encode, insert, fold) is about a tenth of one durable commit, so by 64 holds
#: a group spends most of its commit working rather than waiting; larger groups
#: only lengthen the tail latency of the first command in them (figures:
#: ``ledger.sqlite.holds_per_s`` against ``ledger.sqlite.serial.holds_per_s``).
GROUP_COMMANDS_MAX: Final = 64

HoldCommand: TypeAlias = PlaceHold | SettleHold | RefundHold | AdjustHold
#: What one command of a group came to: its decision, or the misuse it was.
HoldResult: TypeAlias = Decision | UsageError

_DECIDERS: Final[dict[type[object], Callable[..., Decision]]] = {
    PlaceHold: decide_place_hold,
    SettleHold: decide_settle_hold,
    RefundHold: decide_refund_hold,
    AdjustHold: decide_adjust_hold,
}


def _scratch(state: LedgerState, commands: Sequence[HoldCommand]) -> LedgerState:
    """A ledger with copies of everything ``commands`` can read, and nothing else."""
    scratch = LedgerState()
    account_ids: list[object] = []
    for command in commands:
        if type(command) not in _DECIDERS:
            continue  # returned as misuse, reads nothing
        hold_id = command.hold_id
        if type(hold_id) is not str:
            continue  # the decider refuses it before reading anything
        hold = state.holds.get(hold_id)
        if hold is not None and hold_id not in scratch.holds:
            copied = hold.copy()
            scratch.holds[hold_id] = copied
            if hold_id in state.open_holds:
                scratch.open_holds[hold_id] = copied
            account_ids.extend(leg.account_id for leg in hold.legs)
        if isinstance(command, PlaceHold):
            if type(command.account_ids) is tuple:
                account_ids.extend(command.account_ids)
            continue
        command_id = command.command_id
        if type(command_id) is str:
            key = (hold_stream(hold_id), command_id)
            record = state.commands.get(key)
            if record is not None:
                scratch.commands[key] = record
    accounts = state.accounts
    for account_id in account_ids:
        if type(account_id) is str and account_id not in scratch.accounts:
            account = accounts.get(account_id)
            if account is not None:
                scratch.accounts[account_id] = account.copy()
    return scratch


class HoldGroup:
    """Hold commands decided one after another on a scratch ledger, each seeing the ones before.

    Build it with every command the group may decide (so the scratch holds
    what they read), then :meth:`peek` a command's decision and :meth:`keep`
    it once the caller has decided to record it; a peeked decision that is not
    kept leaves no trace. ``state`` is never modified.
    """

    __slots__ = ("_alone", "scratch")

    def __init__(self, state: LedgerState, commands: Sequence[HoldCommand]) -> None:
        #: A lone command is decided on ``state`` itself: nothing follows it in
        #: the group, so there is nothing to keep and nothing to copy.
        self._alone = len(commands) <= 1
        self.scratch = state if self._alone else _scratch(state, commands)

    def peek(self, command: HoldCommand, *, now_us: int) -> Decision:
        """The decision for ``command`` after those kept so far (raises UsageError on misuse)."""
        decide = _DECIDERS.get(type(command))
        if decide is None:
            raise UsageError(f"not a hold command: {type(command).__name__}")
        return decide(self.scratch, command, now_us=now_us)

    def keep(self, decision: Decision) -> None:
        """Count ``decision`` as recorded: the next commands see it."""
        if self._alone:
            return  # the live state is folded by its owner once the batch is recorded
        fold(decision.events, self.scratch)


def decide_holds(
    state: LedgerState, commands: Sequence[HoldCommand], *, now_us: int
) -> tuple[HoldResult, ...]:
    """Decide ``commands`` in order, each seeing those before it; ``state`` is not modified.

    Appending every returned decision's events in order, as one batch, records
    exactly what deciding and appending them one at a time would have.
    """
    if not 1 <= len(commands) <= GROUP_COMMANDS_MAX:
        raise UsageError(f"a group holds 1..{GROUP_COMMANDS_MAX} commands, got {len(commands)}")
    group = HoldGroup(state, commands)
    outcomes: list[HoldResult] = []
    for index, command in enumerate(commands):
        try:
            decision = group.peek(command, now_us=now_us)
        except UsageError as error:
            if type(command) not in _DECIDERS:
                error = UsageError(f"group command {index}: {error}")
            outcomes.append(error)
            continue
        group.keep(decision)
        outcomes.append(decision)
    return tuple(outcomes)
