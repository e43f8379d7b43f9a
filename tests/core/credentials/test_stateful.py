"""Random credential histories against a naive recompute-from-the-log model (I0, D3)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from routeledger.core.credentials import (
    CredentialFailure,
    CredentialSource,
    CredentialState,
    IllegalTransition,
    InMemorySecretStore,
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
    UseCredential,
    decide_failure,
    decide_models_resolved,
    decide_next_step,
    decide_provision_explicit,
    decide_resolution_failed,
    decide_revoke,
    decide_rotation,
    decide_trial_failed,
    decide_trial_provisioned,
    fold,
    usability,
)
from routeledger.core.credentials.events import (
    CredentialAuthFailed,
    CredentialExpired,
    CredentialProvisioned,
    CredentialReprovisioned,
    CredentialRevoked,
    CredentialRotated,
    ModelsResolved,
    TrialProvisioned,
    TrialProvisioningDecided,
)
from routeledger.core.events import Event
from routeledger.core.time import US_PER_S
from routeledger.core.usability import model_problem

from .support import DATED_DEFAULT, INSTALL, T0, Log, StaleVersion, meta

UNIVERSE = ("m-a", "m-b", "m-c")
#: Every name routing might try, the dated default of I0 among them.
CANDIDATES = (*UNIVERSE, DATED_DEFAULT)

_PROVISIONING = (CredentialProvisioned, TrialProvisioned, CredentialReprovisioned)
#: States in which a 401 is news (the key is still in use).
_AUTH_NEWS = frozenset(
    {CredentialState.PROVISIONED, CredentialState.RESOLUTION_FAILED, CredentialState.USABLE}
)
_DEAD = (CredentialAuthFailed, CredentialRotated, CredentialRevoked, CredentialExpired)


def naive_usable_models(events: list[Event], now_us: int) -> dict[str, tuple[bool, frozenset[str]]]:
    """Recompute from the raw log: credential id -> (validates names, names usable now)."""
    facts: dict[str, dict[str, Any]] = {}
    for evt in events:
        if isinstance(evt, _PROVISIONING):
            facts[evt.credential_id] = {"models": None, "dead": False, "meta": evt.metadata}
        elif isinstance(evt, ModelsResolved):
            facts[evt.credential_id]["models"] = evt.models
        elif isinstance(evt, _DEAD):
            facts[evt.credential_id]["dead"] = True
    result = {}
    for credential_id, fact in facts.items():
        expires = fact["meta"].expires_at_us
        alive = not fact["dead"] and (expires is None or now_us < expires)
        usable = alive and fact["models"] is not None
        validates = fact["meta"].validates_model_names
        if not usable:
            names: frozenset[str] = frozenset()
        elif validates:
            names = fact["models"] & frozenset(CANDIDATES)
        else:
            names = frozenset(CANDIDATES)
        result[credential_id] = (validates, names)
    return result


class CredentialHistories(RuleBasedStateMachine):
    """Provision / resolve / fail / use / auth-fail / rotate / revoke / expire / wait at random."""

    def __init__(self) -> None:
        super().__init__()
        self.log = Log()
        self.secrets = InMemorySecretStore()
        self.now_us = T0
        self.counter = 0

    def _new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def _known(self, data: st.DataObject) -> str | None:
        ids = sorted(self.log.state.credentials)
        return data.draw(st.sampled_from(ids)) if ids else None

    def _try(self, batch_of: Any) -> None:
        """Append what a decider proposes; an illegal command must leave the log untouched."""
        before = len(self.log.events)
        try:
            self.log.append(batch_of())
        except IllegalTransition:
            assert len(self.log.events) == before

    @rule(
        expires_s=st.none() | st.integers(min_value=1, max_value=120),
        validates=st.booleans(),
    )
    def provision_explicit(self, expires_s: int | None, validates: bool) -> None:
        expires = None if expires_s is None else self.now_us + expires_s * US_PER_S
        credential_id = self._new_id("op")
        self.secrets.put(credential_id, f"sk-operator-{credential_id}-secret")
        command = ProvisionExplicitKey(
            installation_id=INSTALL,
            credential_id=credential_id,
            metadata=meta(expires_at_us=expires, validates_model_names=validates),
        )
        self.log.append(decide_provision_explicit(self.log.state, command, now_us=self.now_us))

    @rule(
        allow_trial=st.booleans(),
        trial_works=st.integers(min_value=0, max_value=3).map(bool),
        stale_prefix=st.integers(min_value=0, max_value=3),
        listing=st.frozensets(st.sampled_from(UNIVERSE)),
    )
    def use(
        self, allow_trial: bool, trial_works: bool, stale_prefix: int, listing: frozenset[str]
    ) -> None:
        """Ask for the next step (a quarter of the time from a stale state) and act on it."""
        stale = stale_prefix == 0
        state = fold(self.log.events[: len(self.log.events) // 2]) if stale else None
        command = PrepareUse(
            installation_id=INSTALL,
            trial_credential_id=self._new_id("trial") if allow_trial else None,
        )
        step = decide_next_step(state or self.log.state, command, now_us=self.now_us)
        try:
            self.log.append(step.events)
        except StaleVersion:
            assert state is not None  # only a stale process can lose a race
            return
        if isinstance(step, UseCredential) and state is None:
            validates, names = naive_usable_models(self.log.events, self.now_us)[step.credential_id]
            assert names, "I0: decided to use a credential the naive model says is unusable"
            if validates:
                assert step.models & frozenset(CANDIDATES) == names
            assert {role.model for role in step.roles} <= step.models
        elif isinstance(step, ResolveModels) and state is None:
            # Resolve against the stored key; an empty listing is recorded as a failure.
            assert self.secrets.get(step.credential_id) is not None
            command = RecordModelsResolved(credential_id=step.credential_id, models=listing)
            self.log.append(decide_models_resolved(self.log.state, command, now_us=self.now_us))
        elif isinstance(step, RotateKey) and state is None:
            successor = self._new_id("rot")
            self.secrets.put(successor, f"sk-rotated-{successor}-secret")
            rotation = RecordRotation(
                credential_id=step.credential_id, successor_id=successor, metadata=meta()
            )
            self.log.append(decide_rotation(self.log.state, rotation, now_us=self.now_us))
        elif isinstance(step, ProvisionTrial) and trial_works:
            # The claim was appended, so it was decided on an up-to-date install stream.
            self.secrets.put(step.credential_id, f"sk-trial-{step.credential_id}-secret")
            self.log.append(
                decide_trial_provisioned(
                    self.log.state,
                    RecordTrialProvisioned(
                        installation_id=INSTALL,
                        credential_id=step.credential_id,
                        metadata=meta(),
                    ),
                    now_us=self.now_us,
                )
            )
        elif isinstance(step, ProvisionTrial):
            self.log.append(
                decide_trial_failed(
                    self.log.state,
                    RecordTrialProvisioningFailed(
                        installation_id=INSTALL, credential_id=step.credential_id, http_status=503
                    ),
                    now_us=self.now_us,
                )
            )

    @rule(data=st.data(), models=st.frozensets(st.sampled_from(UNIVERSE)))
    def resolve(self, data: st.DataObject, models: frozenset[str]) -> None:
        credential_id = self._known(data)
        if credential_id is None:
            return
        roles = tuple(
            RoleModel(role=f"r{index}", model=m) for index, m in enumerate(sorted(models))
        )
        command = RecordModelsResolved(credential_id=credential_id, models=models, roles=roles)
        self._try(lambda: decide_models_resolved(self.log.state, command, now_us=self.now_us))

    @rule(data=st.data(), reason=st.sampled_from(ResolutionFailure))
    def resolve_fails(self, data: st.DataObject, reason: ResolutionFailure) -> None:
        credential_id = self._known(data)
        if credential_id is None:
            return
        command = RecordResolutionFailed(credential_id=credential_id, reason=reason)
        self._try(lambda: decide_resolution_failed(self.log.state, command, now_us=self.now_us))

    @rule(data=st.data(), failure=st.sampled_from(CredentialFailure))
    def use_fails(self, data: st.DataObject, failure: CredentialFailure) -> None:
        credential_id = self._known(data)
        if credential_id is None:
            return
        before = self.log.state.credentials[credential_id].state
        command = RecordFailure(credential_id=credential_id, failure=failure, http_status=401)
        events = self.log.append(decide_failure(self.log.state, command, now_us=self.now_us))
        if failure is not CredentialFailure.AUTH:
            # I0: budget and invalid-model failures never touch the lifecycle.
            assert events == ()
            assert self.log.state.credentials[credential_id].state is before

    def _live_trials(self) -> list[str]:
        return sorted(
            cred.credential_id
            for cred in self.log.state.credentials.values()
            if cred.source is CredentialSource.TRIAL and cred.state in _AUTH_NEWS
        )

    @precondition(lambda self: bool(self._live_trials()))
    @rule(data=st.data())
    def trial_key_rejected(self, data: st.DataObject) -> None:
        """A 401 on a live trial key (the path to key recovery)."""
        credential_id = data.draw(st.sampled_from(self._live_trials()))
        command = RecordFailure(credential_id=credential_id, failure=CredentialFailure.AUTH)
        (evt,) = self.log.append(decide_failure(self.log.state, command, now_us=self.now_us))
        assert isinstance(evt, CredentialAuthFailed)

    @rule(data=st.data())
    def rotate(self, data: st.DataObject) -> None:
        credential_id = self._known(data)
        if credential_id is None:
            return
        successor = self._new_id("rot")
        self.secrets.put(successor, f"sk-rotated-{successor}-secret")
        command = RecordRotation(
            credential_id=credential_id, successor_id=successor, metadata=meta()
        )
        self._try(lambda: decide_rotation(self.log.state, command, now_us=self.now_us))

    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        credential_id = self._known(data)
        if credential_id is None:
            return
        command = RevokeCredential(credential_id=credential_id)
        self.log.append(decide_revoke(self.log.state, command, now_us=self.now_us))

    @rule(seconds=st.integers(min_value=0, max_value=900))
    def advance_time(self, seconds: int) -> None:
        self.now_us += seconds * US_PER_S

    @invariant()
    def at_most_one_trial_ever(self) -> None:
        """I0: at most one trial claim and one trial key per installation, ever."""
        events = self.log.events
        assert sum(isinstance(e, TrialProvisioningDecided) for e in events) <= 1
        assert sum(isinstance(e, TrialProvisioned) for e in events) <= 1

    @invariant()
    def a_claim_never_follows_a_credential(self) -> None:
        """I0: a trial is only claimed by an installation that never had a credential."""
        seen_credential = False
        for evt in self.log.events:
            assert not (seen_credential and isinstance(evt, TrialProvisioningDecided))
            seen_credential = seen_credential or isinstance(evt, _PROVISIONING)

    @invariant()
    def routes_only_to_resolved_names(self) -> None:
        """I0, D3: usability allows exactly the naive model's resolved names, never the default."""
        naive = naive_usable_models(self.log.events, self.now_us)
        views = usability(self.log.state, self.now_us)
        assert set(views) == set(naive)
        for credential_id, view in views.items():
            allowed = {m for m in CANDIDATES if model_problem(view, m) is None}
            assert allowed == naive[credential_id][1]
            if view.validates_model_names:
                assert DATED_DEFAULT not in allowed

    def teardown(self) -> None:
        """D2/D3: refolding the raw log, whole or resumed mid-way, gives the incremental state.

        Checked once per history rather than after every step (which would
        refold the log quadratically often); the naive model above is checked
        after every step.
        """
        events = self.log.events
        assert fold(events) == self.log.state
        cut = len(events) // 2
        assert fold(events[cut:], fold(events[:cut])) == self.log.state


TestCredentialHistories = CredentialHistories.TestCase


@pytest.fixture(autouse=True)
def _no_op() -> None:
    """Keep pytest's fixture machinery out of the state machine."""
