"""RFC 9457 ``application/problem+json`` renderers, and the stream ``error`` event (I4, E1).

Input is plain adapter-level values (:class:`FailedAttempt`,
:class:`ExhaustionReport`, :class:`BudgetRejection`,
:class:`DegradedCredential`, :class:`FailureProblem`); whoever reads the log
builds them. Output is a :class:`Problem`: the HTTP status, the headers
(``Content-Type`` and, when a retry time is known, ``Retry-After``) and the
body. Rules:

* ``type`` is a stable absolute URI per problem kind (:data:`PROBLEM_BASE_URI`
  + slug), ``status`` equals the HTTP status returned, ``instance`` is the
  request id, ``title`` is fixed per type, ``detail`` is a deterministic
  sentence;
* every string that reaches a client passes through the scrubber (E1), and
  every per-attempt detail is capped at :data:`DETAIL_CHARS_MAX` (I4);
* only fallback exhaustion carries the ``failures`` extension; extension
  members never shadow the standard members (:data:`STANDARD_MEMBERS`).

Statuses (documented in ``docs/errors.md``): fallback exhausted 502; a single
terminal failure by class (:data:`FAILURE_STATUS`: 429 rate limited, 503
unavailable/quota, 504 timeouts, 400 caller-caused, 502 otherwise); budget
rejected 402; credential degraded 503.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import attrs
import orjson

from routeledger.adapters.providers.scrub import DEFAULT_SCRUBBER, Scrubber
from routeledger.core.errors import UsageError
from routeledger.core.events import DETAIL_CHARS_MAX
from routeledger.core.routing.failures import FailureClass

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "FAILURE_STATUS",
    "FAILURE_TITLES",
    "PROBLEM_BASE_URI",
    "PROBLEM_CONTENT_TYPE",
    "STANDARD_MEMBERS",
    "BudgetRejection",
    "DegradedCredential",
    "ExhaustionReport",
    "FailedAttempt",
    "FailureProblem",
    "Problem",
    "anthropic_error_body",
    "attempt_summary",
    "exhaustion_summary",
    "openai_error_body",
    "problem_type",
    "render_budget_rejection",
    "render_degraded_credential",
    "render_exhaustion",
    "render_failure",
    "render_invalid_request",
    "render_nothing_available",
    "render_refusal",
    "render_unknown_route",
    "stream_error_chunk",
    "stream_error_payload",
]

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
#: Every ``type`` URI starts here; the slug after it is stable (a storage-like contract).
PROBLEM_BASE_URI: Final = "https://routeledger.dev/problems/"
#: RFC 9457 members an extension may never replace.
STANDARD_MEMBERS: Final = frozenset({"type", "title", "status", "detail", "instance"})
#: Attempts listed in one report. Why 64: a chain holds at most 16 targets plus
#: backups and fallbacks, each tried a few times; more is a runaway loop.
ATTEMPTS_MAX: Final = 64

FALLBACK_EXHAUSTED: Final = "fallback_exhausted"
MODEL_NOT_FOUND: Final = "model_not_found"
NOTHING_AVAILABLE: Final = "nothing_available"
BUDGET_EXCEEDED: Final = "budget_exceeded"
CREDENTIAL_DEGRADED: Final = "credential_degraded"

_F = FailureClass
#: Human words for each class: the title's lower-case form, used in summaries.
FAILURE_TITLES: Final[Mapping[FailureClass, str]] = {
    _F.AUTH_ERROR: "Authentication failed",
    _F.QUOTA_EXHAUSTED: "Quota exhausted",
    _F.RATE_LIMITED: "Rate limited",
    _F.MODEL_NOT_FOUND: "Model not found",
    _F.MODEL_NOT_SUPPORTED: "Model not supported",
    _F.CONTEXT_LENGTH_EXCEEDED: "Context length exceeded",
    _F.CONTENT_FILTERED: "Blocked by content filter",
    _F.INVALID_REQUEST: "Invalid request",
    _F.PROVIDER_UNAVAILABLE: "Provider unavailable",
    _F.CONNECT_ERROR: "Connection failed",
    _F.TIMEOUT_BEFORE_RESPONSE: "Timed out before response",
    _F.FIRST_TOKEN_TIMEOUT: "Timed out before first token",
    _F.STREAM_STALLED: "Stream stalled",
    _F.STREAM_INTERRUPTED: "Stream interrupted",
    _F.MALFORMED_RESPONSE: "Malformed response",
    _F.RESPONSE_REJECTED: "Response rejected",
    _F.CALLER_CANCELLED: "Cancelled by caller",
    _F.GATEWAY_POOL_EXHAUSTED: "Gateway connection pool exhausted",
    _F.UNKNOWN: "Unknown failure",
}
#: The HTTP status of a request that ended on one failure of this class.
#: Upstream faults are the gateway's (5xx); caller-caused ones are 400; a rate
#: limit is passed on as 429 so clients back off; 499 is nginx's "client closed".
FAILURE_STATUS: Final[Mapping[FailureClass, int]] = {
    _F.AUTH_ERROR: 502,
    _F.QUOTA_EXHAUSTED: 503,
    _F.RATE_LIMITED: 429,
    _F.MODEL_NOT_FOUND: 502,
    _F.MODEL_NOT_SUPPORTED: 502,
    _F.CONTEXT_LENGTH_EXCEEDED: 400,
    _F.CONTENT_FILTERED: 400,
    _F.INVALID_REQUEST: 400,
    _F.PROVIDER_UNAVAILABLE: 503,
    _F.CONNECT_ERROR: 502,
    _F.TIMEOUT_BEFORE_RESPONSE: 504,
    _F.FIRST_TOKEN_TIMEOUT: 504,
    _F.STREAM_STALLED: 504,
    _F.STREAM_INTERRUPTED: 502,
    _F.MALFORMED_RESPONSE: 502,
    _F.RESPONSE_REJECTED: 502,
    _F.CALLER_CANCELLED: 499,
    _F.GATEWAY_POOL_EXHAUSTED: 503,
    _F.UNKNOWN: 502,
}


def problem_type(slug: str) -> str:
    """The ``type`` URI for a failure class value or a problem kind (underscores become hyphens)."""
    return PROBLEM_BASE_URI + slug.replace("_", "-")


# --------------------------------------------------------------------------- inputs


@attrs.frozen(kw_only=True)
class FailedAttempt:
    """One failed attempt of a request, as the log recorded it."""

    credential_id: str
    upstream_model: str
    failure: FailureClass
    #: HTTP status the upstream answered, ``None`` without a response.
    status: int | None = None
    #: The adapter's detail (scrubbed again and capped when rendered).
    detail: str = ""
    #: Whether the provider may have charged for it.
    billed: bool = False


@attrs.frozen(kw_only=True)
class ExhaustionReport:
    """Every member of the chain failed or was unavailable."""

    request_id: str
    attempts: tuple[FailedAttempt, ...] = ()
    #: From now until anything could serve again (→ ``Retry-After``), if known.
    retry_after_us: int | None = None


@attrs.frozen(kw_only=True)
class FailureProblem:
    """A request that ended on one failure without falling back (e.g. a content filter)."""

    request_id: str
    attempt: FailedAttempt
    retry_after_us: int | None = None


@attrs.frozen(kw_only=True)
class BudgetRejection:
    """A hold was refused: ``scope``'s ``limit`` leaves only ``remaining`` (integer micro-units)."""

    request_id: str
    scope: str
    limit: int
    remaining: int
    #: The unit of ``limit`` and ``remaining`` (e.g. ``usd_micros``, ``tokens``).
    unit: str = "usd_micros"
    #: Until the budget period resets, if known.
    retry_after_us: int | None = None


@attrs.frozen(kw_only=True)
class DegradedCredential:
    """Routing degraded: a credential cannot serve (e.g. models unresolved, I0)."""

    request_id: str
    credential_id: str
    reason: str
    detail: str = ""
    retry_after_us: int | None = None


# --------------------------------------------------------------------------- output


@attrs.frozen(kw_only=True)
class Problem:
    """A rendered problem: status, headers and body (a JSON object)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: Mapping[str, Any]

    def to_json(self) -> bytes:
        """The body as UTF-8 JSON, keys in insertion order."""
        return orjson.dumps(dict(self.body))


def _instance(request_id: str) -> str:
    # A relative URI reference: characters outside RFC 3986's set are percent-encoded.
    return quote(request_id, safe="-._~:@!$&'()*+,;=/")


def _retry_after(retry_after_us: int | None) -> tuple[tuple[str, str], ...]:
    if retry_after_us is None:
        return ()
    return (("Retry-After", str(max(0, math.ceil(retry_after_us / 1_000_000)))),)


def _problem(
    *,
    kind: str,
    title: str,
    status: int,
    detail: str,
    request_id: str,
    retry_after_us: int | None,
    scrubber: Scrubber,
    extensions: Mapping[str, Any] | None = None,
) -> Problem:
    body: dict[str, Any] = {
        "type": problem_type(kind),
        "title": title,
        "status": status,
        "detail": scrubber(detail),
        "instance": _instance(scrubber(request_id)),
        "code": kind.upper(),
    }
    for name, value in (extensions or {}).items():
        if name in STANDARD_MEMBERS:
            raise UsageError(f"problem extension {name!r} would replace a standard member")
        body[name] = value
    if retry_after_us is not None:
        body["retry_after_s"] = max(0, math.ceil(retry_after_us / 1_000_000))
    headers = (("Content-Type", PROBLEM_CONTENT_TYPE), *_retry_after(retry_after_us))
    return Problem(status=status, headers=headers, body=body)


def _cap(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_CHARS_MAX else text[: DETAIL_CHARS_MAX - 1] + "…"


def attempt_summary(attempt: FailedAttempt, scrubber: Scrubber = DEFAULT_SCRUBBER) -> str:
    """One deterministic line: ``<model> on <credential>: <what> (HTTP <status>)[, billed]``."""
    what = FAILURE_TITLES[attempt.failure].lower()
    where = f"HTTP {attempt.status}" if attempt.status is not None else "no HTTP status"
    billed = ", billed" if attempt.billed else ""
    return scrubber(
        f"{attempt.upstream_model} on {attempt.credential_id}: {what} ({where}){billed}"
    )


def exhaustion_summary(report: ExhaustionReport, scrubber: Scrubber = DEFAULT_SCRUBBER) -> str:
    """The overall line: how many attempts failed and each one's summary, in order."""
    attempts = report.attempts[:ATTEMPTS_MAX]
    if not attempts:
        text = "No attempt could be made: every candidate was unavailable."
    else:
        noun = "attempt" if len(attempts) == 1 else "attempts"
        lines = "; ".join(attempt_summary(attempt, scrubber) for attempt in attempts)
        text = f"All {len(attempts)} {noun} failed: {lines}."
        if len(report.attempts) > ATTEMPTS_MAX:
            text += f" ({len(report.attempts) - ATTEMPTS_MAX} more not listed.)"
    if report.retry_after_us is not None:
        text += f" Retry after {max(0, math.ceil(report.retry_after_us / 1_000_000))} s."
    return text


def _failure_entry(attempt: FailedAttempt, scrubber: Scrubber) -> dict[str, Any]:
    return {
        "credential_id": scrubber(attempt.credential_id),
        "upstream_model": scrubber(attempt.upstream_model),
        "failure": attempt.failure.value,
        "status": attempt.status,
        "detail": _cap(scrubber(attempt.detail)),
        "billed": attempt.billed,
        "summary": attempt_summary(attempt, scrubber),
    }


def render_exhaustion(
    report: ExhaustionReport, *, scrubber: Scrubber = DEFAULT_SCRUBBER
) -> Problem:
    """Fallback exhausted: 502, the ordered ``failures`` extension, ``Retry-After`` when known (I4)."""
    return _problem(
        kind=FALLBACK_EXHAUSTED,
        title="All fallbacks failed",
        status=502,
        detail=exhaustion_summary(report, scrubber),
        request_id=report.request_id,
        retry_after_us=report.retry_after_us,
        scrubber=scrubber,
        extensions={
            "failures": [_failure_entry(a, scrubber) for a in report.attempts[:ATTEMPTS_MAX]]
        },
    )


def render_failure(problem: FailureProblem, *, scrubber: Scrubber = DEFAULT_SCRUBBER) -> Problem:
    """One terminal failure: its class's type and status (:data:`FAILURE_STATUS`); no ``failures``."""
    attempt = problem.attempt
    detail = attempt_summary(attempt, scrubber)
    if attempt.detail:
        detail += ": " + _cap(scrubber(attempt.detail))
    return _problem(
        kind=attempt.failure.value,
        title=FAILURE_TITLES[attempt.failure],
        status=FAILURE_STATUS[attempt.failure],
        detail=detail,
        request_id=problem.request_id,
        retry_after_us=problem.retry_after_us,
        scrubber=scrubber,
        extensions={
            "credential_id": scrubber(attempt.credential_id),
            "upstream_model": scrubber(attempt.upstream_model),
            "upstream_status": attempt.status,
        },
    )


def render_budget_rejection(
    rejection: BudgetRejection, *, scrubber: Scrubber = DEFAULT_SCRUBBER
) -> Problem:
    """Budget exceeded: 402 with the scope, its limit and what remains."""
    return _problem(
        kind=BUDGET_EXCEEDED,
        title="Budget exceeded",
        status=402,
        detail=(
            f"Budget {rejection.scope} allows {rejection.limit} {rejection.unit}; "
            f"{rejection.remaining} remain, not enough for this request."
        ),
        request_id=rejection.request_id,
        retry_after_us=rejection.retry_after_us,
        scrubber=scrubber,
        extensions={
            "scope": scrubber(rejection.scope),
            "limit": rejection.limit,
            "remaining": rejection.remaining,
            "unit": rejection.unit,
        },
    )


def render_degraded_credential(
    degraded: DegradedCredential, *, scrubber: Scrubber = DEFAULT_SCRUBBER
) -> Problem:
    """A credential cannot serve: 503 with its id and the reason."""
    detail = f"Credential {degraded.credential_id} cannot serve: {degraded.reason}"
    if degraded.detail:
        detail += f" ({_cap(scrubber(degraded.detail))})"
    return _problem(
        kind=CREDENTIAL_DEGRADED,
        title="Credential degraded",
        status=503,
        detail=detail + ".",
        request_id=degraded.request_id,
        retry_after_us=degraded.retry_after_us,
        scrubber=scrubber,
        extensions={
            "credential_id": scrubber(degraded.credential_id),
            "reason": scrubber(degraded.reason),
        },
    )


def render_unknown_route(
    request_id: str, route: str, *, scrubber: Scrubber = DEFAULT_SCRUBBER
) -> Problem:
    """The client named a model (route) that does not exist: 404, as OpenAI answers it."""
    return _problem(
        kind=MODEL_NOT_FOUND,
        title="Model not found",
        status=404,
        detail=f"The model {route!r} does not exist: no route of that name is configured.",
        request_id=request_id,
        retry_after_us=None,
        scrubber=scrubber,
        extensions={"route": scrubber(route)},
    )


def render_nothing_available(
    request_id: str,
    retry_after_us: int | None,
    *,
    detail: str = "No attempt could be made: every candidate is cooling down or suspended.",
    scrubber: Scrubber = DEFAULT_SCRUBBER,
) -> Problem:
    """Nothing could be attempted: 503, with ``Retry-After`` when a candidate's return is known."""
    if retry_after_us is not None:
        detail += f" Retry after {max(0, math.ceil(retry_after_us / 1_000_000))} s."
    return _problem(
        kind=NOTHING_AVAILABLE,
        title="Nothing available",
        status=503,
        detail=detail,
        request_id=request_id,
        retry_after_us=retry_after_us,
        scrubber=scrubber,
    )


def render_invalid_request(param: str | None, problem: str) -> Problem:
    """The client's body cannot be sent: 400, ``param`` naming the field (nothing was recorded)."""
    return _problem(
        kind=_F.INVALID_REQUEST.value,
        title=FAILURE_TITLES[_F.INVALID_REQUEST],
        status=400,
        detail=f"{param}: {problem}" if param else problem,
        request_id="",
        retry_after_us=None,
        scrubber=DEFAULT_SCRUBBER,
        extensions={"param": param},
    )


def render_refusal(
    kind: str, status: int, title: str, detail: str, *, request_id: str = ""
) -> Problem:
    """A request the gateway itself refuses before the engine sees it (nothing recorded).

    ``kind`` is the problem's slug and ``code`` (``invalid_api_key``,
    ``request_too_large``, ``store_unavailable``...), ``status`` its HTTP status.
    """
    return _problem(
        kind=kind,
        title=title,
        status=status,
        detail=detail,
        request_id=request_id,
        retry_after_us=None,
        scrubber=DEFAULT_SCRUBBER,
    )


#: The OpenAI ``error.type`` for an HTTP status (what the openai SDK and
#: LiteLLM clients branch on); anything not listed is a server error.
OPENAI_ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error_body(problem: Problem) -> dict[str, Any]:
    """The problem in OpenAI's ``{"error": {...}}`` shape, RFC 9457 members as extensions.

    ``message`` is the problem's detail, ``type`` the OpenAI error type of its
    status, ``code`` and ``error_type`` its kind (``model_not_found``,
    ``content_filtered``, ``fallback_exhausted``...); the RFC 9457 members sit
    beside them (``problem_type`` holds the URI, since ``type`` means OpenAI's;
    ``request_id`` repeats ``instance``). ``failures`` appears only for a
    fallback exhaustion, ``retry_after_s`` only when a retry time is known.
    """
    body = problem.body
    kind = str(body["code"]).lower()
    error: dict[str, Any] = {
        "message": body["detail"],
        "type": OPENAI_ERROR_TYPES.get(problem.status, "server_error"),
        "param": body.get("param"),
        "code": kind,
        "error_type": kind,
        "problem_type": body["type"],
        "title": body["title"],
        "status": problem.status,
        "instance": body["instance"],
        "request_id": body["instance"],
    }
    for name, value in body.items():
        if name not in STANDARD_MEMBERS and name not in error and name != "code":
            error[name] = value
    return {"error": error}


#: Anthropic's error ``type`` for an HTTP status (what the anthropic SDK reads).
ANTHROPIC_ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error_body(problem: Problem) -> dict[str, Any]:
    """The problem in Anthropic's ``{"type": "error", "error": {...}}`` shape.

    ``error.type`` is Anthropic's type for the status, ``error.message`` the
    detail; ``code`` (the kind) and the RFC 9457 members sit beside them, as
    in :func:`openai_error_body`.
    """
    error = dict(openai_error_body(problem)["error"])
    error["type"] = ANTHROPIC_ERROR_TYPES.get(problem.status, "api_error")
    return {"type": "error", "error": error}


# --------------------------------------------------------------------------- streams


def stream_error_payload(problem: Problem) -> dict[str, Any]:
    """The object of the stream's error event: :func:`openai_error_body` (one shape for both)."""
    return openai_error_body(problem)


def stream_error_chunk(problem: Problem) -> bytes:
    """The SSE bytes that end a stream with ``problem``: one ``data:`` line and a blank line."""
    return b"data: " + orjson.dumps(stream_error_payload(problem)) + b"\n\n"
