"""The budget's validation at its edge: every check of a caller's mistake in a command.

Misuse raises (:class:`~routeledger.core.errors.CommandError` naming command,
field and problem); a bad *amount* is a result instead (a refused decision),
because a caller cannot always know an amount is out of range before asking.
The deciders (:mod:`.decide`, :mod:`.admin`) call these before any rule
reads the command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import CommandError, UsageError
from ..events import stream_id_problem
from ..streams import ID_LENGTH_MAX
from ..time import ENGINE_TIME_US_MAX, ENGINE_TIME_US_MIN
from .values import ACCOUNTS_PER_HOLD_MAX, AMOUNT_MAX, HOLD_TTL_US_MAX, Usage, amount_problem

if TYPE_CHECKING:  # pragma: no cover
    from .decide import PlaceHold

__all__ = ["check_id", "check_now", "check_place", "usage_problem"]


def check_id(value: object, field: str, command: object = "") -> str:
    """Return ``value`` if it is a usable id, else raise :class:`CommandError`."""
    if (
        type(value) is str
        and 0 < len(value) <= ID_LENGTH_MAX
        and value.isprintable()
        and " " not in value
    ):
        return value
    problem = stream_id_problem(value) or f"must be 1..{ID_LENGTH_MAX} characters long"
    raise CommandError(command, field, f"{value!r}: {problem}")


def check_now(now_us: int) -> int:
    """Return ``now_us`` if it is an engine time, else raise :class:`UsageError`."""
    if type(now_us) is int and ENGINE_TIME_US_MIN <= now_us <= ENGINE_TIME_US_MAX:
        return now_us
    raise UsageError(f"now_us must be an engine time (int microseconds), got {now_us!r}")


def usage_problem(usage: object) -> str | None:
    """Why ``usage`` is not a valid :class:`Usage` of amounts (L9), or ``None``."""
    if type(usage) is not Usage:
        return f"usage must be a Usage, got {type(usage).__name__}"
    c, t, r = usage.cost_micros, usage.tokens, usage.requests
    if (
        type(c) is int
        and type(t) is int
        and type(r) is int
        and 0 <= c <= AMOUNT_MAX
        and 0 <= t <= AMOUNT_MAX
        and 0 <= r <= AMOUNT_MAX
    ):
        return None
    problem = amount_problem(c)
    if problem is not None:
        return f"cost_micros: {problem}"
    problem = amount_problem(t)
    if problem is not None:
        return f"tokens: {problem}"
    return f"requests: {amount_problem(r)}"


def check_place(command: PlaceHold) -> str:
    """Return the hold id of a well-formed place command, else raise :class:`CommandError`."""
    hold_id = check_id(command.hold_id, "hold_id", command)
    account_ids = command.account_ids
    if (
        type(account_ids) is not tuple
        or not 1 <= len(account_ids) <= ACCOUNTS_PER_HOLD_MAX
        or (len(account_ids) > 1 and len(set(account_ids)) != len(account_ids))
    ):
        raise CommandError(
            command,
            "account_ids",
            f"must be a tuple of 1..{ACCOUNTS_PER_HOLD_MAX} distinct ids, got {account_ids!r}",
        )
    for account_id in account_ids:
        check_id(account_id, "account_ids", command)
    if not (type(command.ttl_us) is int and 0 < command.ttl_us <= HOLD_TTL_US_MAX):
        raise CommandError(
            command, "ttl_us", f"must be an int in 1..{HOLD_TTL_US_MAX}, got {command.ttl_us!r}"
        )
    return hold_id
