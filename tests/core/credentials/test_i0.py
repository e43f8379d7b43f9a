"""I0 end to end on the core API, and its guards."""

from __future__ import annotations

import pytest

from routeledger.core.credentials import (
    Blocked,
    BlockedReason,
    CredentialFailure,
    CredentialState,
    InMemorySecretStore,
    PrepareUse,
    ProvisionExplicitKey,
    ProvisionTrial,
    RecordFailure,
    RecordModelsResolved,
    RecordResolutionFailed,
    RecordRotation,
    RecordTrialProvisioned,
    ResolutionFailure,
    ResolveModels,
    RoleModel,
    RotateKey,
    UseCredential,
    WaitUntil,
    decide_failure,
    decide_models_resolved,
    decide_next_step,
    decide_provision_explicit,
    decide_resolution_failed,
    decide_rotation,
    decide_trial_provisioned,
    usability,
)
from routeledger.core.credentials.decide import RESOLVE_BACKOFF_US_MIN
from routeledger.core.credentials.events import (
    CredentialRotated,
    TrialProvisioned,
    TrialProvisioningDecided,
)
from routeledger.core.time import US_PER_S
from routeledger.core.usability import UnusableReason, model_problem

from .support import DATED_DEFAULT, INSTALL, T0, Log, StaleVersion, meta

RESOLVED = frozenset({"claude-sonnet-4-5", "claude-haiku-4-5"})
ROLES = (
    RoleModel(role="main", model="claude-sonnet-4-5"),
    RoleModel(role="summary", model="claude-haiku-4-5"),
)
TRIAL_SECRET = "sk-trial-0123456789abcdef"


def _provision_trial(log: Log, secrets: InMemorySecretStore, now_us: int) -> str:
    """Drive the adapter side of a trial: claim, store the key, record it."""
    step = decide_next_step(
        log.state, PrepareUse(installation_id=INSTALL, trial_credential_id="trial-1"), now_us=now_us
    )
    assert isinstance(step, ProvisionTrial)
    log.append(step.events)
    secrets.put(step.credential_id, TRIAL_SECRET)
    log.append(
        decide_trial_provisioned(
            log.state,
            RecordTrialProvisioned(
                installation_id=INSTALL, credential_id=step.credential_id, metadata=meta()
            ),
            now_us=now_us,
        )
    )
    return step.credential_id


def _usable_trial(log: Log, secrets: InMemorySecretStore) -> str:
    credential_id = _provision_trial(log, secrets, T0)
    log.append(
        decide_models_resolved(
            log.state,
            RecordModelsResolved(credential_id=credential_id, models=RESOLVED, roles=ROLES),
            now_us=T0,
        )
    )
    return credential_id


def test_i0_half_provisioned_trial_heals_by_re_resolving_against_the_stored_key() -> None:
    """I0: a failed listing heals by re-resolving the stored key; one trial; resolved names only."""
    log, secrets = Log(), InMemorySecretStore()
    credential_id = _provision_trial(log, secrets, T0)
    # The listing fails, as in I0, and is reported as "no models".
    log.append(
        decide_models_resolved(
            log.state,
            RecordModelsResolved(credential_id=credential_id, models=frozenset()),
            now_us=T0,
        )
    )
    # Credentials stored, models unresolved: a visible state, not usable.
    assert secrets.get(credential_id) == TRIAL_SECRET
    assert log.state.credentials[credential_id].state is CredentialState.RESOLUTION_FAILED
    view = usability(log.state, T0)[credential_id]
    assert view.unusable is UnusableReason.RESOLUTION_FAILED
    assert model_problem(view, DATED_DEFAULT) is UnusableReason.RESOLUTION_FAILED

    # The next use: re-resolve against the stored key (after the backoff), never a trial.
    later = T0 + RESOLVE_BACKOFF_US_MIN
    command = PrepareUse(installation_id=INSTALL, trial_credential_id="trial-2")
    step = decide_next_step(log.state, command, now_us=later)
    assert step == ResolveModels(credential_id=credential_id)
    assert secrets.get(step.credential_id) == TRIAL_SECRET
    log.append(
        decide_models_resolved(
            log.state,
            RecordModelsResolved(credential_id=credential_id, models=RESOLVED, roles=ROLES),
            now_us=later,
        )
    )

    step = decide_next_step(log.state, command, now_us=later)
    assert isinstance(step, UseCredential)
    assert step.models == RESOLVED
    assert {r.role: r.model for r in step.roles}["main"] == "claude-sonnet-4-5"
    assert sum(isinstance(e, TrialProvisioned) for e in log.events) == 1
    assert sum(isinstance(e, TrialProvisioningDecided) for e in log.events) == 1
    view = usability(log.state, later)[credential_id]
    assert model_problem(view, "claude-sonnet-4-5") is None
    assert model_problem(view, DATED_DEFAULT) is UnusableReason.MODEL_NOT_RESOLVED


def test_i0_resolution_backs_off_instead_of_hammering_the_listing() -> None:
    """I0: during the backoff the decision is "wait until T", and T doubles per failure."""
    log, secrets = Log(), InMemorySecretStore()
    credential_id = _provision_trial(log, secrets, T0)
    command = PrepareUse(installation_id=INSTALL)
    waits = []
    now_us = T0
    for _ in range(3):
        log.append(
            decide_resolution_failed(
                log.state,
                RecordResolutionFailed(
                    credential_id=credential_id, reason=ResolutionFailure.UNREACHABLE
                ),
                now_us=now_us,
            )
        )
        step = decide_next_step(log.state, command, now_us=now_us)
        assert isinstance(step, WaitUntil)
        assert step.reason is BlockedReason.RESOLUTION_BACKING_OFF
        waits.append(step.until_us - now_us)
        now_us = step.until_us
        assert decide_next_step(log.state, command, now_us=now_us) == ResolveModels(
            credential_id=credential_id
        )
    assert waits == [1 * US_PER_S, 2 * US_PER_S, 4 * US_PER_S]


def test_i0_no_re_resolution_when_models_are_resolved() -> None:
    """I0 guard: a usable credential is used as is; no resolution is decided."""
    log, secrets = Log(), InMemorySecretStore()
    credential_id = _usable_trial(log, secrets)
    for offset in (0, 1, 3600 * US_PER_S):
        step = decide_next_step(log.state, PrepareUse(installation_id=INSTALL), now_us=T0 + offset)
        assert step == UseCredential(credential_id=credential_id, models=RESOLVED, roles=ROLES)


def test_i0_explicit_key_is_never_replaced_by_a_trial() -> None:
    """I0 guard: an operator key, even rejected or expired, is never rotated or trial-replaced."""
    log = Log()
    log.append(
        decide_provision_explicit(
            log.state,
            ProvisionExplicitKey(
                installation_id=INSTALL,
                credential_id="op-1",
                metadata=meta(expires_at_us=T0 + 10 * US_PER_S),
            ),
            now_us=T0,
        )
    )
    command = PrepareUse(installation_id=INSTALL, trial_credential_id="trial-1")
    assert decide_next_step(log.state, command, now_us=T0) == ResolveModels(credential_id="op-1")
    log.append(
        decide_failure(
            log.state,
            RecordFailure(credential_id="op-1", failure=CredentialFailure.AUTH, http_status=401),
            now_us=T0,
        )
    )
    step = decide_next_step(log.state, command, now_us=T0)
    assert step == Blocked(reason=BlockedReason.OPERATOR_KEY_REJECTED, credential_id="op-1")
    step = decide_next_step(log.state, command, now_us=T0 + 10 * US_PER_S)
    assert isinstance(step, Blocked)
    assert step.reason is BlockedReason.OPERATOR_KEY_EXPIRED
    log.append(step.events)
    assert not any(isinstance(e, TrialProvisioningDecided) for e in log.events)


def test_i0_auth_failure_triggers_rotation_of_a_trial_key() -> None:
    """I0: a 401 on the trial key decides key recovery; the replacement needs resolving again."""
    log, secrets = Log(), InMemorySecretStore()
    credential_id = _usable_trial(log, secrets)
    log.append(
        decide_failure(
            log.state,
            RecordFailure(credential_id=credential_id, failure=CredentialFailure.AUTH),
            now_us=T0,
        )
    )
    command = PrepareUse(installation_id=INSTALL, trial_credential_id="trial-2")
    assert decide_next_step(log.state, command, now_us=T0) == RotateKey(credential_id=credential_id)
    secrets.put("trial-1b", "sk-replacement-key-000000")
    log.append(
        decide_rotation(
            log.state,
            RecordRotation(credential_id=credential_id, successor_id="trial-1b", metadata=meta()),
            now_us=T0,
        )
    )
    assert decide_next_step(log.state, command, now_us=T0) == ResolveModels(
        credential_id="trial-1b"
    )
    views = usability(log.state, T0)
    assert views[credential_id].unusable is UnusableReason.ROTATED
    assert views["trial-1b"].unusable is UnusableReason.MODELS_UNRESOLVED
    assert sum(isinstance(e, CredentialRotated) for e in log.events) == 1
    assert sum(isinstance(e, TrialProvisioned) for e in log.events) == 1


def test_i0_budget_and_invalid_model_failures_never_trigger_key_recovery() -> None:
    """I0: budget errors and "invalid model name" 400s record nothing; the key stays usable."""
    log, secrets = Log(), InMemorySecretStore()
    credential_id = _usable_trial(log, secrets)
    for failure, status in (
        (CredentialFailure.BUDGET, 403),
        (CredentialFailure.BUDGET, 429),
        (CredentialFailure.INVALID_MODEL, 400),
        (CredentialFailure.OTHER, 500),
    ):
        command = RecordFailure(credential_id=credential_id, failure=failure, http_status=status)
        assert decide_failure(log.state, command, now_us=T0) == ()
    step = decide_next_step(log.state, PrepareUse(installation_id=INSTALL), now_us=T0)
    assert isinstance(step, UseCredential)


def test_i0_at_most_one_trial_even_when_two_processes_race() -> None:
    """I0: two racing processes both claim install:<id> v1; the store keeps exactly one claim."""
    log = Log()
    first = decide_next_step(
        log.state, PrepareUse(installation_id=INSTALL, trial_credential_id="a"), now_us=T0
    )
    second = decide_next_step(
        log.state, PrepareUse(installation_id=INSTALL, trial_credential_id="b"), now_us=T0
    )
    assert isinstance(first, ProvisionTrial)
    assert isinstance(second, ProvisionTrial)
    assert first.events[0].stream_id == second.events[0].stream_id == f"install:{INSTALL}"
    log.append(first.events)
    with pytest.raises(StaleVersion):
        log.append(second.events)
    # Re-deciding after the conflict never claims again.
    again = decide_next_step(
        log.state, PrepareUse(installation_id=INSTALL, trial_credential_id="b"), now_us=T0
    )
    assert again == Blocked(reason=BlockedReason.TRIAL_PROVISIONING_PENDING, credential_id=None)
