"""Operator commands: lift or impose blocks, change limits, correct spend, release holds.

See :mod:`.decide` for the rules and :mod:`.events` for the record.
"""

from __future__ import annotations

from .decide import (
    ACTOR_LENGTH_MAX,
    REASON_LENGTH_MAX,
    ChangeLimit,
    CorrectSpend,
    ImposeBlock,
    LiftBlocks,
    OperatorCommand,
    OperatorDecision,
    Order,
    ReleaseHold,
    decide_operator,
)
from .events import OperatorActed, OperatorAction

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
    "Order",
    "ReleaseHold",
    "decide_operator",
]
