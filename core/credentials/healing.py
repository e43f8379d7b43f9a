"""Self-healing of the credential lifecycle (I0): what to do before using a credential.

:func:`decide_next_step` is wired: ``Engine.prepare_credential`` asks it before
the executor routes a request of an engine that tracks credential lifecycles,
and the executor lists the models when it says *resolve*. The trial, rotation
and revocation deciders are still parked (no engine, server or CLI path calls
them; see ``docs/operations.md``). All are pure and property-tested like the
rest of the lifecycle.

Every function here is pure: ``(state, command, *, now_us) -> result``. Deciders
never mutate ``state``; they stamp each event's envelope (stream id, the next
version of that stream from the state, ``at_us=now_us``) and check the
transition against :data:`~routeledger.core.credentials.lifecycle.TRANSITIONS`
before proposing it, so a command that would be illegal fails here with the
same :class:`~routeledger.core.credentials.lifecycle.IllegalTransition` the
fold would raise.

:func:`decide_next_step` answers the question I0 got wrong ("credentials exist,
so go ahead") with a typed :data:`CredentialStep` value, never an exception:

* :class:`UseCredential` — models resolved: use exactly these names and roles;
* :class:`ResolveModels` — key stored, models unresolved: re-resolve against
  the *stored* key (never provision again);
* :class:`WaitUntil` — the last resolutions failed: do not hammer the listing
  endpoint before ``until_us`` (bounded exponential backoff);
* :class:`ProvisionTrial` — no credential ever, no trial ever: append the
  claim it carries first, then provision (a conflict means another process won);
* :class:`RotateKey` — a trial key failed authentication or expired: recover it;
* :class:`Blocked` — nothing can be used; ``reason`` says why, for the caller
  to show.

Failures observed while *using* a key arrive as :class:`RecordFailure` with a
:class:`CredentialFailure`. The engine maps its failure taxonomy onto that
enum (401/403 -> ``AUTH``; quota or budget -> ``BUDGET``; "invalid model
name"/"model not supported" -> ``INVALID_MODEL``; the rest -> ``OTHER``). Only
``AUTH`` changes the lifecycle; budget and invalid-model failures never
trigger key recovery (I0). Availability of (credential, model) pairs is the
routing context's business, not this one's.
"""

from __future__ import annotations

import enum
from typing import Final, TypeAlias

import attrs

from ..errors import CommandError, UsageError
from ..streams import credential_stream, installation_stream
from .decide import credential_of, next_version, resolve_retry_at_us, state_of
from .events import (
    CredentialEvent,
    CredentialExpired,
    CredentialMetadata,
    CredentialReprovisioned,
    CredentialRevoked,
    CredentialRotated,
    RoleModel,
    TrialProvisioned,
    TrialProvisioningDecided,
    TrialProvisioningFailed,
)
from .lifecycle import (
    Credential,
    CredentialSource,
    CredentialsState,
    CredentialState,
    TrialState,
    next_state,
    next_trial_state,
)
from .validate import check_id, check_metadata, check_now

__all__ = [
    "KEY_RECOVERIES_MAX",
    "Blocked",
    "BlockedReason",
    "CredentialStep",
    "PrepareUse",
    "ProvisionTrial",
    "RecordRotation",
    "RecordTrialProvisioned",
    "RecordTrialProvisioningFailed",
    "ResolveModels",
    "RevokeCredential",
    "RotateKey",
    "TrialClaimMismatch",
    "UseCredential",
    "WaitUntil",
    "decide_next_step",
    "decide_revoke",
    "decide_rotation",
    "decide_trial_failed",
    "decide_trial_provisioned",
]

#: Replacement keys in one chain before giving up. Why: a provider that
#: rejects three fresh keys in a row is misconfigured, and more attempts would
#: only burn server-side key quota; an operator has to look.
KEY_RECOVERIES_MAX: Final = 3


class BlockedReason(enum.Enum):
    """Why nothing can be used now; a value the caller can show."""

    #: No credential was ever provisioned and no trial may be provisioned.
    NO_CREDENTIAL = "no_credential"
    #: Another process claimed the trial and has not recorded the outcome yet.
    TRIAL_PROVISIONING_PENDING = "trial_provisioning_pending"
    #: The installation's one trial could not be provisioned; an operator key is needed.
    TRIAL_PROVISIONING_FAILED = "trial_provisioning_failed"
    #: Every credential of the installation was revoked (or this one was).
    CREDENTIAL_REVOKED = "credential_revoked"
    #: This credential was replaced by a successor; use the successor.
    CREDENTIAL_ROTATED = "credential_rotated"
    #: The provider rejected the operator's key; only the operator can replace it.
    OPERATOR_KEY_REJECTED = "operator_key_rejected"
    #: The operator's key expired; only the operator can replace it.
    OPERATOR_KEY_EXPIRED = "operator_key_expired"
    #: :data:`KEY_RECOVERIES_MAX` replacement keys failed in a row.
    KEY_RECOVERY_EXHAUSTED = "key_recovery_exhausted"
    #: Model resolution keeps failing; the next attempt is due at ``until_us``.
    RESOLUTION_BACKING_OFF = "resolution_backing_off"


class TrialClaimMismatch(UsageError):
    """A trial outcome names a credential other than the one the claim reserved."""

    def __init__(self, installation_id: str, claimed: str | None, given: str) -> None:
        super().__init__(
            f"installation {installation_id!r} claimed its trial for credential {claimed!r}, "
            f"not {given!r}"
        )


# --- commands (imperative) ---------------------------------------------------------


@attrs.frozen(kw_only=True)
class PrepareUse:
    """Ask what to do before using a credential of ``installation_id``.

    ``credential_id`` names one credential; ``None`` means "whichever this
    installation should use" (operator keys first). ``trial_credential_id`` is
    the id a trial would get (X3); ``None`` means trials are not allowed.
    """

    installation_id: str
    credential_id: str | None = None
    trial_credential_id: str | None = None


@attrs.frozen(kw_only=True)
class RecordTrialProvisioned:
    """Record that the claimed trial key was obtained and its secret stored."""

    installation_id: str
    credential_id: str
    metadata: CredentialMetadata


@attrs.frozen(kw_only=True)
class RecordTrialProvisioningFailed:
    """Record that the claimed trial could not be obtained."""

    installation_id: str
    credential_id: str
    http_status: int | None


@attrs.frozen(kw_only=True)
class RecordRotation:
    """Record that ``successor_id`` replaced ``credential_id`` (secret already stored)."""

    credential_id: str
    successor_id: str
    metadata: CredentialMetadata


@attrs.frozen(kw_only=True)
class RevokeCredential:
    """Revoke a key for good (operator action)."""

    credential_id: str


# --- decisions (result values) -----------------------------------------------------


@attrs.frozen(kw_only=True)
class UseCredential:
    """Use the credential, with exactly these resolved model names and roles."""

    credential_id: str
    models: frozenset[str]
    roles: tuple[RoleModel, ...]
    events: tuple[CredentialEvent, ...] = ()


@attrs.frozen(kw_only=True)
class ResolveModels:
    """Resolve the model names against the key already stored under ``credential_id``."""

    credential_id: str
    events: tuple[CredentialEvent, ...] = ()


@attrs.frozen(kw_only=True)
class WaitUntil:
    """Nothing to do before ``until_us``; then ask again."""

    credential_id: str
    until_us: int
    reason: BlockedReason
    events: tuple[CredentialEvent, ...] = ()


@attrs.frozen(kw_only=True)
class ProvisionTrial:
    """Append ``events`` (the claim), then provision the trial as ``credential_id``."""

    installation_id: str
    credential_id: str
    events: tuple[CredentialEvent, ...]


@attrs.frozen(kw_only=True)
class RotateKey:
    """Obtain a replacement for the trial key ``credential_id`` (auth failure or expiry)."""

    credential_id: str
    events: tuple[CredentialEvent, ...] = ()


@attrs.frozen(kw_only=True)
class Blocked:
    """Nothing can be used; show ``reason``. ``credential_id`` is the one concerned, if any."""

    reason: BlockedReason
    credential_id: str | None
    events: tuple[CredentialEvent, ...] = ()


#: What :func:`decide_next_step` answers. Every variant has ``events`` to append first.
CredentialStep: TypeAlias = (
    UseCredential | ResolveModels | WaitUntil | ProvisionTrial | RotateKey | Blocked
)

_RETIRED: Final = frozenset({CredentialState.ROTATED, CredentialState.REVOKED})


# --- provisioning a trial, rotation, revocation --------------------------------------


def _claimed_trial(state: CredentialsState, installation_id: str, credential_id: str) -> TrialState:
    """The installation's trial state; a result for another id than the claimed one is refused."""
    inst = state.installations.get(installation_id)
    trial = TrialState.NOT_CLAIMED if inst is None else inst.trial
    claimed = None if inst is None else inst.trial_credential_id
    if trial is not TrialState.NOT_CLAIMED and claimed != credential_id:
        raise TrialClaimMismatch(installation_id, claimed, credential_id)
    return trial


def decide_trial_provisioned(
    state: CredentialsState, command: RecordTrialProvisioned, *, now_us: int
) -> tuple[CredentialEvent, ...]:
    """Record the claimed trial's key; only the claimed id is accepted, once (I0)."""
    check_now(now_us)
    check_metadata(command, command.metadata)
    trial = _claimed_trial(state, command.installation_id, command.credential_id)
    if trial is TrialState.PROVISIONED:
        return ()
    stream = credential_stream(command.credential_id)
    evt = TrialProvisioned(
        stream_id=stream,
        version=next_version(state, stream),
        at_us=now_us,
        credential_id=command.credential_id,
        installation_id=command.installation_id,
        metadata=command.metadata,
    )
    next_trial_state(trial, evt, command.installation_id)
    next_state(state_of(state, command.credential_id), evt, command.credential_id)
    return (evt,)


def decide_trial_failed(
    state: CredentialsState, command: RecordTrialProvisioningFailed, *, now_us: int
) -> tuple[CredentialEvent, ...]:
    """Record that the claimed trial could not be obtained; the trial stays spent."""
    check_now(now_us)
    trial = _claimed_trial(state, command.installation_id, command.credential_id)
    if trial is TrialState.FAILED:
        return ()
    stream = installation_stream(command.installation_id)
    evt = TrialProvisioningFailed(
        stream_id=stream,
        version=next_version(state, stream),
        at_us=now_us,
        installation_id=command.installation_id,
        credential_id=command.credential_id,
        http_status=command.http_status,
    )
    next_trial_state(trial, evt, command.installation_id)
    return (evt,)


def decide_rotation(
    state: CredentialsState, command: RecordRotation, *, now_us: int
) -> tuple[CredentialEvent, ...]:
    """Record a replacement key; legal only after an auth failure or expiry (the table)."""
    check_now(now_us)
    check_id(command, "successor_id", command.successor_id)
    check_metadata(command, command.metadata)
    old = credential_of(state, command.credential_id)
    if old.state is CredentialState.ROTATED and old.successor_id == command.successor_id:
        return ()
    old_stream = credential_stream(command.credential_id)
    rotated = CredentialRotated(
        stream_id=old_stream,
        version=next_version(state, old_stream),
        at_us=now_us,
        credential_id=command.credential_id,
        successor_id=command.successor_id,
    )
    next_state(old.state, rotated, command.credential_id)
    new_stream = credential_stream(command.successor_id)
    successor = CredentialReprovisioned(
        stream_id=new_stream,
        version=next_version(state, new_stream),
        at_us=now_us,
        credential_id=command.successor_id,
        installation_id=old.installation_id,
        predecessor_id=command.credential_id,
        metadata=command.metadata,
    )
    next_state(state_of(state, command.successor_id), successor, command.successor_id)
    return (rotated, successor)


def decide_revoke(
    state: CredentialsState, command: RevokeCredential, *, now_us: int
) -> tuple[CredentialEvent, ...]:
    """Revoke a key; revoking it again is a no-op."""
    check_now(now_us)
    cred = credential_of(state, command.credential_id)
    if cred.state is CredentialState.REVOKED:
        return ()
    stream = credential_stream(command.credential_id)
    evt = CredentialRevoked(
        stream_id=stream,
        version=next_version(state, stream),
        at_us=now_us,
        credential_id=command.credential_id,
    )
    next_state(cred.state, evt, command.credential_id)
    return (evt,)


# --- model resolution --------------------------------------------------------------


# --- the next step -----------------------------------------------------------------


def _decide_for(state: CredentialsState, cred: Credential, now_us: int) -> CredentialStep:
    """The next step for one provisioned credential (the rules of the module docstring)."""
    credential_id = cred.credential_id
    if cred.state is CredentialState.REVOKED:
        return Blocked(reason=BlockedReason.CREDENTIAL_REVOKED, credential_id=credential_id)
    if cred.state is CredentialState.ROTATED:
        return Blocked(reason=BlockedReason.CREDENTIAL_ROTATED, credential_id=credential_id)
    current: CredentialState = cred.state
    events: tuple[CredentialEvent, ...] = ()
    expires_at_us = cred.metadata.expires_at_us
    if (
        expires_at_us is not None
        and now_us >= expires_at_us
        and current is not CredentialState.EXPIRED
    ):
        stream = credential_stream(credential_id)
        expired = CredentialExpired(
            stream_id=stream,
            version=next_version(state, stream),
            at_us=now_us,
            credential_id=credential_id,
            expires_at_us=expires_at_us,
        )
        current = next_state(current, expired, credential_id)
        events = (expired,)
    if current in (CredentialState.AUTH_FAILED, CredentialState.EXPIRED):
        if cred.source is CredentialSource.EXPLICIT:
            # An operator key is never replaced by us, let alone by a trial.
            reason = (
                BlockedReason.OPERATOR_KEY_REJECTED
                if current is CredentialState.AUTH_FAILED
                else BlockedReason.OPERATOR_KEY_EXPIRED
            )
            return Blocked(reason=reason, credential_id=credential_id, events=events)
        if cred.generation >= KEY_RECOVERIES_MAX:
            return Blocked(
                reason=BlockedReason.KEY_RECOVERY_EXHAUSTED,
                credential_id=credential_id,
                events=events,
            )
        return RotateKey(credential_id=credential_id, events=events)
    if current is CredentialState.USABLE:
        return UseCredential(
            credential_id=credential_id, models=cred.models or frozenset(), roles=cred.roles
        )
    if current is CredentialState.RESOLUTION_FAILED:
        retry_at_us = resolve_retry_at_us(
            cred.resolution_failures, cred.last_resolution_failure_at_us or 0
        )
        if now_us < retry_at_us:
            return WaitUntil(
                credential_id=credential_id,
                until_us=retry_at_us,
                reason=BlockedReason.RESOLUTION_BACKING_OFF,
            )
    # PROVISIONED, or RESOLUTION_FAILED past its backoff: I0's heal, against the
    # stored key, never a second trial.
    return ResolveModels(credential_id=credential_id)


def _no_credential(state: CredentialsState, command: PrepareUse, now_us: int) -> CredentialStep:
    inst = state.installations.get(command.installation_id)
    if inst is not None and inst.credential_ids:
        return Blocked(reason=BlockedReason.CREDENTIAL_REVOKED, credential_id=None)
    trial = TrialState.NOT_CLAIMED if inst is None else inst.trial
    if trial is TrialState.CLAIMED:
        return Blocked(reason=BlockedReason.TRIAL_PROVISIONING_PENDING, credential_id=None)
    if trial is TrialState.FAILED:
        return Blocked(reason=BlockedReason.TRIAL_PROVISIONING_FAILED, credential_id=None)
    if command.trial_credential_id is None:
        return Blocked(reason=BlockedReason.NO_CREDENTIAL, credential_id=None)
    check_id(command, "trial_credential_id", command.trial_credential_id)
    if command.trial_credential_id in state.credentials:
        raise CommandError(command, "trial_credential_id", "is already in use")
    stream = installation_stream(command.installation_id)
    claim = TrialProvisioningDecided(
        stream_id=stream,
        version=next_version(state, stream),
        at_us=now_us,
        installation_id=command.installation_id,
        credential_id=command.trial_credential_id,
    )
    next_trial_state(trial, claim, command.installation_id)
    return ProvisionTrial(
        installation_id=command.installation_id,
        credential_id=command.trial_credential_id,
        events=(claim,),
    )


def decide_next_step(
    state: CredentialsState, command: PrepareUse, *, now_us: int
) -> CredentialStep:
    """What to do before using a credential of the installation at ``now_us`` (I0).

    With ``command.credential_id`` set, the answer is about that credential.
    Otherwise the installation's live credentials are considered, operator keys
    first (a trial never stands in for an operator key); the first one that can
    be used wins, else the first one's next step. With no credential at all, a
    trial is provisioned only if none was ever claimed.
    """
    check_now(now_us)
    check_id(command, "installation_id", command.installation_id)
    if command.credential_id is not None:
        cred = credential_of(state, command.credential_id)
        if cred.installation_id != command.installation_id:
            raise CommandError(
                command, "credential_id", f"belongs to installation {cred.installation_id!r}"
            )
        return _decide_for(state, cred, now_us)
    inst = state.installations.get(command.installation_id)
    live = [
        state.credentials[credential_id]
        for credential_id in ([] if inst is None else inst.credential_ids)
        if state.credentials[credential_id].state not in _RETIRED
    ]
    explicit = [cred for cred in live if cred.source is CredentialSource.EXPLICIT]
    pool = explicit or live
    if not pool:
        return _no_credential(state, command, now_us)
    steps = [_decide_for(state, cred, now_us) for cred in pool]
    for step in steps:
        if isinstance(step, UseCredential):
            return step
    return steps[0]
