"""Events of operator commands: one ``OperatorActed`` per command on ``operator:<command_id>``.

Tags are the storage contract (see :mod:`routeledger.core.routing.events`).
No context folds these: they are the audit record of who acted and why, and
the key of the command's idempotency (:mod:`.decide`).
"""

from __future__ import annotations

import enum

import attrs

from ..events import Event, Origin, event

__all__ = ["OperatorActed", "OperatorAction"]


class OperatorAction(enum.Enum):
    """What an operator command did."""

    LIFT_BLOCKS = "lift_blocks"
    IMPOSE_BLOCK = "impose_block"
    CHANGE_LIMIT = "change_limit"
    CORRECT_SPEND = "correct_spend"
    RELEASE_HOLD = "release_hold"


@event("routeledger.OperatorActed", 1, Origin.ADMIN)
@attrs.frozen(kw_only=True)
class OperatorActed(Event):
    """An operator command was carried out (its effects are appended with it)."""

    command_id: str
    command_digest: str
    action: OperatorAction
    #: The stream id of what it acted on (``pair:…``, ``cred:…``, ``account:…``,
    #: ``hold:…``) or ``*`` for every scope.
    target: str
    actor: str
    reason: str
    #: How many events the command appended besides this one.
    effects: int
