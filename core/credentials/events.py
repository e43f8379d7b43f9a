"""Events of the credential lifecycle.

These names and tags are the storage contract. Renaming a class changes
nothing; changing a tag or a field breaks stored logs and needs a new schema
version plus an upcaster (``routeledger.adapters.store.codec``).

Streams:

* ``cred:<credential_id>`` — one credential's lifecycle (every event below
  except the two ``TrialProvisioning*`` ones);
* ``install:<installation_id>`` — installation-wide facts: the claim of the one
  trial an installation may ever provision (``TrialProvisioningDecided``), its
  failure, and every operator key added (``OperatorKeyAdded``, appended in the
  same batch as ``CredentialProvisioned``). Any two of those decided from the
  same state append the same version of that stream; the store lets exactly one
  win, so a trial can never be claimed next to an operator key added
  concurrently.

No event carries a secret. The key itself lives in a secret store
(:mod:`routeledger.core.credentials.secrets`) under the credential id; events
carry only the id and non-secret metadata (provider, base URL, region, expiry,
whether the provider validates model names). The source (explicit operator key
or trial) is carried by the event class, not by a field.
"""

from __future__ import annotations

import enum

import attrs

from ..events import Event, Origin, event

__all__ = [
    "CredentialAuthFailed",
    "CredentialEvent",
    "CredentialExpired",
    "CredentialMetadata",
    "CredentialProvisioned",
    "CredentialReprovisioned",
    "CredentialRevoked",
    "CredentialRotated",
    "ModelResolutionFailed",
    "ModelsResolved",
    "OperatorKeyAdded",
    "ResolutionFailure",
    "RoleModel",
    "TrialProvisioned",
    "TrialProvisioningDecided",
    "TrialProvisioningFailed",
]


class ResolutionFailure(enum.Enum):
    """Why an attempt to list the model names a key accepts failed."""

    #: Transport error, timeout or 5xx from the listing endpoint (``/model/info``).
    UNREACHABLE = "unreachable"
    #: The endpoint answered but listed no model at all (I0: "no models" is a failure).
    EMPTY_LISTING = "empty_listing"
    #: The answer could not be interpreted by the adapter.
    UNREADABLE = "unreadable"


@attrs.frozen(kw_only=True)
class CredentialMetadata:
    """Non-secret facts about a key, recorded when it is provisioned."""

    #: Provider family, e.g. ``"litellm"``, ``"openai"``, ``"amazee"``.
    provider: str
    #: Base URL of the API; never carries userinfo or a query string.
    base_url: str
    #: Provider region, if any.
    region: str | None
    #: Engine time at which the key stops working; ``None`` = no known expiry.
    expires_at_us: int | None
    #: Whether the provider rejects model names outside the listed set (LiteLLM does).
    validates_model_names: bool


@attrs.frozen(kw_only=True)
class RoleModel:
    """One entry of a role mapping: the caller's ``role`` is served by ``model``."""

    #: The caller's name for a purpose, e.g. ``"main"`` or ``"summary"``.
    role: str
    #: A resolved upstream model name.
    model: str


@attrs.frozen(kw_only=True)
class CredentialEvent(Event):
    """Base of every credential-lifecycle event (see the module docstring)."""


@event("routeledger.CredentialProvisioned", 1, Origin.ADMIN)
@attrs.frozen(kw_only=True)
class CredentialProvisioned(CredentialEvent):
    """An operator supplied an explicit key; its secret is in the secret store."""

    credential_id: str
    installation_id: str
    metadata: CredentialMetadata


@event("routeledger.OperatorKeyAdded", 1, Origin.ADMIN)
@attrs.frozen(kw_only=True)
class OperatorKeyAdded(CredentialEvent):
    """An operator key joined the installation (``install:`` stream); no trial after it."""

    installation_id: str
    credential_id: str


@event("routeledger.TrialProvisioningDecided", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class TrialProvisioningDecided(CredentialEvent):
    """The core claimed the installation's one trial (``install:`` stream)."""

    installation_id: str
    credential_id: str


@event("routeledger.TrialProvisioningFailed", 1, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class TrialProvisioningFailed(CredentialEvent):
    """The adapter could not obtain the claimed trial (``install:`` stream)."""

    installation_id: str
    credential_id: str
    #: HTTP status of the provisioning call, ``None`` for a transport error.
    http_status: int | None


@event("routeledger.TrialProvisioned", 1, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class TrialProvisioned(CredentialEvent):
    """The adapter obtained the claimed trial key and stored its secret."""

    credential_id: str
    installation_id: str
    metadata: CredentialMetadata


@event("routeledger.CredentialReprovisioned", 1, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class CredentialReprovisioned(CredentialEvent):
    """A replacement key was obtained for ``predecessor_id`` (key recovery)."""

    credential_id: str
    installation_id: str
    predecessor_id: str
    metadata: CredentialMetadata


@event("routeledger.ModelsResolved", 1, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class ModelsResolved(CredentialEvent):
    """The provider listed the model names this key accepts (never empty)."""

    credential_id: str
    models: frozenset[str]
    #: Role mapping, sorted by role, each model in ``models``.
    roles: tuple[RoleModel, ...]


@event("routeledger.ModelResolutionFailed", 1, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class ModelResolutionFailed(CredentialEvent):
    """Listing the model names failed; the last known-good set, if any, is kept."""

    credential_id: str
    reason: ResolutionFailure


@event("routeledger.CredentialAuthFailed", 1, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class CredentialAuthFailed(CredentialEvent):
    """The provider rejected the key (HTTP 401 or 403)."""

    credential_id: str
    #: 401 or 403 as observed; ``None`` when the adapter only knows the class.
    http_status: int | None


@event("routeledger.CredentialRotated", 1, Origin.OBSERVED)
@attrs.frozen(kw_only=True)
class CredentialRotated(CredentialEvent):
    """The key was replaced by ``successor_id`` and is never used again."""

    credential_id: str
    successor_id: str


@event("routeledger.CredentialExpired", 1, Origin.DECIDED)
@attrs.frozen(kw_only=True)
class CredentialExpired(CredentialEvent):
    """The core noticed that engine time reached the key's expiry."""

    credential_id: str
    expires_at_us: int


@event("routeledger.CredentialRevoked", 1, Origin.ADMIN)
@attrs.frozen(kw_only=True)
class CredentialRevoked(CredentialEvent):
    """An operator revoked the key; it is never used again."""

    credential_id: str
