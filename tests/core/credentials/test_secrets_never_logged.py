"""E1/I0: no credential event field can hold a secret, and none does after a full lifecycle."""

from __future__ import annotations

import typing

import attrs

from routeledger.core.credentials import (
    CredentialEvent,
    CredentialFailure,
    InMemorySecretStore,
    PrepareUse,
    ProvisionExplicitKey,
    ProvisionTrial,
    RecordFailure,
    RecordModelsResolved,
    RecordRotation,
    RecordTrialProvisioned,
    decide_failure,
    decide_models_resolved,
    decide_next_step,
    decide_provision_explicit,
    decide_rotation,
    decide_trial_provisioned,
)
from routeledger.core.credentials import events as credential_events
from routeledger.core.events import REGISTRY

from .support import T0, Log, meta

TRIAL_KEY = "sk-trial-Zq8wX3vK9pL2mN7rT4yB"
OPERATOR_KEY = "sk-op-Hf6dJ1sA5gQ0cV8eW2uR"
ROTATED_KEY = "sk-rot-Yb3nM9kP4tL7xC1zD6wE"

#: Field names a secret would hide behind.
_SUSPECT = ("secret", "key", "token", "password", "bearer", "auth_header")


def _strings(value: object) -> list[str]:
    """Every string reachable from an event (fields, nested values, collections)."""
    if isinstance(value, str):
        return [value]
    if attrs.has(type(value)):
        return [
            s for field in attrs.fields(type(value)) for s in _strings(getattr(value, field.name))
        ]
    if isinstance(value, (tuple, frozenset, list)):
        return [s for item in value for s in _strings(item)]
    return [str(value)]


def test_no_credential_event_declares_a_secret_looking_field() -> None:
    """E1: no field (nor nested field) of any credential event is named like a secret."""
    seen: set[type] = set()

    def walk(cls: type) -> None:
        if cls in seen:
            return
        seen.add(cls)
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            assert not any(word in field.name.lower() for word in _SUSPECT), (cls, field.name)
            for arg in (hints[field.name], *typing.get_args(hints[field.name])):
                if attrs.has(arg):
                    walk(arg)

    classes = [cls for cls in REGISTRY if issubclass(cls, CredentialEvent)]
    assert len(classes) == len(credential_events.__all__) - 4  # minus value types and the base
    for cls in classes:
        walk(cls)


def test_a_full_lifecycle_never_writes_a_secret_into_an_event() -> None:
    """E1, I0: provisioning, resolving and rotating with known keys leave no 8-char piece of them in any event."""
    log, secrets = Log(), InMemorySecretStore()
    step = decide_next_step(
        log.state, PrepareUse(installation_id="inst-9", trial_credential_id="t1"), now_us=T0
    )
    assert isinstance(step, ProvisionTrial)
    log.append(step.events)
    secrets.put("t1", TRIAL_KEY)
    log.append(
        decide_trial_provisioned(
            log.state,
            RecordTrialProvisioned(installation_id="inst-9", credential_id="t1", metadata=meta()),
            now_us=T0,
        )
    )
    resolved = RecordModelsResolved(credential_id="t1", models=frozenset({"m"}))
    log.append(decide_models_resolved(log.state, resolved, now_us=T0))
    failure = RecordFailure(credential_id="t1", failure=CredentialFailure.AUTH, http_status=401)
    log.append(decide_failure(log.state, failure, now_us=T0))
    secrets.put("t2", ROTATED_KEY)
    rotation = RecordRotation(credential_id="t1", successor_id="t2", metadata=meta())
    log.append(decide_rotation(log.state, rotation, now_us=T0))
    secrets.put("op", OPERATOR_KEY)
    explicit = ProvisionExplicitKey(installation_id="inst-9", credential_id="op", metadata=meta())
    log.append(decide_provision_explicit(log.state, explicit, now_us=T0))

    assert secrets.secret_values() == {TRIAL_KEY, ROTATED_KEY, OPERATOR_KEY}
    assert len(log.events) == 8
    pieces = {key[i : i + 8] for key in secrets.secret_values() for i in range(len(key) - 7)}
    for evt in log.events:
        rendered = [repr(evt), *_strings(evt)]
        for piece in pieces:
            assert not any(piece in text for text in rendered), (type(evt).__name__, piece)
    assert TRIAL_KEY not in repr(secrets)
