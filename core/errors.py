"""The exception families of RouteLedger.

Two families, translated at one boundary (STYLE item 9):

* :class:`UsageError` — the library was misused by its caller: an invalid
  policy, a malformed command, an impossible state transition. The message
  names what was wrong and where (a policy path, a field, a state).
* :class:`DataError` — data an adapter cannot interpret: stored bytes that do
  not decode, a provider payload that cannot be read.

Expected business outcomes (over budget, fallback exhausted, a hold already
resolved) are *never* exceptions: they are events or result values.

:class:`InvariantViolation` stays on in production (unlike ``assert``, which
``python -O`` strips) and means RouteLedger itself is wrong.
"""

from __future__ import annotations

__all__ = [
    "CommandError",
    "DataError",
    "InvariantViolation",
    "Retired",
    "RouteLedgerError",
    "UsageError",
]


class RouteLedgerError(Exception):
    """Base of every exception RouteLedger raises on purpose."""


class UsageError(RouteLedgerError, ValueError):
    """The caller misused the library (invalid policy, command, or transition)."""


class CommandError(UsageError):
    """A malformed command: names the command, the field and the problem.

    The one "malformed command" error of every context (routing, budget,
    credentials). ``command_name`` and ``field`` are empty when the problem is
    not one field's (for example an unknown request).
    """

    def __init__(self, command: object, field: str, problem: str) -> None:
        self.command_name = command if isinstance(command, str) else type(command).__name__
        self.field = field
        self.problem = problem
        where = ".".join(part for part in (self.command_name, field) if part)
        super().__init__(f"{where}: {problem}" if where else problem)


class Retired(CommandError):
    """A command reuses a request id that left the live state (beyond the retention horizon).

    The log still has the request, so the id is refused instead of being
    decided again: ids are unique for ever, answers to a re-delivery only
    within the horizon (``docs/spec.md``, X1).
    """


class DataError(RouteLedgerError):
    """Data from outside (stored bytes, a provider payload) could not be interpreted."""


class InvariantViolation(RouteLedgerError):
    """An invariant of the spec (L*, A*, X*, T*, D*) does not hold: a RouteLedger bug."""
