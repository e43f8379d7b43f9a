"""The failure taxonomy: every way an attempt can fail, and what each does (A1).

Adapters map real provider responses onto :class:`FailureClass` (a 400 whose
body says "model not supported" is ``MODEL_NOT_SUPPORTED``, a 429 with a
billing message is ``QUOTA_EXHAUSTED``, ...). The core never sees a payload.

For each class, :data:`DEFAULT_FAILURE_TABLE` documents the default *scope*
(what the failure says something about), the *action* on availability, whether
the same member may be retried and whether the request falls back. A policy
may override any row (``[failures.<class>]`` in TOML); it can never drop one,
so the table is total (A1).

Caller-caused failures (invalid request, context too long, content filter,
caller cancelled) have scope ``REQUEST`` or ``NONE`` and never change the
availability of a credential or a pair.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from ..time import US_PER_H, US_PER_MIN, US_PER_S

__all__ = [
    "DEFAULT_FAILURE_TABLE",
    "OUTAGE_PROBE_US_MAX",
    "STRIKE_WINDOW_US",
    "Evidence",
    "FailureAction",
    "FailureClass",
    "FailureRule",
    "FailureScope",
    "Phase",
]


class FailureClass(enum.Enum):
    """What went wrong with one attempt, as an adapter classified it."""

    #: 401/403: the key is rejected. Scope: the credential, all its models.
    AUTH_ERROR = "auth_error"
    #: Billing/credits exhausted. Scope: the pair, or the credential when its quota is account-wide.
    QUOTA_EXHAUSTED = "quota_exhausted"
    #: 429 rate limit. Scope: the pair, bounded cooldown honouring the provider hint.
    RATE_LIMITED = "rate_limited"
    #: 404 for this model name on this credential. Scope: the pair, suspended.
    MODEL_NOT_FOUND = "model_not_found"
    #: 400/422 "model not supported" (I1). Scope: the pair, suspended; never credential-wide.
    MODEL_NOT_SUPPORTED = "model_not_supported"
    #: The prompt exceeds the model's window. Caller-caused: no availability change.
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    #: The provider's content filter refused. Caller-caused: no availability change.
    CONTENT_FILTERED = "content_filtered"
    #: A malformed request (400). Caller-caused: no availability change, no fallback.
    INVALID_REQUEST = "invalid_request"
    #: 5xx / overloaded. Scope: the pair, short bounded cooldown.
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    #: TCP/TLS connect failure. Scope: the pair, short cooldown.
    CONNECT_ERROR = "connect_error"
    #: No response headers in time. Scope: the pair, short cooldown.
    TIMEOUT_BEFORE_RESPONSE = "timeout_before_response"
    #: Headers arrived, first token did not. Scope: the pair, short cooldown.
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"
    #: The stream stopped producing tokens. Scope: the pair, short cooldown.
    STREAM_STALLED = "stream_stalled"
    #: The stream broke mid-way. Scope: the pair, short cooldown.
    STREAM_INTERRUPTED = "stream_interrupted"
    #: A response that cannot be parsed. Scope: the pair, short cooldown.
    MALFORMED_RESPONSE = "malformed_response"
    #: A parsed response the caller's validation rejected. Scope: this request only.
    RESPONSE_REJECTED = "response_rejected"
    #: The caller went away. Scope: none; the request ends.
    CALLER_CANCELLED = "caller_cancelled"
    #: The gateway's own connection pool had no free connection in time: a
    #: local limit, not the upstream's fault. Scope: none; the next member may serve.
    GATEWAY_POOL_EXHAUSTED = "gateway_pool_exhausted"
    #: Anything else. Scope: the pair, short cooldown.
    UNKNOWN = "unknown"


class FailureScope(enum.Enum):
    """What a failure says something about."""

    #: The credential with all its models (``cred:<c>`` stream).
    CREDENTIAL = "credential"
    #: One (credential, concrete upstream model) pair (``pair:<c>:<m>`` stream).
    PAIR = "pair"
    #: Only this request; availability is untouched.
    REQUEST = "request"
    #: Nothing at all.
    NONE = "none"


class FailureAction(enum.Enum):
    """What a failure does to the availability of its scope."""

    #: Exponential backoff: ``min(base * factor**level, max)``; a clamped provider hint wins.
    COOLDOWN = "cooldown"
    #: Blocked for a fixed period (``base_us``).
    SUSPEND = "suspend"
    #: No availability change.
    NOTHING = "nothing"


class Phase(enum.Enum):
    """When, within an attempt, the failure happened."""

    #: Before any response (connect, headers, status code).
    BEFORE_RESPONSE = "before_response"
    #: Response started, no token delivered to the caller yet.
    BEFORE_FIRST_TOKEN = "before_first_token"
    #: Some output was already delivered to the caller.
    MID_STREAM = "mid_stream"


class Evidence(enum.Enum):
    """How strongly a success proves that the pair works upstream (I1.2)."""

    #: The upstream answered this request: the only evidence that clears a cooldown.
    UPSTREAM = "upstream"
    #: Tokens were counted locally: proves nothing about the upstream.
    LOCAL_COUNT = "local_count"
    #: Served from a cache: proves nothing about the upstream.
    CACHE_HIT = "cache_hit"


@attrs.frozen(kw_only=True)
class FailureRule:
    """One row of the failure table: what a failure class does.

    ``base_us`` is the first cooldown (``COOLDOWN``) or the suspension period
    (``SUSPEND``); ``factor`` multiplies the cooldown per consecutive failure
    (backoff level), up to ``max_us``. ``retry_same`` is how many more times
    the same member may be attempted by the same request; ``fallback`` says
    whether the request may move on to other members and targets.
    ``allowed_fails`` is how many failures of the scope are tolerated, each
    within :data:`STRIKE_WINDOW_US` of the one before, before the action
    applies (LiteLLM's ``allowed_fails``): a tolerated failure blocks nothing
    (``FailureTolerated``), so the request may retry the same pair at once. A
    failure with a provider hint, or of a scope already blocked or half-open,
    is never tolerated.
    """

    failure: FailureClass
    scope: FailureScope
    action: FailureAction
    base_us: int = 0
    factor: int = 1
    max_us: int = 0
    retry_same: int = 0
    fallback: bool = True
    allowed_fails: int = 0


def _cool(
    failure: FailureClass, base_us: int, max_us: int, retry: int = 0, allowed: int = 0
) -> FailureRule:
    return FailureRule(
        failure=failure,
        scope=FailureScope.PAIR,
        action=FailureAction.COOLDOWN,
        base_us=base_us,
        factor=2,
        max_us=max_us,
        retry_same=retry,
        allowed_fails=allowed,
    )


def _suspend(failure: FailureClass, scope: FailureScope, period_us: int) -> FailureRule:
    return FailureRule(
        failure=failure,
        scope=scope,
        action=FailureAction.SUSPEND,
        base_us=period_us,
        max_us=period_us,
    )


def _caller(failure: FailureClass, scope: FailureScope, *, fallback: bool) -> FailureRule:
    return FailureRule(
        failure=failure, scope=scope, action=FailureAction.NOTHING, fallback=fallback
    )


#: Longest cooldown of an outage class (5xx, connect errors, timeouts, cut
#: streams) without a provider hint, in µs: the interval between half-open
#: probes of a pair that keeps failing. Why 30 s: a healed member is back
#: within 30 s of healing whatever the outage's length (G6), at a cost of one
#: probe per pair per 30 s while it stays down.
OUTAGE_PROBE_US_MAX: Final = 30 * US_PER_S

#: How close a failure must follow the scope's previous tolerated one to
#: count towards ``allowed_fails``, in µs. Why 60 s: LiteLLM counts its
#: ``allowed_fails`` per minute, so a LiteLLM user's setting means the same
#: here; isolated transient errors minutes apart never add up to a cooldown.
STRIKE_WINDOW_US: Final = 60 * US_PER_S

_F = FailureClass
#: The default failure table (A1). Why these numbers: auth and model-support
#: problems do not fix themselves quickly (an operator or a re-resolution
#: does), so they suspend for hours; rate limits and 5xx usually clear within
#: seconds to minutes, so they back off from 1-5 s up to minutes; outages
#: back off to at most :data:`OUTAGE_PROBE_US_MAX`. A single 5xx or connect
#: error is usually transient (one retry of the same pair usually succeeds), so
#: those two classes tolerate one failure before cooling the pair (G6: "retry
#: the same once, then cool"); a second one within :data:`STRIKE_WINDOW_US`
#: cools it as before.
DEFAULT_FAILURE_TABLE: Final[Mapping[FailureClass, FailureRule]] = MappingProxyType(
    {
        rule.failure: rule
        for rule in (
            _suspend(_F.AUTH_ERROR, FailureScope.CREDENTIAL, 1 * US_PER_H),
            FailureRule(
                failure=_F.QUOTA_EXHAUSTED,
                scope=FailureScope.PAIR,
                action=FailureAction.COOLDOWN,
                base_us=1 * US_PER_MIN,
                factor=2,
                max_us=1 * US_PER_H,
            ),
            # One retry of the same pair: back to it after its Retry-After (G6).
            _cool(_F.RATE_LIMITED, 1 * US_PER_S, 5 * US_PER_MIN, retry=1),
            _suspend(_F.MODEL_NOT_FOUND, FailureScope.PAIR, 12 * US_PER_H),
            _suspend(_F.MODEL_NOT_SUPPORTED, FailureScope.PAIR, 12 * US_PER_H),
            _caller(_F.CONTEXT_LENGTH_EXCEEDED, FailureScope.REQUEST, fallback=True),
            _caller(_F.CONTENT_FILTERED, FailureScope.REQUEST, fallback=False),
            _caller(_F.INVALID_REQUEST, FailureScope.REQUEST, fallback=False),
            _cool(_F.PROVIDER_UNAVAILABLE, 5 * US_PER_S, OUTAGE_PROBE_US_MAX, retry=1, allowed=1),
            _cool(_F.CONNECT_ERROR, 2 * US_PER_S, OUTAGE_PROBE_US_MAX, retry=1, allowed=1),
            _cool(_F.TIMEOUT_BEFORE_RESPONSE, 5 * US_PER_S, OUTAGE_PROBE_US_MAX),
            _cool(_F.FIRST_TOKEN_TIMEOUT, 5 * US_PER_S, OUTAGE_PROBE_US_MAX),
            _cool(_F.STREAM_STALLED, 5 * US_PER_S, OUTAGE_PROBE_US_MAX),
            _cool(_F.STREAM_INTERRUPTED, 2 * US_PER_S, OUTAGE_PROBE_US_MAX),
            _cool(_F.MALFORMED_RESPONSE, 5 * US_PER_S, OUTAGE_PROBE_US_MAX),
            _caller(_F.RESPONSE_REJECTED, FailureScope.REQUEST, fallback=True),
            _caller(_F.CALLER_CANCELLED, FailureScope.NONE, fallback=False),
            _caller(_F.GATEWAY_POOL_EXHAUSTED, FailureScope.NONE, fallback=True),
            _cool(_F.UNKNOWN, 5 * US_PER_S, OUTAGE_PROBE_US_MAX),
        )
    }
)
