"""Deciders of the credential lifecycle the engine calls: provisioning, resolution, failures.

Every function here is pure: ``(state, command, *, now_us) -> events``. Deciders
never mutate ``state``; they stamp each event's envelope (stream id, the next
version of that stream from the state, ``at_us=now_us``) and check the
transition against :data:`~routeledger.core.credentials.lifecycle.TRANSITIONS`
before proposing it, so a command that would be illegal fails here with the
same :class:`~routeledger.core.credentials.lifecycle.IllegalTransition` the
fold would raise.

Failures observed while *using* a key arrive as :class:`RecordFailure` with a
:class:`CredentialFailure`. The engine maps its failure taxonomy onto that
enum (401/403 -> ``AUTH``; quota or budget -> ``BUDGET``; "invalid model
name"/"model not supported" -> ``INVALID_MODEL``; the rest -> ``OTHER``). Only
``AUTH`` changes the lifecycle; budget and invalid-model failures never
trigger key recovery (I0). Availability of (credential, model) pairs is the
routing context's business, not this one's.

Self-healing (:func:`~.healing.decide_next_step`), trials, rotation and
revocation are in :mod:`.healing` until the engine calls them ([G4]).
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from ..streams import (
    credential_stream,
    installation_stream,
)
from ..time import US_PER_MIN, US_PER_S
from .events import (
    CredentialAuthFailed,
    CredentialEvent,
    CredentialMetadata,
    CredentialProvisioned,
    ModelResolutionFailed,
    ModelsResolved,
    OperatorKeyAdded,
    ResolutionFailure,
    RoleModel,
)
from .lifecycle import (
    TRANSITIONS,
    Credential,
    CredentialSource,
    CredentialsState,
    CredentialState,
    TrialState,
    UnknownCredential,
    next_state,
    next_trial_state,
)
from .validate import check_id, check_metadata, check_now, check_resolution

__all__ = [
    "RESOLVE_BACKOFF_US_MAX",
    "RESOLVE_BACKOFF_US_MIN",
    "CredentialFailure",
    "ProvisionExplicitKey",
    "RecordFailure",
    "RecordModelsResolved",
    "RecordResolutionFailed",
    "credential_of",
    "decide_failure",
    "decide_models_resolved",
    "decide_provision_explicit",
    "decide_resolution_failed",
    "next_version",
    "resolve_retry_at_us",
    "state_of",
]

#: First wait after a failed resolution. Why: a blip should heal on the next
#: request or so, and one second already collapses a burst of requests into
#: one listing call.
RESOLVE_BACKOFF_US_MIN: Final = 1 * US_PER_S
#: Longest wait between resolutions. Why: a dead ``/model/info`` is then
#: called at most six times an hour per credential, while an outage that ends
#: heals within ten minutes without a restart.
RESOLVE_BACKOFF_US_MAX: Final = 10 * US_PER_MIN
#: Largest backoff exponent; 2**30 s is far past the cap, so larger ones change nothing.
_BACKOFF_EXPONENT_MAX: Final = 30


class CredentialFailure(enum.Enum):
    """What kind of failure a use of the key met, as far as key recovery cares."""

    #: HTTP 401/403: the key itself was rejected. The only trigger of key recovery.
    AUTH = "auth"
    #: Quota, rate or budget exhaustion: the key is fine; never key recovery.
    BUDGET = "budget"
    #: "Invalid model name" / "model not supported" 400: never key recovery (I0).
    INVALID_MODEL = "invalid_model"
    #: Anything else (5xx, timeouts, caller errors): not a lifecycle matter.
    OTHER = "other"


# --- commands (imperative) ---------------------------------------------------------


@attrs.frozen(kw_only=True)
class ProvisionExplicitKey:
    """Record an operator-supplied key (its secret is already in the secret store)."""

    installation_id: str
    credential_id: str
    metadata: CredentialMetadata


@attrs.frozen(kw_only=True)
class RecordModelsResolved:
    """Record the model names a key's provider listed, and the caller's role mapping."""

    credential_id: str
    models: frozenset[str]
    roles: tuple[RoleModel, ...] = ()


@attrs.frozen(kw_only=True)
class RecordResolutionFailed:
    """Record that listing the model names failed."""

    credential_id: str
    reason: ResolutionFailure


@attrs.frozen(kw_only=True)
class RecordFailure:
    """Record a failure met while using the key (see :class:`CredentialFailure`)."""

    credential_id: str
    failure: CredentialFailure
    http_status: int | None = None


# --- helpers -----------------------------------------------------------------------


def next_version(state: CredentialsState, stream_id: str) -> int:
    """The version an event appended to ``stream_id`` gets."""
    return state.stream_versions.get(stream_id, 0) + 1


def credential_of(state: CredentialsState, credential_id: str) -> Credential:
    """The credential ``credential_id``; :class:`UnknownCredential` if never provisioned."""
    found = state.credentials.get(credential_id)
    if found is None:
        raise UnknownCredential(credential_id)
    return found


def state_of(state: CredentialsState, credential_id: str) -> CredentialState:
    """The lifecycle state of ``credential_id`` (``NONE`` if never provisioned)."""
    found = state.credentials.get(credential_id)
    return CredentialState.NONE if found is None else found.state


# --- provisioning ------------------------------------------------------------------


def decide_provision_explicit(
    state: CredentialsState, command: ProvisionExplicitKey, *, now_us: int
) -> tuple[CredentialEvent, ...]:
    """Record an operator key (and add it to its installation); a re-run is a no-op (X1)."""
    check_now(now_us)
    check_id(command, "installation_id", command.installation_id)
    check_id(command, "credential_id", command.credential_id)
    check_metadata(command, command.metadata)
    existing = state.credentials.get(command.credential_id)
    if (
        existing is not None
        and existing.source is CredentialSource.EXPLICIT
        and existing.metadata == command.metadata
        and existing.installation_id == command.installation_id
    ):
        return ()
    stream = credential_stream(command.credential_id)
    evt = CredentialProvisioned(
        stream_id=stream,
        version=next_version(state, stream),
        at_us=now_us,
        credential_id=command.credential_id,
        installation_id=command.installation_id,
        metadata=command.metadata,
    )
    next_state(state_of(state, command.credential_id), evt, command.credential_id)
    # The same batch advances install:<id>, so a trial claimed concurrently from
    # the same state conflicts in the store (an operator key is never replaced
    # by a trial).
    install = installation_stream(command.installation_id)
    added = OperatorKeyAdded(
        stream_id=install,
        version=next_version(state, install),
        at_us=now_us,
        installation_id=command.installation_id,
        credential_id=command.credential_id,
    )
    inst = state.installations.get(command.installation_id)
    trial = TrialState.NOT_CLAIMED if inst is None else inst.trial
    next_trial_state(trial, added, command.installation_id)
    return (evt, added)


# --- model resolution --------------------------------------------------------------


def decide_models_resolved(
    state: CredentialsState, command: RecordModelsResolved, *, now_us: int
) -> tuple[CredentialEvent, ...]:
    """Record a listing; an *empty* listing is a resolution failure, never a success (I0)."""
    check_now(now_us)
    cred = credential_of(state, command.credential_id)
    if not command.models:
        return decide_resolution_failed(
            state,
            RecordResolutionFailed(
                credential_id=command.credential_id, reason=ResolutionFailure.EMPTY_LISTING
            ),
            now_us=now_us,
        )
    roles = check_resolution(command)
    if (
        cred.state is CredentialState.USABLE
        and cred.models == command.models
        and cred.roles == roles
        and cred.resolution_failures == 0
    ):
        return ()
    stream = credential_stream(command.credential_id)
    evt = ModelsResolved(
        stream_id=stream,
        version=next_version(state, stream),
        at_us=now_us,
        credential_id=command.credential_id,
        models=frozenset(command.models),
        roles=roles,
    )
    next_state(cred.state, evt, command.credential_id)
    return (evt,)


def decide_resolution_failed(
    state: CredentialsState, command: RecordResolutionFailed, *, now_us: int
) -> tuple[CredentialEvent, ...]:
    """Record a failed listing; a known-good set is kept (the table keeps USABLE)."""
    check_now(now_us)
    cred = credential_of(state, command.credential_id)
    stream = credential_stream(command.credential_id)
    evt = ModelResolutionFailed(
        stream_id=stream,
        version=next_version(state, stream),
        at_us=now_us,
        credential_id=command.credential_id,
        reason=command.reason,
    )
    next_state(cred.state, evt, command.credential_id)
    return (evt,)


def resolve_retry_at_us(failures: int, last_failure_at_us: int) -> int:
    """When resolution may be retried after ``failures`` consecutive failures (>= 1).

    ``RESOLVE_BACKOFF_US_MIN * 2**(failures - 1)``, capped at
    :data:`RESOLVE_BACKOFF_US_MAX`.
    """
    exponent = min(max(failures, 1) - 1, _BACKOFF_EXPONENT_MAX)
    return last_failure_at_us + min(RESOLVE_BACKOFF_US_MIN << exponent, RESOLVE_BACKOFF_US_MAX)


# --- failures while using a key ----------------------------------------------------

#: States in which a 401/403 is news; elsewhere the key is already out of use.
_AUTH_NEWS: Final = frozenset(
    state for (state, kind) in TRANSITIONS if kind is CredentialAuthFailed
)


def decide_failure(
    state: CredentialsState, command: RecordFailure, *, now_us: int
) -> tuple[CredentialEvent, ...]:
    """Record a failure of use: only ``AUTH`` changes the lifecycle (I0)."""
    check_now(now_us)
    cred = credential_of(state, command.credential_id)
    if command.failure is not CredentialFailure.AUTH or cred.state not in _AUTH_NEWS:
        # Budget and invalid-model failures never trigger key recovery; a late
        # 401 about a key already out of use changes nothing.
        return ()
    stream = credential_stream(command.credential_id)
    return (
        CredentialAuthFailed(
            stream_id=stream,
            version=next_version(state, stream),
            at_us=now_us,
            credential_id=command.credential_id,
            http_status=command.http_status,
        ),
    )
