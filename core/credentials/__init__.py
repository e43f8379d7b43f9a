"""The credential lifecycle: provisioning, model-name resolution, self-healing, key recovery.

* :mod:`.events` — the events (storage contract), streams ``cred:<id>`` and
  ``install:<id>``;
* :mod:`.lifecycle` — the state machine: states, ``TRANSITIONS``, ``evolve``,
  ``fold``, ``check_invariants`` and :func:`usability` (what routing consumes);
* :mod:`.validate` — every check of a caller's mistake in a command (the edge);
* :mod:`.decide` — the deciders the engine calls (provisioning, resolution, key failures);
* :mod:`.healing` — self-healing (:func:`decide_next_step`), trials, rotation, revocation:
  parked until [G4] wires them;
* :mod:`.secrets` — the secret store port (keys never enter the log);
* :mod:`.diagram` — the Mermaid diagram in ``docs/credentials.md``.

See ``docs/credentials.md`` and incident I0.
"""

from .decide import (
    CredentialFailure,
    ProvisionExplicitKey,
    RecordFailure,
    RecordModelsResolved,
    RecordResolutionFailed,
    decide_failure,
    decide_models_resolved,
    decide_provision_explicit,
    decide_resolution_failed,
)
from .events import CredentialEvent, CredentialMetadata, ResolutionFailure, RoleModel
from .healing import (
    Blocked,
    BlockedReason,
    CredentialStep,
    PrepareUse,
    ProvisionTrial,
    RecordRotation,
    RecordTrialProvisioned,
    RecordTrialProvisioningFailed,
    ResolveModels,
    RevokeCredential,
    RotateKey,
    UseCredential,
    WaitUntil,
    decide_next_step,
    decide_revoke,
    decide_rotation,
    decide_trial_failed,
    decide_trial_provisioned,
)
from .lifecycle import (
    TRANSITIONS,
    CredentialSource,
    CredentialsState,
    CredentialState,
    IllegalTransition,
    UnknownCredential,
    check_invariants,
    evolve,
    fold,
    initial,
    usability,
)
from .secrets import InMemorySecretStore, SecretReader, SecretStore

__all__ = [
    "TRANSITIONS",
    "Blocked",
    "BlockedReason",
    "CredentialEvent",
    "CredentialFailure",
    "CredentialMetadata",
    "CredentialSource",
    "CredentialState",
    "CredentialStep",
    "CredentialsState",
    "IllegalTransition",
    "InMemorySecretStore",
    "PrepareUse",
    "ProvisionExplicitKey",
    "ProvisionTrial",
    "RecordFailure",
    "RecordModelsResolved",
    "RecordResolutionFailed",
    "RecordRotation",
    "RecordTrialProvisioned",
    "RecordTrialProvisioningFailed",
    "ResolutionFailure",
    "ResolveModels",
    "RevokeCredential",
    "RoleModel",
    "RotateKey",
    "SecretReader",
    "SecretStore",
    "UnknownCredential",
    "UseCredential",
    "WaitUntil",
    "check_invariants",
    "decide_failure",
    "decide_models_resolved",
    "decide_next_step",
    "decide_provision_explicit",
    "decide_resolution_failed",
    "decide_revoke",
    "decide_rotation",
    "decide_trial_failed",
    "decide_trial_provisioned",
    "evolve",
    "fold",
    "initial",
    "usability",
]
