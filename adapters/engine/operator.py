"""Operator commands on a running engine: decided by the core, appended with who and why.

Every command is one atomic append of its effects plus an
:class:`~routeledger.core.operator.OperatorActed` record on
``operator:<command_id>`` (``Origin.ADMIN``), so ``routeledger audit`` and
``status`` show who did what and why, and a repeat of the same command id is
answered from that record without appending anything (X1 for operators).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import attrs

from routeledger.adapters.engine.logs import LOGGER
from routeledger.core.errors import UsageError
from routeledger.core.events import Event
from routeledger.core.fold import Folded
from routeledger.core.operator import (
    OperatorActed,
    OperatorAction,
    OperatorCommand,
    OperatorDecision,
    Order,
    decide_operator,
)
from routeledger.core.streams import credential_stream, operator_stream, pair_stream

if TYPE_CHECKING:
    from routeledger.adapters.engine.engine import Engine

__all__ = ["OperatorRefused", "OperatorResult", "UnknownTarget", "check_scope", "operate"]


class OperatorRefused(UsageError):
    """The command was refused (nothing of it was carried out); ``reason`` says why."""

    def __init__(self, command_id: str, reason: str) -> None:
        self.command_id = command_id
        self.reason = reason
        super().__init__(f"operator command {command_id!r} refused: {reason}")


class UnknownTarget(UsageError):
    """The command names a credential, model, account or hold the gateway does not have."""


@attrs.frozen(kw_only=True)
class OperatorResult:
    """What an operator command did."""

    command_id: str
    action: OperatorAction
    #: The stream id acted on, or ``*`` for every scope.
    target: str
    #: Events appended besides the record (0: nothing was blocked, say).
    effects: int
    #: The command id was already carried out: nothing new was appended.
    duplicate: bool


def _recorded(engine: Engine, command_id: str) -> OperatorActed | None:
    for evt in engine.store.load(operator_stream(command_id)):
        if isinstance(evt, OperatorActed):
            return evt
    return None


def check_scope(engine: Engine, credential_id: str | None, upstream_model: str | None) -> None:
    """:class:`UnknownTarget` unless the configuration (or the log) knows the scope."""
    if credential_id is None:
        return
    state = engine.state.routing
    configured = {spec.id for spec in engine.config.policy.credentials}
    if upstream_model is None:
        if credential_id in configured or credential_stream(credential_id) in state.creds:
            return
        raise UnknownTarget(
            f"no credential {credential_id!r} (configured: {', '.join(sorted(configured))})"
        )
    pairs = {
        (member.credential, member.model)
        for plan in engine.config.policy.pools()
        for member in plan.members
    }
    if (credential_id, upstream_model) in pairs:
        return
    if pair_stream(credential_id, upstream_model) in state.pairs:
        return
    raise UnknownTarget(
        f"no route uses credential {credential_id!r} with upstream model {upstream_model!r}"
    )


def operate(
    engine: Engine, order: Order, *, actor: str, reason: str, command_id: str | None
) -> OperatorResult:
    """Carry ``order`` out as one operator command (a fresh id unless ``command_id`` is given)."""
    command = OperatorCommand(
        command_id=command_id if command_id is not None else f"op-{uuid.uuid4().hex}",
        actor=actor,
        reason=reason,
        order=order,
    )

    def decide(state: Folded, now: int) -> OperatorDecision:
        return decide_operator(state, _recorded(engine, command.command_id), command, now_us=now)

    decision = engine.runtime.run(decide, lambda d: d.events)
    if decision.refused is not None:
        raise OperatorRefused(command.command_id, decision.refused)
    acted = _recorded(engine, command.command_id)
    if acted is None:  # the runtime appended it, or it was already there
        raise UsageError(f"operator command {command.command_id!r} left no record")
    if not decision.duplicate:
        _log(acted, decision.events)
    return OperatorResult(
        command_id=acted.command_id,
        action=acted.action,
        target=acted.target,
        effects=acted.effects,
        duplicate=decision.duplicate,
    )


def _log(acted: OperatorActed, events: tuple[Event, ...]) -> None:
    LOGGER.warning(
        "operator %s: %s on %s (%d effect events) by %s: %s",
        acted.command_id,
        acted.action.value,
        acted.target,
        acted.effects,
        acted.actor,
        acted.reason,
        extra={
            "routeledger": {
                "event": "OperatorActed",
                "command_id": acted.command_id,
                "action": acted.action.value,
                "target": acted.target,
                "actor": acted.actor,
                "effects": [type(e).__name__ for e in events if e is not acted],
            }
        },
    )
