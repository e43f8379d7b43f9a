"""The credential lifecycle: provisioning, model-name resolution, self-healing, key recovery.

* :mod:`.events` — the events (storage contract), streams ``cred:<id>`` and
  ``install:<id>``;
* :mod:`.lifecycle` — the state machine: states, ``TRANSITIONS``, ``evolve``,
  ``fold``, ``check_invariants`` and :func:`usability` (what routing consumes);
* :mod:`.validate` — every check of a caller's mistake in a command (the edge);
* :mod:`.decide` — the deciders, above all :func:`decide_next_step`;
* :mod:`.secrets` — the secret store port (keys never enter the log);
* :mod:`.diagram` — the Mermaid diagram in ``docs/credentials.md``.

See ``docs/credentials.md`` and incident I0.
"""

from .decide import (
    Blocked,
    BlockedReason,
    CredentialFailure,
    CredentialStep,
    PrepareUse,
    ProvisionExplicitKey,
    ProvisionTrial,
    RecordFailure,
    RecordModelsResolved,
    RecordResolutionFailed,
    RecordRotation,
    RecordTrialProvisioned,
    RecordTrialProvisioningFailed,
    ResolveModels,
    RevokeCredential,
    RotateKey,
    UseCredential,
    WaitUntil,
    decide_failure,
    decide_models_resolved,
    decide_next_step,
    decide_provision_explicit,
    decide_resolution_failed,
    decide_revoke,
    decide_rotation,
    decide_trial_failed,
    decide_trial_provisioned,
)
from .events import CredentialEvent, CredentialMetadata, ResolutionFailure, RoleModel
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
