"""The seam between the credential lifecycle and routing.

The credential lifecycle (:mod:`routeledger.core.credentials`) says, for each
credential, whether it may be used and with which upstream model names.
Routing (:mod:`routeledger.core.routing`) only ever routes to a
(credential, upstream model) pair that this view allows (incident I0: never
send a model name that was not resolved, never fall back to a configured
default).

Routing receives ``Mapping[str, CredentialUsability]`` keyed by credential id,
or ``None`` when the embedding application does not track credential
lifecycles (then every credential in the policy is usable with the model names
the policy lists). When a mapping is given, a credential that is missing from
it is not usable (:attr:`UnusableReason.NOT_PROVISIONED`).
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["CredentialUsability", "UnusableReason", "model_problem"]


class UnusableReason(enum.Enum):
    """Why a credential, or one model name on it, cannot be used now."""

    #: No credential has been provisioned under this id.
    NOT_PROVISIONED = "not_provisioned"
    #: Key stored, model names never resolved (I0's half-provisioned state).
    MODELS_UNRESOLVED = "models_unresolved"
    #: Key stored, the last resolution failed and nothing was ever resolved.
    RESOLUTION_FAILED = "resolution_failed"
    #: The provider rejected the key (401/403); waiting for rotation.
    AUTH_FAILED = "auth_failed"
    #: Replaced by a newer key; the old one is never used again.
    ROTATED = "rotated"
    #: Past its expiry time.
    EXPIRED = "expired"
    #: Revoked by an operator.
    REVOKED = "revoked"
    #: The gateway has no key for it here (its configured variable is unset): a
    #: local configuration mistake, never recorded as the upstream's failure.
    SECRET_MISSING = "secret_missing"
    #: The credential is usable, but this model name is not in its resolved set.
    MODEL_NOT_RESOLVED = "model_not_resolved"


@attrs.frozen(kw_only=True)
class CredentialUsability:
    """What the lifecycle allows for one credential at one instant."""

    credential_id: str
    #: ``None`` when usable; otherwise why not.
    unusable: UnusableReason | None
    #: Model names the provider accepted for this key; ``None`` = never resolved.
    resolved_models: frozenset[str] | None
    #: Whether the provider rejects names outside ``resolved_models`` (gateways
    #: such as LiteLLM do); when ``False`` an unresolved name may still be tried.
    validates_model_names: bool


def model_problem(view: CredentialUsability, upstream_model: str) -> UnusableReason | None:
    """Why ``upstream_model`` may not be sent with this credential, or ``None`` if it may."""
    if view.unusable is not None:
        return view.unusable
    if not view.validates_model_names:
        return None
    if view.resolved_models is None:
        return UnusableReason.MODELS_UNRESOLVED
    if upstream_model not in view.resolved_models:
        return UnusableReason.MODEL_NOT_RESOLVED
    return None
