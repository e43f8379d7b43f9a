"""Given/when/then on each decider, with idempotent re-runs (X1) and precise errors."""

from __future__ import annotations

import attrs
import pytest

from routeledger.core.credentials import (
    Blocked,
    BlockedReason,
    CredentialFailure,
    CredentialState,
    IllegalTransition,
    PrepareUse,
    ProvisionExplicitKey,
    ProvisionTrial,
    RecordFailure,
    RecordModelsResolved,
    RecordResolutionFailed,
    RecordRotation,
    RecordTrialProvisioned,
    RecordTrialProvisioningFailed,
    ResolutionFailure,
    ResolveModels,
    RevokeCredential,
    RoleModel,
    RotateKey,
    UnknownCredential,
    UseCredential,
    check_invariants,
    decide_failure,
    decide_models_resolved,
    decide_next_step,
    decide_provision_explicit,
    decide_resolution_failed,
    decide_revoke,
    decide_rotation,
    decide_trial_failed,
    decide_trial_provisioned,
    evolve,
    fold,
    usability,
)
from routeledger.core.credentials.decide import (
    RESOLVE_BACKOFF_US_MAX,
    RESOLVE_BACKOFF_US_MIN,
    resolve_retry_at_us,
)
from routeledger.core.credentials.events import ModelResolutionFailed
from routeledger.core.credentials.healing import KEY_RECOVERIES_MAX, TrialClaimMismatch
from routeledger.core.credentials.validate import MODELS_PER_CREDENTIAL_MAX, ROLES_MAX
from routeledger.core.errors import CommandError, InvariantViolation, UsageError
from routeledger.core.events import Event, Origin, event
from routeledger.core.streams import CREDENTIAL_ID_LENGTH_MAX, MODEL_NAME_LENGTH_MAX
from routeledger.core.time import US_PER_S
from routeledger.core.usability import UnusableReason

from .support import INSTALL, T0, Log, meta


def _explicit(log: Log, credential_id: str = "op-1", **changes: object) -> None:
    command = ProvisionExplicitKey(
        installation_id=INSTALL, credential_id=credential_id, metadata=meta(**changes)
    )
    log.append(decide_provision_explicit(log.state, command, now_us=T0))


def _resolve(log: Log, credential_id: str, *models: str, now_us: int = T0) -> None:
    command = RecordModelsResolved(credential_id=credential_id, models=frozenset(models))
    log.append(decide_models_resolved(log.state, command, now_us=now_us))


def _trial(log: Log, credential_id: str = "trial-1") -> None:
    step = decide_next_step(
        log.state,
        PrepareUse(installation_id=INSTALL, trial_credential_id=credential_id),
        now_us=T0,
    )
    assert isinstance(step, ProvisionTrial)
    log.append(step.events)
    command = RecordTrialProvisioned(
        installation_id=INSTALL, credential_id=credential_id, metadata=meta()
    )
    log.append(decide_trial_provisioned(log.state, command, now_us=T0))


def _auth_fail(log: Log, credential_id: str) -> None:
    command = RecordFailure(credential_id=credential_id, failure=CredentialFailure.AUTH)
    log.append(decide_failure(log.state, command, now_us=T0))


# --- provisioning ------------------------------------------------------------------


def test_explicit_provisioning_is_idempotent_and_conflicts_are_precise() -> None:
    """X1: re-provisioning the same operator key is a no-op; other metadata is illegal."""
    log = Log()
    _explicit(log)
    command = ProvisionExplicitKey(installation_id=INSTALL, credential_id="op-1", metadata=meta())
    assert decide_provision_explicit(log.state, command, now_us=T0) == ()
    changed = attrs.evolve(command, metadata=meta(region="us"))
    with pytest.raises(IllegalTransition, match=r"CredentialProvisioned.*'op-1'.*PROVISIONED"):
        decide_provision_explicit(log.state, changed, now_us=T0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("credential_id", "", "non-empty"),
        ("credential_id", "x" * (CREDENTIAL_ID_LENGTH_MAX + 1), "longer than"),
        ("credential_id", "a:b", "':'"),
        ("credential_id", "a b", "':'"),
        ("installation_id", 7, "non-empty"),
    ],
)
def test_ids_are_validated(field: str, value: object, message: str) -> None:
    """X3: caller ids must fit a stream id: non-empty, short, no ':' and no spaces."""
    command = ProvisionExplicitKey(installation_id=INSTALL, credential_id="op-1", metadata=meta())
    with pytest.raises(CommandError, match=message) as caught:
        decide_provision_explicit(Log().state, attrs.evolve(command, **{field: value}), now_us=T0)
    assert caught.value.field == field
    assert caught.value.command_name == "ProvisionExplicitKey"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"provider": ""}, "provider"),
        ({"base_url": "ftp://host"}, "http"),
        ({"base_url": "https://"}, "http"),
        ({"base_url": "https://user:sk-secret@host"}, "userinfo"),
        ({"base_url": "https://host/v1?api_key=sk-secret"}, "userinfo"),
        ({"base_url": "https://host/v1#frag"}, "userinfo"),
        ({"expires_at_us": -1}, "expires_at_us"),
    ],
)
def test_metadata_that_could_carry_a_secret_is_refused(
    changes: dict[str, object], message: str
) -> None:
    """E1: a base URL with userinfo or a query (a key's favourite hiding places) is refused."""
    command = ProvisionExplicitKey(
        installation_id=INSTALL, credential_id="op-1", metadata=meta(**changes)
    )
    with pytest.raises(CommandError, match=message) as caught:
        decide_provision_explicit(Log().state, command, now_us=T0)
    assert "sk-secret" not in str(caught.value)


def test_now_must_be_engine_time() -> None:
    """T1: every decider refuses a now_us that is not engine time."""
    command = PrepareUse(installation_id=INSTALL)
    with pytest.raises(UsageError, match="now_us"):
        decide_next_step(Log().state, command, now_us=-1)


def test_trial_outcomes_must_match_the_claim_and_are_idempotent() -> None:
    """I0: only the claimed credential id can become the trial, once; re-runs are no-ops."""
    log = Log()
    _trial(log)
    same = RecordTrialProvisioned(installation_id=INSTALL, credential_id="trial-1", metadata=meta())
    assert decide_trial_provisioned(log.state, same, now_us=T0) == ()
    other = attrs.evolve(same, credential_id="trial-2")
    with pytest.raises(TrialClaimMismatch, match=r"'trial-1'.*'trial-2'"):
        decide_trial_provisioned(log.state, other, now_us=T0)
    failed = RecordTrialProvisioningFailed(
        installation_id=INSTALL, credential_id="trial-2", http_status=None
    )
    with pytest.raises(TrialClaimMismatch):
        decide_trial_failed(log.state, failed, now_us=T0)
    with pytest.raises(IllegalTransition, match=r"TrialProvisioningFailed.*PROVISIONED"):
        decide_trial_failed(log.state, attrs.evolve(failed, credential_id="trial-1"), now_us=T0)


def test_an_unclaimed_trial_cannot_be_recorded() -> None:
    """I0: recording a trial nobody claimed is an illegal transition of the installation."""
    command = RecordTrialProvisioned(installation_id=INSTALL, credential_id="t", metadata=meta())
    with pytest.raises(IllegalTransition, match=r"TrialProvisioned.*'inst-1'.*NOT_CLAIMED"):
        decide_trial_provisioned(Log().state, command, now_us=T0)


def test_a_failed_trial_is_spent_for_good() -> None:
    """I0: after a failed trial the answer is a typed degrade, never a second trial."""
    log = Log()
    step = decide_next_step(
        log.state, PrepareUse(installation_id=INSTALL, trial_credential_id="t1"), now_us=T0
    )
    log.append(step.events)
    failed = RecordTrialProvisioningFailed(
        installation_id=INSTALL, credential_id="t1", http_status=503
    )
    log.append(decide_trial_failed(log.state, failed, now_us=T0))
    assert decide_trial_failed(log.state, failed, now_us=T0) == ()
    step = decide_next_step(
        log.state, PrepareUse(installation_id=INSTALL, trial_credential_id="t2"), now_us=T0
    )
    assert step == Blocked(reason=BlockedReason.TRIAL_PROVISIONING_FAILED, credential_id=None)


def test_without_credentials_and_without_trials_the_answer_is_no_credential() -> None:
    """I0: no credential and trials not allowed -> a typed degrade, not a default."""
    step = decide_next_step(Log().state, PrepareUse(installation_id=INSTALL), now_us=T0)
    assert step == Blocked(reason=BlockedReason.NO_CREDENTIAL, credential_id=None)


def test_a_trial_id_already_used_elsewhere_is_refused() -> None:
    """X3: the trial id must be new, and a named credential must belong to the installation."""
    log = Log()
    command = ProvisionExplicitKey(installation_id="other", credential_id="op-9", metadata=meta())
    log.append(decide_provision_explicit(log.state, command, now_us=T0))
    with pytest.raises(CommandError, match="belongs to installation 'other'"):
        decide_next_step(
            log.state, PrepareUse(installation_id=INSTALL, credential_id="op-9"), now_us=T0
        )
    with pytest.raises(CommandError, match="already in use"):
        decide_next_step(
            log.state, PrepareUse(installation_id=INSTALL, trial_credential_id="op-9"), now_us=T0
        )


def test_an_operator_key_forgoes_the_trial_even_after_revocation() -> None:
    """I0: once an operator key was added, revoking it never leads to a trial."""
    log = Log()
    _explicit(log)
    log.append(decide_revoke(log.state, RevokeCredential(credential_id="op-1"), now_us=T0))
    assert decide_revoke(log.state, RevokeCredential(credential_id="op-1"), now_us=T0) == ()
    step = decide_next_step(
        log.state, PrepareUse(installation_id=INSTALL, trial_credential_id="t"), now_us=T0
    )
    assert step == Blocked(reason=BlockedReason.CREDENTIAL_REVOKED, credential_id=None)
    named = PrepareUse(installation_id=INSTALL, credential_id="op-1")
    assert decide_next_step(log.state, named, now_us=T0) == Blocked(
        reason=BlockedReason.CREDENTIAL_REVOKED, credential_id="op-1"
    )


# --- resolution --------------------------------------------------------------------


def test_models_resolved_is_idempotent_and_resets_the_backoff() -> None:
    """X1, I0: the same listing twice records once; a success after failures is recorded."""
    log = Log()
    _explicit(log)
    _resolve(log, "op-1", "m")
    before = len(log.events)
    _resolve(log, "op-1", "m")
    assert len(log.events) == before
    failure = RecordResolutionFailed(credential_id="op-1", reason=ResolutionFailure.UNREADABLE)
    log.append(decide_resolution_failed(log.state, failure, now_us=T0))
    assert log.state.credentials["op-1"].state is CredentialState.USABLE
    assert usability(log.state, T0)["op-1"].resolved_models == frozenset({"m"})
    _resolve(log, "op-1", "m")
    assert len(log.events) == before + 2
    assert log.state.credentials["op-1"].resolution_failures == 0


def test_an_empty_listing_is_a_failure() -> None:
    """I0: "no models" is recorded as ModelResolutionFailed(empty_listing), never as success."""
    log = Log()
    _explicit(log)
    _resolve(log, "op-1")
    last = log.events[-1]
    assert isinstance(last, ModelResolutionFailed)
    assert last.reason is ResolutionFailure.EMPTY_LISTING


@pytest.mark.parametrize(
    ("models", "roles", "message"),
    [
        (frozenset(f"m{i}" for i in range(MODELS_PER_CREDENTIAL_MAX + 1)), (), "more than"),
        (frozenset({"x" * (MODEL_NAME_LENGTH_MAX + 1)}), (), "1..128"),
        (frozenset({""}), (), "1..128"),
        (
            frozenset({"m"}),
            tuple(RoleModel(role=f"r{i}", model="m") for i in range(ROLES_MAX + 1)),
            "more than",
        ),
        (frozenset({"m"}), (RoleModel(role="", model="m"),), "empty or repeated"),
        (
            frozenset({"m"}),
            (RoleModel(role="main", model="m"), RoleModel(role="main", model="m")),
            "empty or repeated",
        ),
        (frozenset({"m"}), (RoleModel(role="main", model="dated-default"),), "unresolved"),
    ],
)
def test_listings_and_role_maps_are_validated(
    models: frozenset[str], roles: tuple[RoleModel, ...], message: str
) -> None:
    """I0: limits hold, and a role can only map to a resolved name."""
    log = Log()
    _explicit(log)
    command = RecordModelsResolved(credential_id="op-1", models=models, roles=roles)
    with pytest.raises(CommandError, match=message):
        decide_models_resolved(log.state, command, now_us=T0)


def test_roles_are_recorded_sorted() -> None:
    """D1: the role mapping is stored sorted by role, whatever order the adapter used."""
    log = Log()
    _explicit(log)
    roles = (RoleModel(role="summary", model="b"), RoleModel(role="main", model="a"))
    command = RecordModelsResolved(credential_id="op-1", models=frozenset({"a", "b"}), roles=roles)
    (evt, *_) = decide_models_resolved(log.state, command, now_us=T0)
    assert evt.roles == tuple(reversed(roles))  # type: ignore[attr-defined]


def test_backoff_is_bounded() -> None:
    """I0: the resolution backoff doubles from its minimum and never exceeds its maximum."""
    assert resolve_retry_at_us(1, T0) == T0 + RESOLVE_BACKOFF_US_MIN
    assert resolve_retry_at_us(2, T0) == T0 + 2 * RESOLVE_BACKOFF_US_MIN
    assert resolve_retry_at_us(10**9, T0) == T0 + RESOLVE_BACKOFF_US_MAX


def test_unknown_credentials_are_usage_errors() -> None:
    """Errors: commands and queries about never-provisioned credentials name the id."""
    state = Log().state
    with pytest.raises(UnknownCredential, match="'ghost'"):
        decide_failure(
            state,
            RecordFailure(credential_id="ghost", failure=CredentialFailure.AUTH),
            now_us=T0,
        )
    with pytest.raises(UnknownCredential, match="'ghost'"):
        decide_next_step(
            state, PrepareUse(installation_id=INSTALL, credential_id="ghost"), now_us=T0
        )


# --- key recovery ------------------------------------------------------------------


def test_auth_failures_are_recorded_once() -> None:
    """X1, I0: a second 401 on a rejected key, or one on a rotated key, records nothing."""
    log = Log()
    _trial(log)
    _auth_fail(log, "trial-1")
    command = RecordFailure(credential_id="trial-1", failure=CredentialFailure.AUTH)
    assert decide_failure(log.state, command, now_us=T0) == ()


def test_rotation_only_after_auth_failure_or_expiry_and_is_idempotent() -> None:
    """I0: a usable key cannot be rotated; a recorded rotation re-run is a no-op."""
    log = Log()
    _trial(log)
    rotation = RecordRotation(credential_id="trial-1", successor_id="trial-1b", metadata=meta())
    with pytest.raises(IllegalTransition, match=r"CredentialRotated.*'trial-1'.*PROVISIONED"):
        decide_rotation(log.state, rotation, now_us=T0)
    _auth_fail(log, "trial-1")
    log.append(decide_rotation(log.state, rotation, now_us=T0))
    assert decide_rotation(log.state, rotation, now_us=T0) == ()
    named = PrepareUse(installation_id=INSTALL, credential_id="trial-1")
    assert decide_next_step(log.state, named, now_us=T0) == Blocked(
        reason=BlockedReason.CREDENTIAL_ROTATED, credential_id="trial-1"
    )
    assert log.state.credentials["trial-1b"].generation == 1


def test_key_recovery_gives_up_after_the_limit() -> None:
    """I0: after KEY_RECOVERIES_MAX replacements in a row the answer is a typed degrade."""
    log = Log()
    _trial(log)
    current = "trial-1"
    for index in range(KEY_RECOVERIES_MAX):
        _auth_fail(log, current)
        step = decide_next_step(log.state, PrepareUse(installation_id=INSTALL), now_us=T0)
        assert step == RotateKey(credential_id=current)
        successor = f"trial-1-{index}"
        command = RecordRotation(credential_id=current, successor_id=successor, metadata=meta())
        log.append(decide_rotation(log.state, command, now_us=T0))
        current = successor
    _auth_fail(log, current)
    step = decide_next_step(log.state, PrepareUse(installation_id=INSTALL), now_us=T0)
    assert step == Blocked(reason=BlockedReason.KEY_RECOVERY_EXHAUSTED, credential_id=current)


def test_an_expired_trial_key_is_recorded_and_recovered() -> None:
    """I0: at its expiry a trial key is unusable, CredentialExpired is decided, recovery follows."""
    log = Log()
    step = decide_next_step(
        log.state, PrepareUse(installation_id=INSTALL, trial_credential_id="t"), now_us=T0
    )
    log.append(step.events)
    expiry = T0 + 60 * US_PER_S
    command = RecordTrialProvisioned(
        installation_id=INSTALL, credential_id="t", metadata=meta(expires_at_us=expiry)
    )
    log.append(decide_trial_provisioned(log.state, command, now_us=T0))
    _resolve(log, "t", "m")
    assert usability(log.state, expiry - 1)["t"].unusable is None
    assert usability(log.state, expiry)["t"].unusable is UnusableReason.EXPIRED
    step = decide_next_step(log.state, PrepareUse(installation_id=INSTALL), now_us=expiry)
    assert isinstance(step, RotateKey)
    log.append(step.events)
    assert log.state.credentials["t"].state is CredentialState.EXPIRED
    step = decide_next_step(log.state, PrepareUse(installation_id=INSTALL), now_us=expiry)
    assert step == RotateKey(credential_id="t")


def test_operator_keys_come_first_and_a_usable_one_wins() -> None:
    """I0: with several operator keys the first usable is used; trials never stand in."""
    log = Log()
    _explicit(log, "op-1")
    _explicit(log, "op-2")
    _resolve(log, "op-2", "m")
    step = decide_next_step(log.state, PrepareUse(installation_id=INSTALL), now_us=T0)
    assert step == UseCredential(credential_id="op-2", models=frozenset({"m"}), roles=())
    _auth_fail(log, "op-2")
    step = decide_next_step(log.state, PrepareUse(installation_id=INSTALL), now_us=T0)
    assert step == ResolveModels(credential_id="op-1")


# --- the fold ----------------------------------------------------------------------


@event("routeledger.TestForeignThingHappened", 1, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class ForeignThingHappened(Event):
    """An event of another context (for the fold tests only)."""


def test_foreign_events_only_advance_credential_stream_versions() -> None:
    """D1: events of other contexts on cred:/install: streams move the version, nothing else."""
    log = Log()
    _explicit(log)
    before = attrs.evolve(log.state)
    state = evolve(log.state, ForeignThingHappened(stream_id="cred:op-1", version=2, at_us=T0))
    state = evolve(state, ForeignThingHappened(stream_id="request:r1", version=1, at_us=T0))
    assert state.stream_versions == {**before.stream_versions, "cred:op-1": 2}
    command = RecordResolutionFailed(credential_id="op-1", reason=ResolutionFailure.UNREACHABLE)
    (evt,) = decide_resolution_failed(state, command, now_us=T0)
    assert evt.version == 3


def test_check_invariants_catches_corrupted_states() -> None:
    """I0: two trials, an unclaimed trial, a usable key without models or a stray role all fail."""
    log = Log()
    _trial(log)
    _resolve(log, "trial-1", "m")
    check_invariants(log.state)
    corruptions = [
        lambda s: setattr(s.installations[INSTALL], "trial_claims", 2),
        lambda s: setattr(s.installations[INSTALL], "trial_credential_id", "other"),
        lambda s: setattr(s.credentials["trial-1"], "models", frozenset()),
        lambda s: setattr(
            s.credentials["trial-1"], "roles", (RoleModel(role="main", model="default"),)
        ),
    ]
    for corrupt in corruptions:
        state = fold(log.events)
        corrupt(state)
        with pytest.raises(InvariantViolation, match="I0"):
            check_invariants(state)
