"""The credential lifecycle state machine: rules, tables, state and fold.

Rules (incident I0, ``../shared/spec/incidents.md``)
====================================================

1. A credential is *usable* only once the model names its key accepts were
   resolved. "Key stored, models unresolved" (:attr:`CredentialState.PROVISIONED`)
   and "key stored, resolution failed, nothing known-good"
   (:attr:`CredentialState.RESOLUTION_FAILED`) are their own, visible states and
   are never usable. There is no "configured default" anywhere in this module.
   A key is rotated only after it failed authentication or expired: the table
   has no other edge into :attr:`CredentialState.ROTATED`.
2. A failed resolution never forgets a known-good set: a usable credential
   whose re-resolution fails stays usable with its last resolved names.
3. At most one trial per installation, ever, and none once an operator key was
   added. The claim (``TrialProvisioningDecided``) and every operator key
   (``OperatorKeyAdded``) are events on the ``install:<installation_id>``
   stream, so two processes racing to provision (or one provisioning a trial
   while an operator adds a key) conflict in the store; a second claim, or a
   claim after an operator key, is an illegal transition here and a second
   trial an :class:`~routeledger.core.errors.InvariantViolation` in
   :func:`check_invariants`.
4. Only auth-class failures (401/403) move a credential to
   :attr:`CredentialState.AUTH_FAILED`; budget errors and "invalid model name"
   400s never touch the lifecycle (the deciders in
   :mod:`routeledger.core.credentials.decide` enforce that).
5. Rotated and revoked keys are never used again; an expired key is unusable
   at and after its expiry time, whether or not ``CredentialExpired`` has been
   recorded yet (:func:`usability` reads ``now_us``).

Theory of operation
===================

Two small state machines, each a table (``TRANSITIONS`` for a credential on
its ``cred:<id>`` stream, ``TRIAL_TRANSITIONS`` for an installation's trial on
its ``install:<id>`` stream). :func:`evolve` looks the pair (current state,
event class) up in the table: a missing key raises :class:`IllegalTransition`
naming the event, the credential (or installation) and the state, so a log that
says something impossible fails loudly instead of being folded into nonsense.
``evolve`` otherwise only *assigns*; every business decision (should we
re-resolve, rotate, provision a trial, wait, degrade?) lives in
:mod:`routeledger.core.credentials.decide`, which reads the same tables.

The state (:class:`CredentialsState`) is a private mutable accumulator owned
by the fold: :func:`evolve` updates it in place and returns it. It also tracks
the head version of every ``cred:`` and ``install:`` stream it has seen, so
deciders stamp the next version; events of other contexts on those streams
(credential-wide availability, for instance) must therefore be folded too —
they only advance the version.

What may happen next, per state, is documented on each :class:`CredentialState`
member and drawn in ``docs/credentials.md`` (generated from ``TRANSITIONS`` by
:mod:`routeledger.core.credentials.diagram`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import attrs

from ..errors import InvariantViolation, UsageError
from ..events import Event
from ..streams import CREDENTIAL, INSTALLATION
from ..usability import CredentialUsability, UnusableReason
from .events import (
    CredentialAuthFailed,
    CredentialEvent,
    CredentialExpired,
    CredentialMetadata,
    CredentialProvisioned,
    CredentialReprovisioned,
    CredentialRevoked,
    CredentialRotated,
    ModelResolutionFailed,
    ModelsResolved,
    OperatorKeyAdded,
    RoleModel,
    TrialProvisioned,
    TrialProvisioningDecided,
    TrialProvisioningFailed,
)

__all__ = [
    "TRANSITIONS",
    "TRIAL_TRANSITIONS",
    "CredentialSource",
    "CredentialState",
    "CredentialsState",
    "IllegalTransition",
    "TrialState",
    "UnknownCredential",
    "check_invariants",
    "evolve",
    "fold",
    "initial",
    "next_state",
    "next_trial_state",
    "usability",
]


class CredentialState(enum.Enum):
    """Where one credential is in its lifecycle."""

    #: Nothing recorded under this id. Next: provisioned (explicit key, trial, or
    #: replacement of a rotated key).
    NONE = "none"
    #: Key stored, model names never resolved (I0's half-provisioned state, never
    #: usable). Next: models resolved, resolution failed, auth failed, expired,
    #: revoked.
    PROVISIONED = "provisioned"
    #: Key stored, the last resolution failed and nothing was ever resolved; never
    #: usable. Next: resolved (-> usable), failed again (backoff), auth failed,
    #: expired, revoked.
    RESOLUTION_FAILED = "resolution_failed"
    #: Models resolved: usable with exactly the resolved names (until expiry).
    #: Next: re-resolved, resolution failed (keeps the known-good set), auth
    #: failed, expired, revoked.
    USABLE = "usable"
    #: The provider rejected the key (401/403). Next: rotated (key recovery),
    #: expired, revoked.
    AUTH_FAILED = "auth_failed"
    #: Engine time reached the key's expiry. Next: rotated, revoked.
    EXPIRED = "expired"
    #: Replaced by a successor key; never used again. Next: revoked.
    ROTATED = "rotated"
    #: Revoked by an operator; terminal.
    REVOKED = "revoked"


class CredentialSource(enum.Enum):
    """Where a key came from."""

    #: Supplied by an operator; never replaced by a trial, never rotated by us.
    EXPLICIT = "explicit"
    #: The installation's one trial (or a replacement of it after key recovery).
    TRIAL = "trial"


class TrialState(enum.Enum):
    """Where an installation is with its one trial."""

    #: No trial was ever claimed, no operator key added. Next: claimed, forgone.
    NOT_CLAIMED = "not_claimed"
    #: An operator key came first: this installation never provisions a trial.
    #: Next: more operator keys only.
    FORGONE = "forgone"
    #: A process claimed the trial and is provisioning it. Next: provisioned,
    #: failed (operator keys may be added meanwhile).
    CLAIMED = "claimed"
    #: The trial key was obtained; never a second trial. Next: operator keys only.
    PROVISIONED = "provisioned"
    #: Provisioning failed; the trial is spent, an operator key is needed. Next:
    #: operator keys only.
    FAILED = "failed"


_S = CredentialState

#: Legal (state, event class) -> next state of one credential. A missing pair
#: is an :class:`IllegalTransition`.
TRANSITIONS: Final[Mapping[tuple[CredentialState, type[CredentialEvent]], CredentialState]] = {
    (_S.NONE, CredentialProvisioned): _S.PROVISIONED,
    (_S.NONE, TrialProvisioned): _S.PROVISIONED,
    (_S.NONE, CredentialReprovisioned): _S.PROVISIONED,
    (_S.PROVISIONED, ModelsResolved): _S.USABLE,
    (_S.PROVISIONED, ModelResolutionFailed): _S.RESOLUTION_FAILED,
    (_S.PROVISIONED, CredentialAuthFailed): _S.AUTH_FAILED,
    (_S.PROVISIONED, CredentialExpired): _S.EXPIRED,
    (_S.PROVISIONED, CredentialRevoked): _S.REVOKED,
    (_S.RESOLUTION_FAILED, ModelsResolved): _S.USABLE,
    (_S.RESOLUTION_FAILED, ModelResolutionFailed): _S.RESOLUTION_FAILED,
    (_S.RESOLUTION_FAILED, CredentialAuthFailed): _S.AUTH_FAILED,
    (_S.RESOLUTION_FAILED, CredentialExpired): _S.EXPIRED,
    (_S.RESOLUTION_FAILED, CredentialRevoked): _S.REVOKED,
    (_S.USABLE, ModelsResolved): _S.USABLE,
    (_S.USABLE, ModelResolutionFailed): _S.USABLE,
    (_S.USABLE, CredentialAuthFailed): _S.AUTH_FAILED,
    (_S.USABLE, CredentialExpired): _S.EXPIRED,
    (_S.USABLE, CredentialRevoked): _S.REVOKED,
    (_S.AUTH_FAILED, CredentialRotated): _S.ROTATED,
    (_S.AUTH_FAILED, CredentialExpired): _S.EXPIRED,
    (_S.AUTH_FAILED, CredentialRevoked): _S.REVOKED,
    (_S.EXPIRED, CredentialRotated): _S.ROTATED,
    (_S.EXPIRED, CredentialRevoked): _S.REVOKED,
    (_S.ROTATED, CredentialRevoked): _S.REVOKED,
}

_T = TrialState

#: Legal (trial state, event class) -> next trial state of one installation.
TRIAL_TRANSITIONS: Final[Mapping[tuple[TrialState, type[CredentialEvent]], TrialState]] = {
    (_T.NOT_CLAIMED, TrialProvisioningDecided): _T.CLAIMED,
    (_T.NOT_CLAIMED, OperatorKeyAdded): _T.FORGONE,
    (_T.FORGONE, OperatorKeyAdded): _T.FORGONE,
    (_T.CLAIMED, TrialProvisioned): _T.PROVISIONED,
    (_T.CLAIMED, TrialProvisioningFailed): _T.FAILED,
    (_T.CLAIMED, OperatorKeyAdded): _T.CLAIMED,
    (_T.PROVISIONED, OperatorKeyAdded): _T.PROVISIONED,
    (_T.FAILED, OperatorKeyAdded): _T.FAILED,
}

#: Lifecycle states that say nothing about models: the reason routing sees.
_UNUSABLE_REASON: Final[Mapping[CredentialState, UnusableReason]] = {
    _S.PROVISIONED: UnusableReason.MODELS_UNRESOLVED,
    _S.RESOLUTION_FAILED: UnusableReason.RESOLUTION_FAILED,
    _S.AUTH_FAILED: UnusableReason.AUTH_FAILED,
    _S.EXPIRED: UnusableReason.EXPIRED,
    _S.ROTATED: UnusableReason.ROTATED,
    _S.REVOKED: UnusableReason.REVOKED,
}


class IllegalTransition(UsageError, InvariantViolation):
    """An event is impossible in the current state (names event, subject and state).

    Both families: a decider raises it for a command that would make the move
    (the caller's mistake); the fold raises it for a recorded event that makes
    it (an impossible log: a RouteLedger bug), so it is caught as either.
    """

    def __init__(self, *, event_tag: str, subject: str, state: enum.Enum) -> None:
        self.event_tag = event_tag
        self.subject = subject
        self.state = state
        super().__init__(f"{event_tag} is illegal for {subject} in state {state.name}")


class UnknownCredential(UsageError):
    """A command or query names a credential that was never provisioned."""

    def __init__(self, credential_id: str) -> None:
        self.credential_id = credential_id
        super().__init__(f"credential {credential_id!r} was never provisioned")


@attrs.define(kw_only=True)
class Credential:
    """One credential's folded facts (private to the fold; read, never write)."""

    credential_id: str
    installation_id: str
    source: CredentialSource
    metadata: CredentialMetadata
    state: CredentialState = CredentialState.NONE
    #: Last resolved names; ``None`` = never resolved.
    models: frozenset[str] | None = None
    roles: tuple[RoleModel, ...] = ()
    #: Failed resolutions since the last success (drives the backoff).
    resolution_failures: int = 0
    last_resolution_failure_at_us: int | None = None
    #: 0 for an original key, predecessor's + 1 for a replacement.
    generation: int = 0
    predecessor_id: str | None = None
    successor_id: str | None = None
    provisioned_at_us: int = 0


@attrs.define(kw_only=True)
class Installation:
    """One installation's folded facts (private to the fold)."""

    installation_id: str
    trial: TrialState = TrialState.NOT_CLAIMED
    trial_credential_id: str | None = None
    trial_claimed_at_us: int | None = None
    #: Every ``TrialProvisioningDecided`` / ``TrialProvisioned`` ever folded.
    trial_claims: int = 0
    trials_provisioned: int = 0
    #: Credential ids in provisioning order.
    credential_ids: list[str] = attrs.Factory(list)


@attrs.define(kw_only=True)
class CredentialsState:
    """Everything the credential deciders need, folded from the log."""

    credentials: dict[str, Credential] = attrs.Factory(dict)
    installations: dict[str, Installation] = attrs.Factory(dict)
    #: Head version of every ``cred:`` / ``install:`` stream seen.
    stream_versions: dict[str, int] = attrs.Factory(dict)


def initial() -> CredentialsState:
    """A fresh, empty state."""
    return CredentialsState()


_St = TypeVar("_St", CredentialState, TrialState)


def _next(
    table: Mapping[tuple[_St, type[CredentialEvent]], _St],
    current: _St,
    evt: CredentialEvent,
    subject: str,
) -> _St:
    try:
        return table[current, type(evt)]
    except KeyError:
        raise IllegalTransition(event_tag=type(evt).TAG, subject=subject, state=current) from None


def next_state(
    current: CredentialState, evt: CredentialEvent, credential_id: str
) -> CredentialState:
    """The credential state after ``evt``, or :class:`IllegalTransition`."""
    return _next(TRANSITIONS, current, evt, f"credential {credential_id!r}")


def next_trial_state(current: TrialState, evt: CredentialEvent, installation_id: str) -> TrialState:
    """The trial state after ``evt``, or :class:`IllegalTransition`."""
    return _next(TRIAL_TRANSITIONS, current, evt, f"installation {installation_id!r}")


def _installation(state: CredentialsState, installation_id: str) -> Installation:
    found = state.installations.get(installation_id)
    if found is None:
        found = state.installations[installation_id] = Installation(installation_id=installation_id)
    return found


def _credential(state: CredentialsState, evt: CredentialEvent, credential_id: str) -> Credential:
    found = state.credentials.get(credential_id)
    if found is None:
        # Only provisioning events may start a credential: anything else is
        # illegal in NONE, named as such.
        raise IllegalTransition(
            event_tag=type(evt).TAG,
            subject=f"credential {credential_id!r}",
            state=CredentialState.NONE,
        )
    return found


def _add(
    state: CredentialsState,
    evt: CredentialProvisioned | TrialProvisioned | CredentialReprovisioned,
    source: CredentialSource,
) -> Credential:
    existing = state.credentials.get(evt.credential_id)
    current = CredentialState.NONE if existing is None else existing.state
    after = next_state(current, evt, evt.credential_id)
    cred = Credential(
        credential_id=evt.credential_id,
        installation_id=evt.installation_id,
        source=source,
        metadata=evt.metadata,
        state=after,
        provisioned_at_us=evt.at_us,
    )
    state.credentials[evt.credential_id] = cred
    _installation(state, evt.installation_id).credential_ids.append(evt.credential_id)
    return cred


def _on_provisioned(state: CredentialsState, evt: CredentialProvisioned) -> None:
    _add(state, evt, CredentialSource.EXPLICIT)


def _on_trial_decided(state: CredentialsState, evt: TrialProvisioningDecided) -> None:
    inst = _installation(state, evt.installation_id)
    inst.trial = next_trial_state(inst.trial, evt, evt.installation_id)
    inst.trial_credential_id = evt.credential_id
    inst.trial_claimed_at_us = evt.at_us
    inst.trial_claims += 1


def _on_operator_key_added(state: CredentialsState, evt: OperatorKeyAdded) -> None:
    inst = _installation(state, evt.installation_id)
    inst.trial = next_trial_state(inst.trial, evt, evt.installation_id)


def _on_trial_failed(state: CredentialsState, evt: TrialProvisioningFailed) -> None:
    inst = _installation(state, evt.installation_id)
    inst.trial = next_trial_state(inst.trial, evt, evt.installation_id)


def _on_trial_provisioned(state: CredentialsState, evt: TrialProvisioned) -> None:
    inst = _installation(state, evt.installation_id)
    trial_after = next_trial_state(inst.trial, evt, evt.installation_id)
    _add(state, evt, CredentialSource.TRIAL)
    inst.trial = trial_after
    inst.trials_provisioned += 1


def _on_reprovisioned(state: CredentialsState, evt: CredentialReprovisioned) -> None:
    predecessor = state.credentials.get(evt.predecessor_id)
    if predecessor is None:
        raise UnknownCredential(evt.predecessor_id)
    cred = _add(state, evt, predecessor.source)
    cred.generation = predecessor.generation + 1
    cred.predecessor_id = evt.predecessor_id


def _on_resolved(state: CredentialsState, evt: ModelsResolved) -> None:
    cred = _credential(state, evt, evt.credential_id)
    cred.state = next_state(cred.state, evt, evt.credential_id)
    cred.models = evt.models
    cred.roles = evt.roles
    cred.resolution_failures = 0
    cred.last_resolution_failure_at_us = None


def _on_resolution_failed(state: CredentialsState, evt: ModelResolutionFailed) -> None:
    cred = _credential(state, evt, evt.credential_id)
    cred.state = next_state(cred.state, evt, evt.credential_id)
    cred.resolution_failures += 1
    cred.last_resolution_failure_at_us = evt.at_us


def _on_rotated(state: CredentialsState, evt: CredentialRotated) -> None:
    cred = _credential(state, evt, evt.credential_id)
    cred.state = next_state(cred.state, evt, evt.credential_id)
    cred.successor_id = evt.successor_id


def _on_simple(
    state: CredentialsState, evt: CredentialAuthFailed | CredentialExpired | CredentialRevoked
) -> None:
    cred = _credential(state, evt, evt.credential_id)
    cred.state = next_state(cred.state, evt, evt.credential_id)


#: Each handler takes the event class it is registered for.
_Apply = Callable[[CredentialsState, Any], None]

#: How each event class updates the state (after its stream version is recorded).
_APPLY: Final[Mapping[type[Event], _Apply]] = {
    CredentialProvisioned: _on_provisioned,
    OperatorKeyAdded: _on_operator_key_added,
    TrialProvisioningDecided: _on_trial_decided,
    TrialProvisioningFailed: _on_trial_failed,
    TrialProvisioned: _on_trial_provisioned,
    CredentialReprovisioned: _on_reprovisioned,
    ModelsResolved: _on_resolved,
    ModelResolutionFailed: _on_resolution_failed,
    CredentialRotated: _on_rotated,
    CredentialAuthFailed: _on_simple,
    CredentialExpired: _on_simple,
    CredentialRevoked: _on_simple,
}

_TRACKED_PREFIXES: Final = (CREDENTIAL, INSTALLATION)


def evolve(state: CredentialsState, evt: Event) -> CredentialsState:
    """Apply one event (in place) and return the state.

    Events of other contexts only advance the version of a ``cred:`` or
    ``install:`` stream they were appended to; everything else ignores them.
    """
    apply = _APPLY.get(type(evt))
    if apply is not None:
        apply(state, evt)
    if evt.stream_id.startswith(_TRACKED_PREFIXES):
        state.stream_versions[evt.stream_id] = evt.version
    return state


def fold(events: Iterable[Event], state: CredentialsState | None = None) -> CredentialsState:
    """Fold ``events`` into ``state`` (a fresh one by default)."""
    result = initial() if state is None else state
    for evt in events:
        result = evolve(result, evt)
    return result


def check_invariants(state: CredentialsState) -> None:
    """Raise :class:`InvariantViolation` if the folded state breaks a rule of I0."""
    for inst in state.installations.values():
        if inst.trial_claims > 1 or inst.trials_provisioned > 1:
            raise InvariantViolation(
                f"I0: installation {inst.installation_id!r} claimed {inst.trial_claims} and "
                f"provisioned {inst.trials_provisioned} trials; at most one is allowed, ever"
            )
    for cred in state.credentials.values():
        if cred.source is CredentialSource.TRIAL and cred.predecessor_id is None:
            inst = state.installations[cred.installation_id]
            if inst.trial_credential_id != cred.credential_id:
                raise InvariantViolation(
                    f"I0: trial credential {cred.credential_id!r} was never claimed by "
                    f"installation {cred.installation_id!r}"
                )
        if cred.state is CredentialState.USABLE and not cred.models:
            raise InvariantViolation(
                f"I0: credential {cred.credential_id!r} is usable without resolved models"
            )
        if cred.models is not None and not {r.model for r in cred.roles} <= cred.models:
            raise InvariantViolation(
                f"I0: credential {cred.credential_id!r} maps a role to an unresolved model"
            )


def usability(state: CredentialsState, now_us: int) -> Mapping[str, CredentialUsability]:
    """What routing may use at ``now_us``, keyed by credential id (see ``core.usability``).

    Only :attr:`CredentialState.USABLE` credentials before their expiry are
    usable, and only with their resolved names; every other state carries its
    reason (``model_problem`` answers with it whatever the name), so no
    configured default can slip through.
    """
    views: dict[str, CredentialUsability] = {}
    for cred in state.credentials.values():
        expires_at_us = cred.metadata.expires_at_us
        reason = _UNUSABLE_REASON.get(cred.state)
        if expires_at_us is not None and now_us >= expires_at_us and reason is None:
            reason = UnusableReason.EXPIRED
        views[cred.credential_id] = CredentialUsability(
            credential_id=cred.credential_id,
            unusable=reason,
            resolved_models=cred.models,
            validates_model_names=cred.metadata.validates_model_names,
        )
    return views
