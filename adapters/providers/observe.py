"""Observations: what an attempt's response, stream or exception says, in the core's terms.

Theory of operation. An executor makes one attempt and hands what came back to
one builder here:

* :func:`observe_response` — a response (httpx, httpx2, requests-like: read by
  behaviour) from an OpenAI-compatible, Anthropic, Gemini or LiteLLM-style
  gateway (status, headers, JSON or text);
* :func:`observe_exception` — an exception from httpx/httpx2, the ``openai``,
  ``anthropic``, ``google-genai`` or ``mistralai`` SDK, litellm or pydantic-ai,
  read by what it carries (status, headers, body), never by its class;
  :func:`observe_exceptions` flattens
  (nested) exception groups such as pydantic-ai's ``FallbackExceptionGroup``
  into one observation per member, in order;
* :class:`StreamObserver` — an SSE stream fed chunk by chunk (sans-IO: it never
  reads a socket or a clock; times arrive as ``now_us``).

Each returns an :class:`Observation`: the core's outcome (``Succeeded`` with
usage, or ``Failed(failure, phase, delivered_chars, hint_us)``) plus the facts
a failure report needs (HTTP status, a scrubbed detail of at most
:data:`DETAIL_CHARS_MAX` characters, the provider's error code). A builder never
raises for what it is given: a response it does not understand is
``FailureClass.UNKNOWN`` with the raw status kept.

Classification, in order (first answer wins):

0. configuration rows (``[[classification.rules]]``: status, body regex,
   header), put in front by :meth:`Classifier.extended`;
1. the message table (:data:`DEFAULT_RULES`, one row per ``phrases -> class``,
   scoped by provider and optionally by status) matched against the provider's
   error code, type and message — so a 400 "model not supported" is
   ``MODEL_NOT_SUPPORTED`` (I1), a 400 "Invalid model name" from a validating
   gateway is ``MODEL_NOT_FOUND`` (I0: never auth), a 400 "credit balance is too
   low" is ``QUOTA_EXHAUSTED``;
2. the status: 401/403 auth, 402 quota, 404 model not found, 408 timeout,
   413/400/422 invalid request, 429 rate limited, 5xx/529 provider unavailable;
   anything else is ``UNKNOWN`` (I4's matrix, mapped onto A1's taxonomy).

Provider hints (a duration in µs; clamping is the core's job, A3), first found:
``retry-after-ms``; ``Retry-After`` (seconds or an HTTP date, relative to the
``now_us`` given); Gemini's body ``error.details[].retryDelay``; and for a 429
only, ``x-ratelimit-reset-requests``/``-tokens`` (Go durations like ``6m0s``)
and Anthropic's ``anthropic-ratelimit-*-reset`` (RFC 3339), the latest of them.

Announced limits (:func:`parse_announced`, on every response, success or not):
what the provider says is left of its rate-limit windows for this pair and when
each resets, as an :class:`~routeledger.core.routing.events.Announced` —
OpenAI's ``x-ratelimit-remaining-requests``/``-tokens`` with
``x-ratelimit-reset-requests``/``-tokens`` (Go durations), Anthropic's
``anthropic-ratelimit-requests-remaining``/``-tokens-remaining`` with
``anthropic-ratelimit-requests-reset``/``-tokens-reset`` (RFC 3339, relative to
``now_us``). A header that does not parse is left out, never guessed.
"""

from __future__ import annotations

import codecs
import enum
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any, Final

import attrs
import orjson

from routeledger.adapters.providers.scrub import DEFAULT_SCRUBBER, Scrubber
from routeledger.core.errors import UsageError
from routeledger.core.events import DETAIL_CHARS_MAX
from routeledger.core.routing.commands import INT64_MAX, Failed, Succeeded
from routeledger.core.routing.events import Announced
from routeledger.core.routing.failures import (
    Evidence,
    FailureClass,
    Phase,
)

__all__ = [
    "BODY_CHARS_MAX",
    "DEFAULT_CLASSIFIER",
    "DEFAULT_RULES",
    "GROUP_DEPTH_MAX",
    "HINT_US_MAX",
    "SSE_LINE_CHARS_MAX",
    "Classifier",
    "MessageRule",
    "Observation",
    "Provider",
    "StreamObserver",
    "StreamState",
    "cap_detail",
    "observe_announced",
    "observe_exception",
    "observe_exceptions",
    "observe_response",
    "parse_announced",
    "parse_duration_us",
    "parse_hint_us",
]

#: Longest provider hint accepted, in µs (a year). Why: a bogus date must not
#: overflow int64 arithmetic; the policy clamps far below this anyway (A3).
HINT_US_MAX: Final = 365 * 24 * 3600 * 1_000_000
#: Longest SSE line buffered, in characters. Why 1 MiB: one chunk of a large
#: tool call fits; an endless line without newline is a malformed stream.
SSE_LINE_CHARS_MAX: Final = 1 << 20
#: Deepest exception-group nesting flattened. Why: groups are trees built by
#: fallback chains a few levels deep; a cycle or a pathological tree stops here.
GROUP_DEPTH_MAX: Final = 32
#: Longest body text read for a message, in characters.
BODY_CHARS_MAX: Final = 16_384

_US_PER_S: Final = 1_000_000
_F = FailureClass


class Provider(enum.Enum):
    """Which wire dialect a response speaks (scopes message rules)."""

    #: OpenAI and OpenAI-compatible servers (vLLM, OpenRouter, Azure, ...).
    OPENAI = "openai"
    #: Anthropic's Messages API.
    ANTHROPIC = "anthropic"
    #: Google Gemini (Generative Language / Vertex).
    GEMINI = "gemini"
    #: A LiteLLM-style validating gateway.
    LITELLM = "litellm"


@attrs.frozen(kw_only=True)
class Observation:
    """One attempt as an adapter saw it: the core's outcome plus report facts."""

    outcome: Succeeded | Failed
    #: HTTP status of the response (or of the in-band error), ``None`` without one.
    status: int | None = None
    #: Scrubbed, at most :data:`DETAIL_CHARS_MAX` characters.
    detail: str = ""
    #: The provider's machine-readable error code or type, scrubbed.
    provider_code: str | None = None
    provider: Provider | None = None
    #: The upstream model named by the exception or response, when known.
    model: str | None = None
    #: Where ``outcome.hint_us`` came from (header or body field), for the report.
    hint_source: str | None = None
    #: Whether the provider may have charged for the attempt (usage or output seen).
    billed: bool = False
    #: Whether a success came with a usage report (without one, the request is
    #: billed its estimate, never zero: L11).
    usage_reported: bool = True
    #: A failed stream's usage report, if it sent one before failing:
    #: ``(input_tokens, output_tokens)``; billed instead of an estimate (L11).
    failed_usage: tuple[int, int] | None = None
    #: The rate limits the response announced (:func:`parse_announced`), if any.
    announced: Announced | None = None

    @property
    def failure(self) -> FailureClass | None:
        """The failure class, or ``None`` for a success."""
        return self.outcome.failure if isinstance(self.outcome, Failed) else None


# --------------------------------------------------------------------------- the table


@attrs.frozen(kw_only=True)
class MessageRule:
    """One row: any of ``phrases`` (and ``pattern``, if given) in code/type/message means ``failure``.

    Phrases are lower-case substrings (``str`` search is ~50x cheaper than a
    regex scan); ``pattern`` refines a row whose phrases are too general and
    is only tried once a phrase matched. A row without phrases needs none.

    Configuration rows (``[[classification.rules]]``) also test the whole raw
    body (``body_pattern``) and a response header (``header``, its value matching
    ``header_pattern`` when given); every condition a row has must hold.
    """

    phrases: tuple[str, ...]
    failure: FailureClass
    #: Optional case-insensitive regex that must also match.
    pattern: str | None = None
    #: Providers the row applies to; empty = every provider.
    providers: frozenset[Provider] = frozenset()
    #: Statuses the row applies to; empty = any (including in-band errors without one).
    statuses: frozenset[int] = frozenset()
    #: Case-insensitive regex searched in the raw error body (its text, at most
    #: :data:`BODY_CHARS_MAX` characters; the message where there is no body).
    body_pattern: str | None = None
    #: Lower-case name of a response header that must be present.
    header: str | None = None
    #: Case-insensitive regex the value of ``header`` must match.
    header_pattern: str | None = None


class _Conditions:
    """A row's body and header conditions, compiled (most rows have none: ``None``)."""

    __slots__ = ("body", "header", "value")

    def __init__(self, rule: MessageRule) -> None:
        flags = re.IGNORECASE | re.DOTALL
        self.body = re.compile(rule.body_pattern, flags) if rule.body_pattern else None
        self.header = rule.header.lower() if rule.header else None
        self.value = re.compile(rule.header_pattern, flags) if rule.header_pattern else None

    def hold(self, body: str, headers: Mapping[str, str]) -> bool:
        if self.body is not None and not self.body.search(body):
            return False
        if self.header is None:
            return True
        value = headers.get(self.header)
        return value is not None and (self.value is None or self.value.search(value) is not None)


def _rule(
    phrases: str,
    failure: FailureClass,
    *providers: Provider,
    pattern: str | None = None,
    statuses: Iterable[int] = (),
) -> MessageRule:
    return MessageRule(
        phrases=tuple(phrase.strip() for phrase in phrases.split("|")),
        failure=failure,
        pattern=pattern,
        providers=frozenset(providers),
        statuses=frozenset(statuses),
    )


_P = Provider
#: The message table, first match wins. Order: the specific before the general
#: (Gemini's per-minute "quota" is a rate limit; "is not found ... or is not
#: supported" is not found; model rows before auth rows, so a gateway's
#: "not allowed to access model" 401 is about the pair, never the key: I0).
DEFAULT_RULES: Final[tuple[MessageRule, ...]] = (
    # --- context length (caller-caused; do not retry the same model)
    _rule(
        "context_length_exceeded|context length exceeded|maximum context length|context window"
        "|prompt is too long|too many input tokens|reduce the length of the messages",
        _F.CONTEXT_LENGTH_EXCEEDED,
    ),
    _rule(
        "exceeds the maximum",
        _F.CONTEXT_LENGTH_EXCEEDED,
        _P.GEMINI,
        pattern=r"input token count.{0,40}exceeds the maximum",
    ),
    # --- content filter (caller-caused; do not retry at all)
    _rule(
        "content_filter|content filter|content_policy|content policy|content management policy"
        "|responsible ai",
        _F.CONTENT_FILTERED,
    ),
    _rule("flagged as potentially violating|usage polic", _F.CONTENT_FILTERED, _P.OPENAI),
    _rule("safety|prohibited_content|recitation|blocked", _F.CONTENT_FILTERED, _P.GEMINI),
    # --- model not found / not supported (the pair; I0, I1). Sources of each
    # phrasing: the table in docs/errors.md ("Where the phrasings come from").
    _rule("is not found for api version", _F.MODEL_NOT_FOUND, _P.GEMINI),
    _rule(
        "invalid model name|model_not_found|unknown model|no such model|invalid model:"
        "|model not exist|provided model identifier is invalid|deploymentnotfound"
        "|api deployment for this resource does not exist|model_decommissioned"
        "|has been decommissioned",
        _F.MODEL_NOT_FOUND,
    ),
    _rule(
        "does not exist|not found",
        _F.MODEL_NOT_FOUND,
        pattern=r"model\b.{0,80}\b(?:does not exist|not found)",
    ),
    _rule(
        "model_not_supported|model not supported|model is not supported|unsupported model"
        "|does not support this model|does not support the model|does not support model"
        "|not a chat model|no endpoints found|does not work with the specified model"
        "|not available for your account|not available in your region",
        _F.MODEL_NOT_SUPPORTED,
    ),
    _rule(
        "not supported|is not available|is not enabled|unsupported|does not support"
        "|doesn't support|isn't supported|isn't available",
        _F.MODEL_NOT_SUPPORTED,
        pattern=r"model\b.{0,80}\b(?:is not (?:supported|available|enabled)|is unsupported"
        r"|isn't (?:supported|available)|(?:are )?not supported|does not support"
        r"|doesn't support)",
    ),
    _rule(
        "not allowed to access model|team not allowed|key not allowed to access",
        _F.MODEL_NOT_SUPPORTED,
        _P.LITELLM,
    ),
    # --- quota and billing (before rate limits: OpenAI's insufficient_quota is a 429)
    _rule(
        "quota exceeded for metric",
        _F.RATE_LIMITED,
        _P.GEMINI,
        pattern=r"quota exceeded for metric.{0,200}per.?minute",
    ),
    _rule(
        "insufficient_quota|exceeded your current quota|credit balance|plan and billing"
        "|payment required|budget has been exceeded|exceededbudget|max budget|out of credits"
        "|insufficient credits",
        _F.QUOTA_EXHAUSTED,
    ),
    _rule("quota", _F.QUOTA_EXHAUSTED, _P.GEMINI),
    # --- auth (the credential)
    _rule(
        "invalid_api_key|invalid api key|incorrect api key|api key not valid|invalid x-api-key"
        "|authentication_error|api key expired|unauthenticated|permission_denied"
        "|permission_error|invalid authentication",
        _F.AUTH_ERROR,
    ),
    _rule("invalid proxy server token|authentication error", _F.AUTH_ERROR, _P.LITELLM),
    # --- rate limits and overload
    _rule("rate_limit|rate limit|too many requests|resource_exhausted", _F.RATE_LIMITED),
    _rule("overloaded|unavailable|try again later", _F.PROVIDER_UNAVAILABLE),
)


def _default_for_status(status: int) -> FailureClass:
    if status in (401, 403):
        return _F.AUTH_ERROR
    if status == 402:
        return _F.QUOTA_EXHAUSTED
    if status == 404:
        return _F.MODEL_NOT_FOUND
    if status == 408:
        return _F.TIMEOUT_BEFORE_RESPONSE
    if status in (400, 413, 422):
        return _F.INVALID_REQUEST
    if status == 429:
        return _F.RATE_LIMITED
    if 500 <= status <= 599:
        return _F.PROVIDER_UNAVAILABLE
    return _F.UNKNOWN


class Classifier:
    """The message table compiled once; :meth:`extended` returns a new one with extra rows first."""

    __slots__ = ("_compiled", "reads_body", "reads_headers", "rules")

    def __init__(self, rules: Iterable[MessageRule] = DEFAULT_RULES) -> None:
        self.rules: Final = tuple(rules)
        compiled = tuple(
            (
                tuple(phrase.lower() for phrase in rule.phrases),
                re.compile(rule.pattern, re.IGNORECASE | re.DOTALL) if rule.pattern else None,
                rule.statuses,
                rule,
                _Conditions(rule)
                if rule.body_pattern or rule.header or rule.header_pattern
                else None,
            )
            for rule in self.rules
        )
        # The rows each dialect sees, filtered once (provider scope is static).
        self._compiled = {
            provider: tuple(
                row for row in compiled if not row[3].providers or provider in row[3].providers
            )
            for provider in (*Provider, None)
        }
        #: Whether any row reads the raw body (callers skip decoding it otherwise).
        self.reads_body: Final = any(rule.body_pattern for rule in self.rules)
        #: Whether any row reads a header (a stream's observer is then given them).
        self.reads_headers: Final = any(rule.header for rule in self.rules)

    def extended(self, rows: Iterable[MessageRule]) -> Classifier:
        """A classifier whose extra ``rows`` (configuration) are tried before the defaults."""
        return Classifier((*rows, *self.rules))

    def match(
        self,
        text: str,
        *,
        provider: Provider | None,
        status: int | None,
        body: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> FailureClass | None:
        """The class of the first row matching ``text`` (the error's code and message), the raw
        ``body`` (``text`` when empty) and ``headers`` for this provider and status."""
        low = text.lower()
        for phrases, pattern, statuses, rule, conditions in self._compiled[provider]:
            if statuses and status not in statuses:
                continue
            if phrases:
                for phrase in phrases:
                    if phrase in low:
                        break
                else:
                    continue
            if pattern is not None and not pattern.search(low):
                continue
            if conditions is not None and not conditions.hold(body or text, headers or {}):
                continue
            return rule.failure
        return None

    def classify(
        self,
        text: str,
        *,
        provider: Provider | None,
        status: int | None,
        body: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> FailureClass:
        """The class of an error: the table first, then the status (``UNKNOWN`` without either)."""
        found = self.match(text, provider=provider, status=status, body=body, headers=headers)
        if found is not None:
            return found
        return _default_for_status(status) if status is not None else _F.UNKNOWN


#: The default table, compiled once.
DEFAULT_CLASSIFIER: Final = Classifier()


# --------------------------------------------------------------------------- hints

_GO_DURATION: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_US: Final = {
    "ns": Decimal("0.001"),
    "us": Decimal(1),
    "µs": Decimal(1),
    "ms": Decimal(1_000),
    "s": Decimal(_US_PER_S),
    "m": Decimal(60 * _US_PER_S),
    "h": Decimal(3600 * _US_PER_S),
}


def _bounded(value_us: int) -> int:
    return min(max(value_us, 0), HINT_US_MAX)


def parse_duration_us(text: str) -> int | None:
    """``"6m0s"``, ``"1.5s"``, ``"20ms"``, ``"13s"`` or plain seconds (``"2"``) as µs; ``None`` if not one."""
    text = text.strip()
    if not text:
        return None
    try:
        return _bounded(int(Decimal(text) * _US_PER_S))
    except (InvalidOperation, ValueError):
        pass
    total = Decimal(0)
    position = 0
    for match in _GO_DURATION.finditer(text):
        if match.start() != position:
            return None
        total += Decimal(match.group(1)) * _UNIT_US[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        return None
    return _bounded(int(total))


def _datetime_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _US_PER_S + delta.microseconds


def _http_date_us(text: str) -> int | None:
    try:
        return _datetime_us(parsedate_to_datetime(text))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _rfc3339_us(text: str) -> int | None:
    try:
        return _datetime_us(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except (ValueError, OverflowError):
        return None


def _gemini_retry_delay_us(body: object) -> int | None:
    if isinstance(body, list) and body:  # Gemini sometimes wraps the error in a list
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, dict) and isinstance(detail.get("retryDelay"), str):
            return parse_duration_us(detail["retryDelay"])
    return None


def parse_hint_us(
    headers: Mapping[str, str], body: object, *, status: int | None, now_us: int
) -> tuple[int | None, str | None]:
    """The provider's retry hint as a duration in µs from ``now_us``, and where it came from."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return _bounded(int(Decimal(value.strip()) * 1_000)), "retry-after-ms"
        except (InvalidOperation, ValueError):
            pass
    value = headers.get("retry-after")
    if value is not None:
        seconds = parse_duration_us(value)
        if seconds is not None:
            return seconds, "retry-after"
        moment = _http_date_us(value)
        if moment is not None:
            return _bounded(moment - now_us), "retry-after"
    delay = _gemini_retry_delay_us(body)
    if delay is not None:
        return delay, "retryDelay"
    if status != 429:
        return None, None
    best: tuple[int, str] | None = None
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        value = headers.get(name)
        duration = parse_duration_us(value) if value is not None else None
        if duration is not None and (best is None or duration > best[0]):
            best = (duration, name)
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("anthropic-ratelimit-") and lowered.endswith("-reset"):
            moment = _rfc3339_us(value)
            if moment is not None and (best is None or moment - now_us > best[0]):
                best = (_bounded(moment - now_us), lowered)
    return best if best is not None else (None, None)


# --------------------------------------------------------------------------- announced limits

#: Header names per window, per dialect: (remaining, reset, reset is RFC 3339).
_ANNOUNCED_HEADERS: Final = (
    ("requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", False),
    ("tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens", False),
    (
        "requests",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        True,
    ),
    ("tokens", "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset", True),
)


def _remaining(text: str | None) -> int | None:
    """A non-negative count header (``"0"``, ``"59"``), capped to int64; ``None`` if not one."""
    if text is None or not text.strip().isdigit():
        return None
    return min(int(text.strip()), INT64_MAX)


def _reset_us(text: str | None, absolute: bool, now_us: int) -> int | None:
    """A reset header as a duration from ``now_us`` (a Go duration, or an RFC 3339 time)."""
    if text is None:
        return None
    if not absolute:
        return parse_duration_us(text)
    moment = _rfc3339_us(text)
    return None if moment is None else _bounded(moment - now_us)


def parse_announced(headers: Mapping[str, str], *, now_us: int) -> Announced | None:
    """The rate limits ``headers`` (lower-cased names) announce, or ``None`` if none parse."""
    found: dict[str, int] = {}
    for window, remaining_name, reset_name, absolute in _ANNOUNCED_HEADERS:
        left = _remaining(headers.get(remaining_name))
        if left is not None and f"remaining_{window}" not in found:
            found[f"remaining_{window}"] = left
        reset = _reset_us(headers.get(reset_name), absolute, now_us)
        if reset is not None and f"{window}_reset_us" not in found:
            found[f"{window}_reset_us"] = reset
    return Announced(**found) if found else None


def observe_announced(response: object, *, now_us: int) -> Announced | None:
    """The rate limits a response's headers announce (:func:`parse_announced`); any
    response-like object, as :func:`observe_response` reads it."""
    return parse_announced(_headers_of(response), now_us=now_us)


# --------------------------------------------------------------------------- bodies


def cap_detail(text: str, scrubber: Scrubber = DEFAULT_SCRUBBER) -> str:
    """``text`` scrubbed (E1), on one line, at most :data:`DETAIL_CHARS_MAX` characters (I4)."""
    return _cap(scrubber(text))


def _cap(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= DETAIL_CHARS_MAX:
        return text
    return text[: DETAIL_CHARS_MAX - 1] + "…"


def _loads(content: bytes) -> object:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _dumps_text(body: object) -> str:
    """A parsed body as JSON text (for body rules), at most :data:`BODY_CHARS_MAX` characters."""
    try:
        return orjson.dumps(body, default=str).decode()[:BODY_CHARS_MAX]
    except TypeError:
        return str(body)[:BODY_CHARS_MAX]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _error_parts(body: object) -> tuple[str | None, str | None]:
    """(message, code) from any of the dialects' error bodies."""
    if isinstance(body, list) and body:  # Gemini sometimes wraps the error in a list
        body = body[0]
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        code = _text(error.get("code")) or _text(error.get("status")) or _text(error.get("type"))
        return _text(error.get("message")), code
    if isinstance(error, str):
        return error, _text(body.get("type")) or _text(body.get("code"))
    message = _text(body.get("message")) or _text(body.get("detail"))
    if isinstance(body.get("detail"), dict):
        message = _text(body["detail"].get("error")) or _text(body["detail"].get("message"))
    return message, _text(body.get("code")) or _text(body.get("type"))


def _detect_provider(headers: Mapping[str, str], body: object) -> Provider:
    if isinstance(body, dict) and body.get("type") in ("error", "message"):
        return Provider.ANTHROPIC
    if isinstance(body, list) or (
        isinstance(body, dict)
        and (
            "candidates" in body
            or "promptFeedback" in body
            or (
                isinstance(body.get("error"), dict) and isinstance(body["error"].get("status"), str)
            )
        )
    ):
        return Provider.GEMINI
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    if isinstance(message, str) and message.startswith("litellm."):
        return Provider.LITELLM
    names = " ".join(headers)  # lower-cased by the callers
    if " x-litellm" in " " + names:
        return Provider.LITELLM
    if " anthropic-" in " " + names:
        return Provider.ANTHROPIC
    return Provider.OPENAI


def _usage(body: Mapping[str, Any]) -> tuple[int, int] | None:
    usage = body.get("usage")
    if isinstance(usage, dict):
        prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
        completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
        if isinstance(prompt, int) and isinstance(completion, int):
            return prompt, completion
    meta = body.get("usageMetadata")
    if isinstance(meta, dict):
        prompt = meta.get("promptTokenCount", 0)
        completion = meta.get("candidatesTokenCount", 0)
        if isinstance(prompt, int) and isinstance(completion, int):
            return prompt, completion
    return None


#: Finish reasons that mean the provider's filter refused (OpenAI, Anthropic, Gemini).
_REFUSAL_REASONS: Final = frozenset(
    {"content_filter", "refusal", "SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION"}
)


def _refusal(body: Mapping[str, Any]) -> str | None:
    """Why a 2xx answer is really a content-filter refusal, or ``None``."""
    choices = body.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict) and choice.get("finish_reason") == "content_filter":
                return "finish_reason content_filter"
    if body.get("stop_reason") == "refusal":
        return "stop_reason refusal"
    feedback = body.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        return f"blockReason {feedback['blockReason']}"
    candidates = body.get("candidates")
    if isinstance(candidates, list):
        for candidate in candidates:
            if isinstance(candidate, dict) and candidate.get("finishReason") in _REFUSAL_REASONS:
                return f"finishReason {candidate['finishReason']}"
    return None


def _failed(
    failure: FailureClass,
    *,
    status: int | None,
    detail: str,
    scrubber: Scrubber,
    phase: Phase = Phase.BEFORE_RESPONSE,
    code: str | None = None,
    provider: Provider | None = None,
    model: str | None = None,
    hint: tuple[int | None, str | None] = (None, None),
    delivered_chars: int = 0,
    billed: bool = False,
) -> Observation:
    # One scrub for both: a collapsed code holds no newline.
    code, _, detail = scrubber(" ".join((code or "").split()) + "\n" + detail).partition("\n")
    return Observation(
        outcome=Failed(
            failure=failure, phase=phase, delivered_chars=delivered_chars, hint_us=hint[0]
        ),
        status=status,
        detail=_cap(detail),
        provider_code=_cap(code) or None,
        provider=provider,
        model=model,
        hint_source=hint[1],
        billed=billed,
    )


def _observe_error(
    status: int | None,
    headers: Mapping[str, str],
    body: object,
    text: str,
    *,
    provider: Provider | None,
    now_us: int,
    classifier: Classifier,
    scrubber: Scrubber,
    model: str | None = None,
    raw: str = "",
) -> Observation:
    dialect = provider or _detect_provider(headers, body)
    message, code = _error_parts(body)
    if message is None:
        message = text.strip()[:BODY_CHARS_MAX] or (
            f"HTTP {status}" if status is not None else "error"
        )
    if classifier.reads_body and not raw and body is not None:
        raw = _dumps_text(body)  # a body handed over parsed (an SDK's exception)
    failure = classifier.classify(
        f"{code or ''} {message}", provider=dialect, status=status, body=raw, headers=headers
    )
    return _failed(
        failure,
        status=status,
        detail=message,
        scrubber=scrubber,
        code=code,
        provider=dialect,
        model=model,
        hint=parse_hint_us(headers, body, status=status, now_us=now_us),
    )


def _attr(value: object, name: str) -> object:
    """``value.name``; ``None`` when missing or when reading it raises (a body never read)."""
    try:
        return getattr(value, name, None)
    except Exception:  # httpx/httpx2 ResponseNotRead, a closed stream, a broken property
        return None


def _status_of(value: object, *names: str) -> int | None:
    """The first of ``names`` on ``value`` holding an HTTP status (an ``int``, 100-599)."""
    for name in names:
        status = _attr(value, name)
        if type(status) is int and 100 <= status <= 599:
            return status
    return None


def _headers_of(value: object) -> dict[str, str]:
    """``value.headers`` with lower-cased names: httpx/httpx2 ``Headers`` (read raw, the
    cheapest way: one latin-1 decode per name and value, RFC 9110), or any mapping with
    ``items()`` (requests, aiohttp, a plain dict); ``{}`` without one."""
    headers = _attr(value, "headers")
    if headers is None:
        return {}
    raw = _attr(headers, "raw")
    try:
        if isinstance(raw, list):
            return {name.decode("latin-1").lower(): text.decode("latin-1") for name, text in raw}
        items = _attr(headers, "items")
        if callable(items):
            return {str(name).lower(): str(text) for name, text in items()}
    except (AttributeError, TypeError, ValueError):
        pass
    return {}


def _content(response: object) -> bytes:
    """The body read so far, as bytes: ``.content`` (httpx, httpx2, requests) or ``.text``;
    a streamed body nobody read counts as empty (never raises)."""
    content = _attr(response, "content")
    if isinstance(content, bytes):
        return content
    text = _attr(response, "text")
    return text.encode("utf-8", "replace") if isinstance(text, str) else b""


def _observe_2xx(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    body: object,
    *,
    now_us: int,
    provider: Provider | None,
    classifier: Classifier,
    scrubber: Scrubber,
) -> Observation:
    """A 2xx answer: a success with its usage, or an in-band error, a refusal, garbage."""
    dialect = provider or _detect_provider(headers, body)
    if isinstance(body, dict) and "error" in body and body["error"]:
        inband = body["error"]
        code = inband.get("code") if isinstance(inband, dict) else None
        return _observe_error(
            code if isinstance(code, int) and 400 <= code <= 599 else None,
            headers,
            body,
            "",
            provider=dialect,
            now_us=now_us,
            classifier=classifier,
            scrubber=scrubber,
        )
    if not isinstance(body, dict):
        return _failed(
            _F.MALFORMED_RESPONSE,
            status=status,
            detail=f"unparsable {status} body: {content[:200].decode('utf-8', 'replace')}",
            scrubber=scrubber,
            provider=dialect,
        )
    refusal = _refusal(body)
    if refusal is not None:
        return _failed(
            _F.CONTENT_FILTERED,
            status=status,
            detail=refusal,
            scrubber=scrubber,
            provider=dialect,
            billed=True,
        )
    reported = _usage(body)
    tokens = reported or (0, 0)
    return Observation(
        outcome=Succeeded(
            evidence=Evidence.UPSTREAM, input_tokens=tokens[0], output_tokens=tokens[1]
        ),
        status=status,
        provider=dialect,
        model=_text(body.get("model")) or _text(body.get("modelVersion")),
        billed=True,
        usage_reported=reported is not None,
    )


def observe_response(
    response: object,
    *,
    now_us: int,
    provider: Provider | None = None,
    classifier: Classifier = DEFAULT_CLASSIFIER,
    scrubber: Scrubber = DEFAULT_SCRUBBER,
) -> Observation:
    """What a complete (non-streamed) ``response`` says, with the limits it announced.

    Any response-like object will do, read by behaviour: ``httpx``/``httpx2``/
    ``requests``-style (``status_code``, ``headers``, ``content`` or ``text``) or
    ``aiohttp``-style (``status``); one without an HTTP status is a ``UsageError``.
    """
    observation = _observe_response(
        response, now_us=now_us, provider=provider, classifier=classifier, scrubber=scrubber
    )
    announced = observe_announced(response, now_us=now_us)
    return observation if announced is None else attrs.evolve(observation, announced=announced)


def _observe_response(
    response: object,
    *,
    now_us: int,
    provider: Provider | None,
    classifier: Classifier,
    scrubber: Scrubber,
) -> Observation:
    """What a complete (non-streamed) ``response`` says; never raises for its content."""
    status = _status_of(response, "status_code", "status")
    if status is None:
        raise UsageError(f"observe_response needs an HTTP response, got {type(response)!r}")
    headers = _headers_of(response)
    content = _content(response)
    body = _loads(content)
    if 200 <= status <= 299:
        return _observe_2xx(
            status,
            headers,
            content,
            body,
            now_us=now_us,
            provider=provider,
            classifier=classifier,
            scrubber=scrubber,
        )
    raw = (
        content[:BODY_CHARS_MAX].decode("utf-8", "replace")
        if body is None or classifier.reads_body
        else ""
    )
    return _observe_error(
        status,
        headers,
        body,
        raw if body is None else "",
        provider=provider,
        now_us=now_us,
        classifier=classifier,
        scrubber=scrubber,
        raw=raw,
    )


# --------------------------------------------------------------------------- exceptions


def _exception_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cause_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < GROUP_DEPTH_MAX:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


#: Transport failures by class name, read along the MRO (most derived first): the
#: same names in httpx, httpx2 (openai 3.x, anthropic 2.x, google-genai, mistralai)
#: and httpcore, so no import of either decides it (behaviour, not class identity).
_TRANSPORT_NAMES: Final[Mapping[str, FailureClass]] = {
    "PoolTimeout": _F.GATEWAY_POOL_EXHAUSTED,  # our own pool, not the upstream
    "ConnectTimeout": _F.CONNECT_ERROR,
    "ReadTimeout": _F.TIMEOUT_BEFORE_RESPONSE,
    "WriteTimeout": _F.TIMEOUT_BEFORE_RESPONSE,
    "TimeoutException": _F.TIMEOUT_BEFORE_RESPONSE,
    "DecodingError": _F.MALFORMED_RESPONSE,
    # The connection broke before response headers ("reset before headers").
    "RemoteProtocolError": _F.CONNECT_ERROR,
    "ProtocolError": _F.CONNECT_ERROR,
    "NetworkError": _F.CONNECT_ERROR,  # ConnectError, ReadError, WriteError, CloseError
    "TransportError": _F.CONNECT_ERROR,  # UnsupportedProtocol, ProxyError
    "NoResponseError": _F.CONNECT_ERROR,  # mistralai: the transport returned nothing
}


def _transport_class(exc: BaseException) -> FailureClass | None:
    for cls in type(exc).__mro__:
        found = _TRANSPORT_NAMES.get(cls.__name__)
        if found is not None:
            return found
    return None


#: pydantic-ai categories without an HTTP response, most specific first.
_PYDANTIC_AI_CLASSES: Final = (
    ("ModelContextWindowExceededError", _F.CONTEXT_LENGTH_EXCEEDED),
    ("ModelAuthenticationError", _F.AUTH_ERROR),
    ("ModelNotFoundError", _F.MODEL_NOT_FOUND),
    ("ModelRateLimitError", _F.RATE_LIMITED),
    ("ModelQuotaExceededError", _F.QUOTA_EXHAUSTED),
    ("ModelTimeoutError", _F.TIMEOUT_BEFORE_RESPONSE),
    ("ModelRequestTimeout", _F.TIMEOUT_BEFORE_RESPONSE),
    ("ModelConnectionError", _F.CONNECT_ERROR),
    ("ModelUnavailableError", _F.PROVIDER_UNAVAILABLE),
    ("ModelServerError", _F.PROVIDER_UNAVAILABLE),
    ("ModelRequestRejectedError", _F.INVALID_REQUEST),
    ("ContentFilterError", _F.CONTENT_FILTERED),
    ("ResponseRejected", _F.RESPONSE_REJECTED),
    ("UnexpectedModelBehavior", _F.MALFORMED_RESPONSE),
)


def _mro_names(exc: BaseException) -> frozenset[str]:
    return frozenset(cls.__name__ for cls in type(exc).__mro__)


def _carried_body(exc: BaseException, response: object) -> tuple[object, str]:
    """(parsed body, raw text) of the answer ``exc`` carries: the response's body when it was
    read, else the exception's own ``body`` (openai, anthropic, pydantic-ai, mistralai: a
    text) or ``details`` (google-genai: the parsed JSON)."""
    content = _content(response) if response is not None else b""
    if content:
        body = _loads(content)
        return body, content[:BODY_CHARS_MAX].decode("utf-8", "replace")
    body = _attr(exc, "body")
    if body is None:
        body = _attr(exc, "details")
    if isinstance(body, str | bytes):
        raw = body if isinstance(body, str) else body.decode("utf-8", "replace")
        return _loads(raw.encode()), raw[:BODY_CHARS_MAX]
    return body, ""


def _observe_carried(
    exc: BaseException,
    *,
    now_us: int,
    provider: Provider | None,
    classifier: Classifier,
    scrubber: Scrubber,
) -> Observation | None:
    """An exception carrying an HTTP error answer, read by behaviour; ``None`` without one.

    The status is the exception's ``status_code`` (openai, anthropic, mistralai,
    pydantic-ai, litellm), ``code`` (google-genai, urllib) or ``status`` (aiohttp),
    else its response's; the headers its response's, overlaid by its own ``headers``
    (pydantic-ai, mistralai, litellm's proxy headers); the body the response's, else
    its own. Any response-like object will do (httpx, httpx2, requests).
    """
    response = _attr(exc, "response")
    if response is None:
        response = _attr(exc, "raw_response")  # mistralai
    status = _status_of(exc, "status_code", "code", "status") or _status_of(
        response, "status_code", "status"
    )
    if status is None or status < 400:
        return None
    headers = _headers_of(response) if response is not None else {}
    headers.update(_headers_of(exc))
    body, raw = _carried_body(exc, response)
    if isinstance(body, dict) and "error" not in body and "type" not in body and "message" in body:
        body = {"error": body}  # the SDKs hand over the inner error object
    message = _attr(exc, "message")
    text = raw or (message if isinstance(message, str) and message else str(exc))
    observed = _observe_error(
        status,
        headers,
        body,
        "" if body is not None else text,
        provider=provider,
        now_us=now_us,
        classifier=classifier,
        scrubber=scrubber,
        model=_text(_attr(exc, "model_name")) or _text(_attr(exc, "model")),
        raw=raw,
    )
    return _pydantic_ai_extras(exc, observed)


def _pydantic_ai_extras(exc: BaseException, observed: Observation) -> Observation:
    """pydantic-ai's ``in_stream`` (a stream's error: before the first token) and its
    ``retry_after`` seconds when no header or body gave a hint."""
    outcome = observed.outcome
    if not isinstance(outcome, Failed):
        return observed
    if _attr(exc, "in_stream") is True:
        outcome = attrs.evolve(outcome, phase=Phase.BEFORE_FIRST_TOKEN)
    retry_after = _attr(exc, "retry_after")
    source = observed.hint_source
    if outcome.hint_us is None and type(retry_after) in (int, float):
        seconds = float(retry_after)  # type: ignore[arg-type]
        if seconds >= 0 and seconds == seconds:  # not NaN
            hint = _bounded(int(min(seconds * _US_PER_S, HINT_US_MAX)))
            outcome, source = attrs.evolve(outcome, hint_us=hint), "retry_after"
    if outcome is observed.outcome:
        return observed
    return attrs.evolve(observed, outcome=outcome, hint_source=source)


def _pydantic_ai_class(names: frozenset[str]) -> FailureClass | None:
    """The class of a pydantic-ai error without an HTTP response, or ``None``."""
    for name, failure in _PYDANTIC_AI_CLASSES:
        if name in names and ("AgentRunError" in names or name == "ResponseRejected"):
            return failure
    return None


def _no_response_class(exc: BaseException, names: frozenset[str]) -> FailureClass | None:
    """The class of a timeout, broken connection or cancellation, or ``None`` if unrecognised."""
    if "APITimeoutError" in names:
        return _F.TIMEOUT_BEFORE_RESPONSE
    for link in _cause_chain(exc):
        transport = _transport_class(link)
        if transport is not None:
            return transport
    if "APIConnectionError" in names:
        return _F.CONNECT_ERROR
    if isinstance(exc, TimeoutError):
        return _F.TIMEOUT_BEFORE_RESPONSE
    if isinstance(exc, ConnectionError):
        return _F.CONNECT_ERROR
    if "CancelledError" in names:
        return _F.CALLER_CANCELLED
    return None


def observe_exception(
    exc: BaseException,
    *,
    now_us: int,
    provider: Provider | None = None,
    classifier: Classifier = DEFAULT_CLASSIFIER,
    scrubber: Scrubber = DEFAULT_SCRUBBER,
) -> Observation:
    """One exception (not a group) as an observation; anything unrecognised is ``UNKNOWN``.

    Read by behaviour, not class identity: any exception carrying an HTTP error
    answer (see :func:`_observe_carried`) is classified from its status, headers and
    body; transport failures by their class names (httpx, httpx2, httpcore, the
    SDKs' ``APIConnectionError``/``APITimeoutError``); pydantic-ai's categories.
    """
    names = _mro_names(exc)
    if "APIConnectionError" not in names:  # litellm's carries a made-up status 500
        carried = _observe_carried(
            exc, now_us=now_us, provider=provider, classifier=classifier, scrubber=scrubber
        )
        if carried is not None:
            return carried
    model = _text(_attr(exc, "model_name"))
    detail = _exception_text(exc)
    failure = _pydantic_ai_class(names)
    if failure is not None:
        message = _attr(exc, "message")
        return _failed(
            failure,
            status=None,
            detail=message if isinstance(message, str) and message else detail,
            scrubber=scrubber,
            provider=provider,
            model=model,
        )
    if "APIResponseValidationError" in names:
        return _failed(
            _F.MALFORMED_RESPONSE,
            status=_status_of(exc, "status_code"),
            detail=detail,
            scrubber=scrubber,
            provider=provider,
        )
    if "ContentFilterFinishReasonError" in names:
        return _failed(
            _F.CONTENT_FILTERED,
            status=None,
            detail=detail,
            scrubber=scrubber,
            provider=provider,
            billed=True,
        )
    failure = _no_response_class(exc, names)
    return _failed(
        failure or _F.UNKNOWN,
        status=None,
        detail=detail,
        scrubber=scrubber,
        provider=provider,
        model=None if failure is not None else model,
    )


def _flatten(exc: BaseException, depth: int) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup) and depth < GROUP_DEPTH_MAX:
        for member in exc.exceptions:
            yield from _flatten(member, depth + 1)
    else:
        yield exc


def observe_exceptions(
    exc: BaseException,
    *,
    now_us: int,
    provider: Provider | None = None,
    classifier: Classifier = DEFAULT_CLASSIFIER,
    scrubber: Scrubber = DEFAULT_SCRUBBER,
) -> tuple[Observation, ...]:
    """Every leaf of ``exc`` (groups flattened depth-first, in order, I4) as an observation."""
    return tuple(
        observe_exception(
            leaf, now_us=now_us, provider=provider, classifier=classifier, scrubber=scrubber
        )
        for leaf in _flatten(exc, 0)
    )


# --------------------------------------------------------------------------- streams


class StreamState(enum.Enum):
    """Where a stream is."""

    #: No byte yet.
    WAITING = "waiting"
    #: Bytes arrived; the stream is open.
    OPEN = "open"
    #: An observation was returned; the observer accepts nothing more.
    ENDED = "ended"


class StreamObserver:
    """An SSE stream, fed chunk by chunk, turned into one observation (sans-IO, h11-style).

    Rules: :meth:`feed` each chunk as it arrives; it returns an observation
    only when the stream itself ends the attempt (an in-band error event, a
    malformed chunk, an over-long line). The executor ends it otherwise with
    exactly one of :meth:`end` (the connection closed), :meth:`timed_out` (no
    byte for too long: first-token timeout or stall) or :meth:`broken` (a
    transport error mid-stream). After an observation every call raises
    :class:`UsageError` naming the call and the state.

    Success: ``[DONE]`` (OpenAI), ``message_stop`` (Anthropic), or a missing
    terminator when the content is otherwise complete (a ``finish_reason`` /
    ``stop_reason`` / ``finishReason`` was seen: Gemini never sends one).
    """

    def __init__(
        self,
        *,
        provider: Provider | None = None,
        classifier: Classifier = DEFAULT_CLASSIFIER,
        scrubber: Scrubber = DEFAULT_SCRUBBER,
        on_text: Callable[[str], None] | None = None,
        on_chunk: Callable[[dict[str, Any]], None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.provider = provider
        #: The stream response's headers, lower-cased names (header rules of in-band errors).
        self.headers: Mapping[str, str] = headers or {}
        self._classifier = classifier
        self._scrubber = scrubber
        #: Called with every text delta, in order (an executor forwards them).
        self._on_text = on_text
        #: Called with every parsed data payload that is not an error, in order
        #: (an executor passes them through whole: tool calls, refusals, usage).
        self._on_chunk = on_chunk
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line = ""
        self._event = ""
        self._data: list[str] = []
        self.state = StreamState.WAITING
        self.first_byte_us: int | None = None
        self.first_token_us: int | None = None
        self.chunk_count = 0
        self.delivered_chars = 0
        self.input_tokens = 0
        self.output_tokens = 0
        #: Whether any usage report was seen in the stream.
        self.usage_seen = False
        self.finish_reason: str | None = None
        self.done = False

    # -- public transitions

    def feed(self, chunk: bytes | str, *, now_us: int) -> Observation | None:
        """Take one chunk; an observation if the stream ended the attempt, else ``None``."""
        self._require_live("feed")
        if self.first_byte_us is None:
            self.first_byte_us = now_us
        self.state = StreamState.OPEN
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        lines = (self._line + text).split("\n")
        self._line = lines.pop()
        if len(self._line) > SSE_LINE_CHARS_MAX:
            return self._end(self._fail(_F.MALFORMED_RESPONSE, "SSE line longer than the limit"))
        for line in lines:
            if len(line) > SSE_LINE_CHARS_MAX:  # a whole line in one chunk is checked too
                return self._end(
                    self._fail(_F.MALFORMED_RESPONSE, "SSE line longer than the limit")
                )
            observed = self._line_received(line.rstrip("\r"), now_us)
            if observed is not None:
                return self._end(observed)
        return None

    def end(self, *, now_us: int) -> Observation:
        """The connection closed: success if terminated or complete, else interrupted."""
        self._require_live("end")
        if self._line:
            self._line_received(self._line.rstrip("\r"), now_us)
            self._line = ""
        observed = self._dispatch(now_us)
        if observed is not None:
            return self._end(observed)
        if self.finish_reason in _REFUSAL_REASONS:
            return self._end(self._fail(_F.CONTENT_FILTERED, f"finish reason {self.finish_reason}"))
        if self.done or self.finish_reason is not None:
            return self._end(self._succeeded())
        return self._end(self._fail(_F.STREAM_INTERRUPTED, "stream ended without a terminator"))

    def timed_out(self, *, now_us: int) -> Observation:
        """No byte for too long: before the first token a first-token timeout, after it a stall."""
        self._require_live("timed_out")
        del now_us
        if self.first_token_us is None:
            return self._end(self._fail(_F.FIRST_TOKEN_TIMEOUT, "no token before the deadline"))
        return self._end(self._fail(_F.STREAM_STALLED, "stream stalled"))

    def broken(self, exc: BaseException, *, now_us: int) -> Observation:
        """A transport error while the stream was open."""
        self._require_live("broken")
        del now_us
        return self._end(self._fail(_F.STREAM_INTERRUPTED, _exception_text(exc)))

    # -- internals

    def _require_live(self, call: str) -> None:
        if self.state is StreamState.ENDED:
            raise UsageError(f"StreamObserver.{call}: illegal in state {self.state.value}")

    def _end(self, observation: Observation) -> Observation:
        self.state = StreamState.ENDED
        return observation

    def _phase(self) -> Phase:
        return Phase.MID_STREAM if self.delivered_chars else Phase.BEFORE_FIRST_TOKEN

    def _fail(
        self,
        failure: FailureClass,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        hint: tuple[int | None, str | None] = (None, None),
    ) -> Observation:
        observation = _failed(
            failure,
            status=status,
            detail=detail,
            scrubber=self._scrubber,
            phase=self._phase(),
            code=code,
            provider=self.provider,
            hint=hint,
            delivered_chars=self.delivered_chars,
            billed=self.delivered_chars > 0 or self.output_tokens > 0,
        )
        if not self.usage_seen:
            return observation
        return attrs.evolve(observation, failed_usage=(self.input_tokens, self.output_tokens))

    def _succeeded(self) -> Observation:
        return Observation(
            outcome=Succeeded(
                evidence=Evidence.UPSTREAM,
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
            ),
            status=200,
            provider=self.provider,
            billed=True,
            usage_reported=self.usage_seen,
        )

    def _line_received(self, line: str, now_us: int) -> Observation | None:
        if not line:
            return self._dispatch(now_us)
        if line.startswith(":"):
            return None  # comment / keep-alive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        return None

    def _dispatch(self, now_us: int) -> Observation | None:
        if not self._data:
            self._event = ""
            return None
        data = "\n".join(self._data)
        event = self._event
        self._data = []
        self._event = ""
        self.chunk_count += 1
        if data.strip() == "[DONE]":
            self.done = True
            return None
        payload = _loads(data.encode())
        if not isinstance(payload, dict):
            return self._fail(_F.MALFORMED_RESPONSE, f"malformed SSE chunk: {data[:200]}")
        if event == "error" or payload.get("type") == "error" or payload.get("error"):
            return self._inband_error(payload, data)
        if self.provider is Provider.OPENAI and "choices" not in payload and "type" in payload:
            kind = str(payload["type"])[:40]
            return self._fail(_F.MALFORMED_RESPONSE, f"an {kind!r} event in an OpenAI stream")
        self._absorb(payload, now_us)
        if self._on_chunk is not None:
            self._on_chunk(payload)
        if payload.get("type") == "message_stop":
            self.done = True
        return None

    def _inband_error(self, payload: Mapping[str, Any], data: str) -> Observation:
        if self.provider is None:
            self.provider = _detect_provider({}, payload)
        message, code = _error_parts(payload)
        error = payload.get("error")
        raw_status = error.get("code") if isinstance(error, dict) else None
        status = raw_status if isinstance(raw_status, int) and 400 <= raw_status <= 599 else None
        found = self._classifier.match(
            f"{code or ''} {message or ''}",
            provider=self.provider,
            status=status,
            body=data[:BODY_CHARS_MAX] if self._classifier.reads_body else "",
            headers=self.headers,
        )
        if found is None:
            found = _default_for_status(status) if status is not None else _F.STREAM_INTERRUPTED
        return self._fail(
            found,
            message or "in-band error event",
            status=status,
            code=code,
            hint=parse_hint_us({}, payload, status=status, now_us=0),
        )

    def _token(self, text: object, now_us: int) -> None:
        if isinstance(text, str) and text:
            if self.first_token_us is None:
                self.first_token_us = now_us
            self.delivered_chars += len(text)
            if self._on_text is not None:
                self._on_text(text)

    def _output(self, calls: object, now_us: int) -> None:
        """Non-text output (tool-call deltas): it counts as delivered, not as text."""
        if self.first_token_us is None:
            self.first_token_us = now_us
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            arguments = function.get("arguments") if isinstance(function, dict) else None
            self.delivered_chars += len(arguments) if isinstance(arguments, str) else 1

    def _absorb(self, payload: Mapping[str, Any], now_us: int) -> None:
        """Read one parsed SSE payload of any dialect: its text, finish reason and usage."""
        kind = payload.get("type")
        if self.provider is None:
            if isinstance(kind, str) and kind.startswith(("message_", "content_block_")):
                self.provider = Provider.ANTHROPIC
            elif "candidates" in payload:
                self.provider = Provider.GEMINI
            elif "choices" in payload:
                self.provider = Provider.OPENAI
        provider = self.provider
        if provider is Provider.OPENAI:  # the common case: one dialect's fields only
            self._absorb_openai(payload, now_us)
        else:
            self._absorb_openai(payload, now_us)
            self._absorb_anthropic(kind, payload, now_us)
            self._absorb_gemini(payload, now_us)
        tokens = _usage(payload)
        if tokens is not None:
            self.usage_seen = True
            self.input_tokens = tokens[0] or self.input_tokens
            self.output_tokens = tokens[1] or self.output_tokens

    def _absorb_openai(self, payload: Mapping[str, Any], now_us: int) -> None:
        """OpenAI-compatible chunks: ``choices[].delta.content`` and ``finish_reason``."""
        choices = payload.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._token(delta.get("content"), now_us)
                calls = delta.get("tool_calls")
                if calls:  # a tool call's arguments are output too (billed, first token)
                    self._output(calls, now_us)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def _absorb_anthropic(self, kind: object, payload: Mapping[str, Any], now_us: int) -> None:
        """Anthropic events: the usage at ``message_start``, text deltas, the stop reason."""
        if kind == "message_start" and isinstance(payload.get("message"), dict):
            usage = payload["message"].get("usage")
            if isinstance(usage, dict):
                self.usage_seen = True
                self.input_tokens = _int(usage.get("input_tokens"), self.input_tokens)
                self.output_tokens = _int(usage.get("output_tokens"), self.output_tokens)
        elif kind == "content_block_delta" and isinstance(payload.get("delta"), dict):
            self._token(payload["delta"].get("text"), now_us)
        elif kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.finish_reason = str(delta["stop_reason"])

    def _absorb_gemini(self, payload: Mapping[str, Any], now_us: int) -> None:
        """Gemini chunks: ``candidates[].content.parts[].text`` and ``finishReason``."""
        candidates = payload.get("candidates")
        if not isinstance(candidates, list):
            return
        for candidate in candidates:
            if not isinstance(candidate, dict):
                continue
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict):
                    self._token(part.get("text"), now_us)
            if candidate.get("finishReason"):
                self.finish_reason = str(candidate["finishReason"])


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default
