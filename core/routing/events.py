"""Events of the routing context.

These names and tags are the storage contract. Renaming a class changes
nothing; changing a tag or a field breaks stored logs and needs a new schema
version plus an upcaster (``routeledger.adapters.store.codec``).

Observed vs decided (STYLE item 5). ``RequestReceived``, ``AttemptSucceeded``
and ``AttemptFailed`` are what an adapter *observed*; every other event is
what the core *decided* from them, the policy and ``now``. A what-if replay
keeps the observations and re-decides the rest under another policy.

Streams:

* ``request:<request_id>`` — ``RequestReceived``, ``AttemptRouted``,
  ``WaitDecided``, ``FallbackExhausted``, ``Degraded``, ``AttemptSucceeded``,
  ``AttemptFailed``;
* ``pair:<credential_id>:<upstream_model>`` — availability of one pair:
  ``CooldownStarted``, ``CooldownExtended``, ``PairSuspended``,
  ``CooldownCleared``, ``ProbeAllowed``, ``ProbeReleased``, ``FailureTolerated``
  with ``upstream_model`` set, the operator's ``BlockLifted`` and
  ``BlockImposed`` (``Origin.ADMIN``), and the predictions drawn from the
  provider's announced limits, ``ExhaustionPredicted`` and ``PredictionCleared``;
* ``load:<credential_id>`` — a credential's configured limits
  (``max_in_flight``, a pair's ``rpm``/``tpm``): ``SlotTaken`` when an attempt
  is routed to it, ``SlotReturned`` at the attempt's outcome;
* ``count:<count_id>`` — ``TokensCounted``, a token count's record (no state);
* ``cred:<credential_id>`` — credential-wide availability: the same events
  with ``upstream_model=None``, plus ``CredentialSuspended``. This stream is
  shared with the credential lifecycle, so routing tracks its head version
  from every event appended to it.
"""

from __future__ import annotations

import enum

import attrs

from ..events import Event, Origin, event
from .failures import Evidence, FailureClass, Phase

__all__ = [
    "Announced",
    "AttemptFailed",
    "AttemptRouted",
    "AttemptSucceeded",
    "BlockEvent",
    "BlockImposed",
    "BlockLifted",
    "Clamp",
    "Continuation",
    "CooldownCleared",
    "CooldownExtended",
    "CooldownStarted",
    "CredentialSuspended",
    "Degraded",
    "DegradedReason",
    "ExhaustedReason",
    "ExhaustionPredicted",
    "FailureSummary",
    "FailureTolerated",
    "FallbackExhausted",
    "PairRef",
    "PairSuspended",
    "PredictionCleared",
    "ProbeAllowed",
    "ProbeReleased",
    "RequestReceived",
    "RoutingEvent",
    "ScopeEvent",
    "SkipReason",
    "Skipped",
    "SlotReturned",
    "SlotTaken",
    "TokensCounted",
    "WaitDecided",
]


@attrs.frozen(kw_only=True)
class RoutingEvent(Event):
    """Base of the routing context's events.

    Naming rule: past tense; ``Origin.OBSERVED`` for what an adapter saw
    (``AttemptFailed``), ``Origin.DECIDED`` for what the core concluded
    (``CooldownStarted``). Other contexts' events are ignored by the routing fold.
    """


class SkipReason(enum.Enum):
    """Why a candidate member was not routed to (recorded on the decision)."""

    #: The pair is cooling down.
    COOLING_DOWN = "cooling_down"
    #: The pair is suspended.
    SUSPENDED = "suspended"
    #: The credential is cooling down or suspended (all its models).
    CREDENTIAL_BLOCKED = "credential_blocked"
    #: The pair is half-open and its one probe is in flight.
    PROBE_IN_FLIGHT = "probe_in_flight"
    #: This request already failed on this member and has no retry left for it.
    ALREADY_FAILED = "already_failed"
    #: The credential belongs to another owner than the request's model scope (I3).
    OUT_OF_SCOPE = "out_of_scope"
    #: The model cannot stream and the request streams.
    NO_STREAMING = "no_streaming"
    #: The model's context window is smaller than the request's input.
    CONTEXT_TOO_SMALL = "context_too_small"
    #: A backup alias names no route (I3: skip it, try the next).
    UNKNOWN_ROUTE = "unknown_route"
    #: The target was already in the request's chain (each target is visited once).
    DUPLICATE_TARGET = "duplicate_target"
    #: Lifecycle: no credential provisioned under this id (I0).
    NOT_PROVISIONED = "not_provisioned"
    #: Lifecycle: key stored, models never resolved (I0).
    MODELS_UNRESOLVED = "models_unresolved"
    #: Lifecycle: model resolution failed.
    RESOLUTION_FAILED = "resolution_failed"
    #: Lifecycle: the provider rejected the key.
    AUTH_FAILED = "auth_failed"
    #: Lifecycle: replaced by a newer key.
    ROTATED = "rotated"
    #: Lifecycle: expired.
    EXPIRED = "expired"
    #: Lifecycle: revoked.
    REVOKED = "revoked"
    #: The gateway has no key for the credential here (its variable is unset).
    SECRET_MISSING = "secret_missing"
    #: Lifecycle: the model name is not in the credential's resolved set (I0).
    MODEL_NOT_RESOLVED = "model_not_resolved"
    #: The provider announced no requests (or tokens) left on the pair until a reset.
    PREDICTED_EXHAUSTED = "predicted_exhausted"
    #: The credential has ``max_in_flight`` attempts in flight already (G6).
    AT_CAPACITY = "at_capacity"
    #: The pair's configured ``rpm`` or ``tpm`` is used up for the minute (G6).
    RATE_LIMIT_REACHED = "rate_limit_reached"


class Continuation(enum.Enum):
    """How an attempt relates to output already delivered by an earlier attempt."""

    #: Nothing was delivered yet: a plain attempt.
    FRESH = "fresh"
    #: Output was delivered and this model can continue it (prefill).
    CONTINUE = "continue"
    #: Output was delivered and this model cannot continue: restart cleanly.
    RESTART = "restart"


class Clamp(enum.Enum):
    """What the policy's hint clamp did to a provider hint (A3)."""

    #: No hint was given (the backoff applied).
    NO_HINT = "no_hint"
    #: The hint was within [min, max].
    KEPT = "kept"
    #: The hint was below min and was raised to it.
    RAISED = "raised"
    #: The hint was above max and was lowered to it.
    LOWERED = "lowered"


class ExhaustedReason(enum.Enum):
    """Why a request ended without a successful attempt."""

    #: No candidate remains within the wait bound.
    NO_CANDIDATE = "no_candidate"
    #: The request's attempt budget is spent.
    ATTEMPTS_LIMIT = "attempts_limit"
    #: The request's deadline has passed.
    DEADLINE = "deadline"
    #: The last failure does not allow a fallback (invalid request, cancelled, ...).
    TERMINAL_FAILURE = "terminal_failure"


class DegradedReason(enum.Enum):
    """Why nothing could be attempted at all (I0: never send an unresolved default)."""

    #: The request's alias names no route.
    UNKNOWN_ROUTE = "unknown_route"
    #: Every configured member is unusable (lifecycle, owner scope or capability).
    NOTHING_USABLE = "nothing_usable"


@attrs.frozen(kw_only=True)
class Skipped:
    """One candidate skipped by a decision, and why (a member, or a whole alias)."""

    #: The alias whose chain the candidate belongs to.
    alias: str
    chain_position: int
    #: ``None`` when a whole alias was skipped (unknown or duplicate).
    credential_id: str | None
    upstream_model: str | None
    reason: SkipReason
    #: When it recovers, for time-bound reasons; ``None`` otherwise.
    recovers_at_us: int | None = None


@attrs.frozen(kw_only=True)
class PairRef:
    """A (credential, concrete upstream model) pair."""

    credential_id: str
    upstream_model: str


@attrs.frozen(kw_only=True)
class FailureSummary:
    """One failed attempt, in order, for the exhaustion report (I4)."""

    attempt_id: str
    credential_id: str
    upstream_model: str
    failure: FailureClass
    phase: Phase


@attrs.frozen(kw_only=True)
class Announced:
    """What a provider announced about a pair's rate limits on one response (``None``: not sent).

    Resets are durations from the observation's ``at_us`` (the adapter turns
    an absolute reset time into one with its clock), like ``hint_us``.
    """

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    requests_reset_us: int | None = None
    tokens_reset_us: int | None = None


@event("routeledger.RequestReceived", 1, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class RequestReceived(RoutingEvent):
    """A request arrived for ``route`` with its own backups and scope."""

    request_id: str
    route: str
    backups: tuple[str, ...]
    caller_scope: str
    model_owner: str | None
    seed: int
    stream: bool
    input_tokens: int
    deadline_us: int | None


@event("routeledger.AttemptRouted", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class AttemptRouted(RoutingEvent):
    """The next attempt goes to this pair, with the candidates skipped on the way."""

    request_id: str
    attempt_id: str
    attempt_no: int
    credential_id: str
    #: The target's own upstream model id, never the primary's (I3).
    upstream_model: str
    #: The scope the member was resolved in: the model owner, else the caller (I3).
    owner_scope: str
    chain_position: int
    #: Where the target is defined, e.g. ``routes.chat.chain[1]`` (also its cursor key).
    target_path: str
    member_index: int
    #: A half-open probe of the pair or the credential (A4).
    probe: bool
    continuation: Continuation
    #: Output already delivered to the caller by earlier attempts.
    delivered_chars: int
    skipped: tuple[Skipped, ...]
    #: Skips beyond the recorded ones (bounded, see ``SKIPS_RECORDED_MAX``).
    skipped_more: int


@event("routeledger.WaitDecided", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class WaitDecided(RoutingEvent):
    """Nothing is selectable now; wait until the earliest member recovery (I1.3)."""

    request_id: str
    until_us: int
    recovering: tuple[PairRef, ...]
    waited_total_us: int


@event("routeledger.FallbackExhausted", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class FallbackExhausted(RoutingEvent):
    """The request ends unserved; decided exactly once (A7)."""

    request_id: str
    reason: ExhaustedReason
    failures: tuple[FailureSummary, ...]
    #: Earliest time anything could serve it (-> Retry-After); ``None`` if never.
    retry_at_us: int | None


@event("routeledger.Degraded", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class Degraded(RoutingEvent):
    """Nothing usable is configured or resolved for this request (I0)."""

    request_id: str
    reason: DegradedReason
    skipped: tuple[Skipped, ...]
    skipped_more: int


@event("routeledger.AttemptSucceeded", 2, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class AttemptSucceeded(RoutingEvent):
    """An attempt completed; ``evidence`` says what it proves upstream (I1.2)."""

    request_id: str
    attempt_id: str
    credential_id: str
    upstream_model: str
    evidence: Evidence
    input_tokens: int
    output_tokens: int
    #: Measured from sending the request to its first token, µs (``None``: not measured).
    ttft_us: int | None = None
    #: Measured from sending the request to its last byte, µs (``None``: not measured).
    duration_us: int | None = None
    #: The provider's announced limits on this response (schema 2; ``None``: none).
    announced: Announced | None = None


@event("routeledger.AttemptFailed", 2, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class AttemptFailed(RoutingEvent):
    """An attempt failed, as an adapter classified it."""

    request_id: str
    attempt_id: str
    credential_id: str
    upstream_model: str
    failure: FailureClass
    phase: Phase
    #: Output delivered to the caller so far (mid-stream failures).
    delivered_chars: int
    #: The provider's hint (Retry-After, reset, retryDelay) as a duration; ``None`` if none.
    hint_us: int | None
    #: The HTTP status the provider answered, ``None`` for transport failures (I4).
    status: int | None = None
    #: A short description, already scrubbed of secrets by the adapter (<= 300 chars, I4/E1).
    detail: str = ""
    #: Whether the provider billed the failed attempt (e.g. a stream cut after tokens).
    billed: bool = False
    #: Measured from sending the request to its first token, µs (``None``: none came).
    ttft_us: int | None = None
    #: Measured from sending the request to the failure, µs (``None``: not measured).
    duration_us: int | None = None
    #: The provider's announced limits on this response (schema 2; ``None``: none).
    announced: Announced | None = None


@attrs.frozen(kw_only=True)
class ScopeEvent(RoutingEvent):
    """An event on a pair or credential stream: the scope whose availability it changes."""

    credential_id: str
    #: ``None`` on the ``cred:`` stream (credential-wide).
    upstream_model: str | None


@attrs.frozen(kw_only=True)
class BlockEvent(ScopeEvent):
    """Fields shared by availability decisions on a pair or credential stream."""

    request_id: str
    attempt_id: str


@event("routeledger.CooldownStarted", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class CooldownStarted(BlockEvent):
    """The scope cools down until ``until_us`` (bounded, A3)."""

    until_us: int
    reason: FailureClass
    level: int
    hint_us: int | None
    clamp: Clamp


@event("routeledger.CooldownExtended", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class CooldownExtended(BlockEvent):
    """A blocked scope failed again: ``until_us`` only grows (A2)."""

    until_us: int
    reason: FailureClass
    level: int
    hint_us: int | None
    clamp: Clamp


@event("routeledger.PairSuspended", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class PairSuspended(BlockEvent):
    """One pair is suspended for a period (never credential-wide, I1)."""

    until_us: int
    reason: FailureClass


@event("routeledger.CredentialSuspended", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class CredentialSuspended(BlockEvent):
    """A credential, all its models, is suspended for a period."""

    until_us: int
    reason: FailureClass


@event("routeledger.FailureTolerated", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class FailureTolerated(BlockEvent):
    """A failure the scope's rule tolerates (``allowed_fails``): nothing is blocked yet.

    ``strikes`` counts the tolerated failures in a row, each within
    ``STRIKE_WINDOW_US`` of the one before; the next failure past
    ``allowed_fails`` applies the rule's action.
    """

    reason: FailureClass
    strikes: int


@event("routeledger.CooldownCleared", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class CooldownCleared(BlockEvent):
    """A real upstream success of this very scope healed it (A4, I1.2)."""


@event("routeledger.ProbeAllowed", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class ProbeAllowed(BlockEvent):
    """A half-open scope lets one probe through, until ``until_us`` at most (A4)."""

    until_us: int


@event("routeledger.ProbeReleased", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class ProbeReleased(BlockEvent):
    """The probe's attempt ended with no evidence about the scope, so its slot is free again.

    A local token count, a cache hit, or a failure that blames no upstream
    (the caller's, the gateway's own pool) proves nothing either way: the
    scope stays half-open and the next real request probes it at once, instead
    of waiting for the probe timeout (G6).
    """


@event("routeledger.SlotTaken", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class SlotTaken(RoutingEvent):
    """An attempt routed to a credential with configured limits takes one of its slots.

    On ``load:<credential_id>``, so processes sharing a store admit against one
    count (a stale decision conflicts and is re-decided). The slot counts in
    flight until ``until_us`` at most; ``tokens`` (the request's input estimate)
    counts against the pair's ``tpm`` for the minute.
    """

    credential_id: str
    upstream_model: str
    request_id: str
    attempt_id: str
    until_us: int
    tokens: int


@event("routeledger.SlotReturned", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class SlotReturned(RoutingEvent):
    """The attempt's outcome returns its slot; ``tokens`` (the usage observed, 0 for a
    failure) replaces the estimate in the pair's minute."""

    credential_id: str
    upstream_model: str
    request_id: str
    attempt_id: str
    tokens: int


@event("routeledger.TokensCounted", 1, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class TokensCounted(RoutingEvent):
    """Tokens counted for the pair a route would use, without asking it to answer (G6).

    A record, not an attempt: not billed, not a served request, and no evidence
    about the pair's availability whatever ``evidence`` says (a local count, or
    the provider's own count endpoint), so the routing fold keeps nothing of it.
    """

    count_id: str
    route: str
    caller_scope: str
    credential_id: str
    upstream_model: str
    input_tokens: int
    evidence: Evidence


@event("routeledger.BlockLifted", 1, Origin.ADMIN)
@attrs.frozen(kw_only=True)
class BlockLifted(ScopeEvent):
    """An operator lifted the scope's cooldown or suspension: available at once, no probe.

    Who and why are on the command's ``operator:<command_id>`` stream
    (:class:`routeledger.core.operator.OperatorActed`, same ``command_id``).
    """

    command_id: str


@event("routeledger.BlockImposed", 1, Origin.ADMIN)
@attrs.frozen(kw_only=True)
class BlockImposed(ScopeEvent):
    """An operator suspended the scope until ``until_us`` (bounded, A3; one probe after, A4)."""

    command_id: str
    until_us: int


@event("routeledger.ExhaustionPredicted", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class ExhaustionPredicted(BlockEvent):
    """The provider announced the pair has nothing left: not selectable before ``until_us``.

    Decided from the ``announced`` limits of the attempt's outcome: no
    requests (or no tokens) remaining until the announced reset, bounded by
    the policy's hint maximum (A3). Not a failure: no backoff, no probe.
    """

    until_us: int
    remaining_requests: int | None
    remaining_tokens: int | None


@event("routeledger.PredictionCleared", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class PredictionCleared(BlockEvent):
    """A later answer of the pair announced requests and tokens left: the prediction ends."""
