"""The admin API's operator commands: ``POST /admin/<command>`` (docs/server.md, docs/operations.md).

Each body is a JSON object with ``actor`` and ``reason`` (recorded), an
optional ``command_id`` (idempotency key), and the command's own fields:

==================  =====================================================
command             fields
==================  =====================================================
``lift``            ``credential`` (and optionally ``model``), or ``all: true``
``suspend``         ``credential``, optional ``model``, ``duration_s``
``set-limit``       ``account``, ``limit``
``correct-spend``   ``account``, ``delta``
``release-hold``    ``hold``
==================  =====================================================

The answer is the command's result as JSON (``command_id``, ``action``,
``target``, ``effects``, ``duplicate``). A malformed body is a 400 naming the
field; an unknown credential, model or account a 404; a refused command (a
reused command id, a correction below zero) a 409. Nothing is recorded for
any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.operator import OperatorResult
from routeledger.core.time import US_PER_S

__all__ = ["COMMANDS", "AdminBodyError", "parse_command", "result_document"]


class AdminBodyError(ValueError):
    """A field of an admin command's body is missing or has the wrong type."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


Act = Callable[[Engine], OperatorResult]


def _field(body: Mapping[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise AdminBodyError(name, "is required")
        return None
    if type(value) is not kind:
        raise AdminBodyError(name, f"must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _who(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "actor": _field(body, "actor", str),
        "reason": _field(body, "reason", str),
        "command_id": _field(body, "command_id", str, required=False),
    }


def _lift(body: Mapping[str, Any]) -> Act:
    who = _who(body)
    everything = _field(body, "all", bool, required=False) is True
    credential = _field(body, "credential", str, required=not everything)
    if everything and credential is not None:
        raise AdminBodyError("all", "give either credential or all, not both")
    model = _field(body, "model", str, required=False)
    return lambda engine: engine.lift_blocks(credential, model, **who)


def _suspend(body: Mapping[str, Any]) -> Act:
    who = _who(body)
    credential = _field(body, "credential", str)
    model = _field(body, "model", str, required=False)
    seconds = body.get("duration_s")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise AdminBodyError("duration_s", "must be a positive number of seconds")
    duration_us = round(seconds * US_PER_S)
    return lambda engine: engine.impose_block(credential, model, duration_us=duration_us, **who)


def _set_limit(body: Mapping[str, Any]) -> Act:
    who = _who(body)
    account, limit = _field(body, "account", str), _field(body, "limit", int)
    return lambda engine: engine.change_limit(account, limit, **who)


def _correct_spend(body: Mapping[str, Any]) -> Act:
    who = _who(body)
    account, delta = _field(body, "account", str), _field(body, "delta", int)
    return lambda engine: engine.correct_spend(account, delta, **who)


def _release_hold(body: Mapping[str, Any]) -> Act:
    who = _who(body)
    hold = _field(body, "hold", str)
    return lambda engine: engine.release_hold(hold, **who)


#: ``POST /admin/<name>`` -> the parser of its body.
COMMANDS: Final[Mapping[str, Callable[[Mapping[str, Any]], Act]]] = {
    "lift": _lift,
    "suspend": _suspend,
    "set-limit": _set_limit,
    "correct-spend": _correct_spend,
    "release-hold": _release_hold,
}


def parse_command(name: str, body: Mapping[str, Any]) -> Act:
    """The engine call ``POST /admin/<name>`` with ``body`` asks for (AdminBodyError if malformed)."""
    return COMMANDS[name](body)


def result_document(result: OperatorResult) -> dict[str, object]:
    """The JSON answer of a carried-out command."""
    return {
        "command_id": result.command_id,
        "action": result.action.value,
        "target": result.target,
        "effects": result.effects,
        "duplicate": result.duplicate,
    }
