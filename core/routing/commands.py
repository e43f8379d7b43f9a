"""Routing's commands, and their validation at the context's edge.

Every routing decider takes one of these commands; everything a caller can
get wrong in one (a malformed id, a count out of range, an outcome that
cannot be recorded) is checked here and raised as
:class:`~routeledger.core.errors.CommandError` naming the command, the field
and the problem, before any rule reads it.
"""

from __future__ import annotations

from typing import Final, NoReturn

import attrs

from ..errors import CommandError
from ..events import DETAIL_CHARS_MAX, STREAM_ID_LENGTH_MAX, stream_id_problem
from ..streams import request_stream
from .events import Announced
from .failures import Evidence, FailureClass, Phase
from .policy import BACKUPS_MAX

__all__ = [
    "INT64_MAX",
    "Failed",
    "RecordOutcome",
    "RouteNext",
    "StartRequest",
    "Succeeded",
    "announced_problem",
    "check_start",
    "failed_problem",
    "measured_problem",
    "refuse_attempt_id",
    "succeeded_problem",
]

#: Integers in events are signed 64-bit.
INT64_MAX: Final = (1 << 63) - 1


@attrs.frozen(kw_only=True)
class StartRequest:
    """Start routing a request (ids come from the caller, X3)."""

    request_id: str
    route: str
    caller_scope: str
    #: Per-request backup aliases, tried before the route's fallback (I3).
    backups: tuple[str, ...] = ()
    #: The owner of the (shared) model configuration; members resolve in this scope (I3).
    model_owner: str | None = None
    #: Randomness for weighted pools (D1: never drawn by the core).
    seed: int = 0
    stream: bool = False
    input_tokens: int = 0
    #: Absolute deadline in engine time; the policy's relative deadline also applies.
    deadline_us: int | None = None


@attrs.frozen(kw_only=True)
class RouteNext:
    """Decide what a request does next; ``attempt_id`` names the attempt it may route."""

    request_id: str
    attempt_id: str


@attrs.frozen(kw_only=True)
class Succeeded:
    """A completed attempt (a truncated answer is a ``Failed`` mid-stream, never this)."""

    evidence: Evidence = Evidence.UPSTREAM
    input_tokens: int = 0
    output_tokens: int = 0
    #: Measured time to the first token and to the end, µs (``None``: not measured).
    ttft_us: int | None = None
    duration_us: int | None = None
    #: The provider's announced limits on the response (``None``: none announced).
    announced: Announced | None = None


@attrs.frozen(kw_only=True)
class Failed:
    """A failed attempt, classified by an adapter."""

    failure: FailureClass
    phase: Phase = Phase.BEFORE_RESPONSE
    #: Output delivered to the caller so far (all attempts of the request).
    delivered_chars: int = 0
    #: The provider's hint as a duration; clamped by the policy.
    hint_us: int | None = None
    #: HTTP status, if the provider answered (recorded for the failure report, I4).
    status: int | None = None
    #: Short description, scrubbed by the adapter before it reaches the core (E1).
    detail: str = ""
    #: Whether the provider billed this failed attempt.
    billed: bool = False
    #: Measured time to the first token (if one came) and to the failure, µs.
    ttft_us: int | None = None
    duration_us: int | None = None
    #: The provider's announced limits on the response (``None``: none announced).
    announced: Announced | None = None


@attrs.frozen(kw_only=True)
class RecordOutcome:
    """Record what happened to an attempt."""

    request_id: str
    attempt_id: str
    outcome: Succeeded | Failed


def _check_text(command: object, name: str, value: object) -> None:
    """Raise :class:`CommandError` unless ``value`` is a non-empty printable id."""
    if type(value) is not str or stream_id_problem(value) is not None:
        raise CommandError(command, name, f"must be a non-empty printable string, got {value!r}")


def _check_count(command: object, name: str, value: object, high: int = INT64_MAX) -> None:
    """Raise :class:`CommandError` unless ``value`` is an int in ``0..high``."""
    if type(value) is not int or not 0 <= value <= high:
        raise CommandError(command, name, f"must be an int in 0..{high}, got {value!r}")


def succeeded_problem(outcome: Succeeded) -> str | None:
    """Why ``outcome`` cannot be recorded (malformed evidence, counts or timings), or ``None``."""
    if not isinstance(outcome.evidence, Evidence):
        return f"evidence must be an Evidence, got {outcome.evidence!r}"
    for name, value in (
        ("input_tokens", outcome.input_tokens),
        ("output_tokens", outcome.output_tokens),
    ):
        if type(value) is not int or not 0 <= value <= INT64_MAX:
            return f"{name} must be an int in 0..{INT64_MAX}, got {value!r}"
    return measured_problem(outcome)


def _optional_count_problem(name: str, value: object) -> str | None:
    if value is None or (type(value) is int and 0 <= value <= INT64_MAX):
        return None
    return f"{name} must be None or an int in 0..{INT64_MAX}, got {value!r}"


def announced_problem(announced: object) -> str | None:
    """Why ``announced`` cannot be recorded (not an :class:`Announced`, a bad count), or ``None``."""
    if announced is None:
        return None
    if type(announced) is not Announced:
        return f"announced must be None or an Announced, got {announced!r}"
    for field in ("remaining_requests", "remaining_tokens", "requests_reset_us", "tokens_reset_us"):
        problem = _optional_count_problem(f"announced.{field}", getattr(announced, field))
        if problem is not None:
            return problem
    return None


def measured_problem(outcome: Succeeded | Failed) -> str | None:
    """Why the timings or announced limits of ``outcome`` cannot be recorded, or ``None``."""
    for name, value in (("ttft_us", outcome.ttft_us), ("duration_us", outcome.duration_us)):
        problem = _optional_count_problem(name, value)
        if problem is not None:
            return problem
    return announced_problem(outcome.announced)


def check_start(command: StartRequest) -> str:
    """The stream id of a well-formed ``command``; raise :class:`CommandError` naming a bad field."""
    _check_text(command, "request_id", command.request_id)
    _check_text(command, "route", command.route)
    _check_text(command, "caller_scope", command.caller_scope)
    if command.model_owner is not None:
        _check_text(command, "model_owner", command.model_owner)
    if len(command.backups) > BACKUPS_MAX:
        raise CommandError(command, "backups", f"lists more than {BACKUPS_MAX} aliases")
    for index, alias in enumerate(command.backups):
        _check_text(command, f"backups[{index}]", alias)
    if type(command.seed) is not int or not -INT64_MAX - 1 <= command.seed <= INT64_MAX:
        raise CommandError(command, "seed", f"must be a signed 64-bit int, got {command.seed!r}")
    _check_count(command, "input_tokens", command.input_tokens)
    if command.deadline_us is not None:
        _check_count(command, "deadline_us", command.deadline_us)
    stream_id = request_stream(command.request_id)
    problem = stream_id_problem(stream_id)
    if problem is not None:
        raise CommandError(command, "request_id", problem)
    return stream_id


def failed_problem(outcome: Failed) -> str | None:
    """Why a failure ``outcome`` cannot be recorded (a malformed field), or ``None``."""
    hint_us = outcome.hint_us
    delivered = outcome.delivered_chars
    if (
        type(outcome.failure) is FailureClass
        and type(outcome.phase) is Phase
        and type(delivered) is int
        and 0 <= delivered <= INT64_MAX
        and (hint_us is None or (type(hint_us) is int and 0 <= hint_us <= INT64_MAX))
        and (
            outcome.status is None or (type(outcome.status) is int and 100 <= outcome.status <= 599)
        )
        and type(outcome.detail) is str
        and len(outcome.detail) <= DETAIL_CHARS_MAX
        and type(outcome.billed) is bool
    ):
        return measured_problem(outcome)
    return f"malformed failure outcome {outcome!r}"


def refuse_attempt_id(command: RouteNext) -> NoReturn:
    """Raise :class:`CommandError` for a malformed or reused ``command.attempt_id`` (X3)."""
    attempt_id = command.attempt_id
    if type(attempt_id) is not str or not 0 < len(attempt_id) <= STREAM_ID_LENGTH_MAX:
        raise CommandError(command, "attempt_id", f"must be a non-empty str, got {attempt_id!r}")
    raise CommandError(command, "attempt_id", f"{attempt_id!r} was already used by this request")
