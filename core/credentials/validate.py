"""The credential lifecycle's validation at its edge: every check of a caller's mistake.

Misuse raises :class:`~routeledger.core.errors.CommandError` naming command,
field and problem, before any rule reads the command; the deciders in
:mod:`.decide` call these first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from ..errors import CommandError, UsageError
from ..streams import CREDENTIAL_ID_LENGTH_MAX, MODEL_NAME_LENGTH_MAX
from ..time import is_engine_time
from .events import CredentialMetadata, RoleModel

if TYPE_CHECKING:  # pragma: no cover
    from .decide import RecordModelsResolved

__all__ = [
    "MODELS_PER_CREDENTIAL_MAX",
    "ROLES_MAX",
    "check_id",
    "check_metadata",
    "check_now",
    "check_resolution",
]

#: Most model names one key may list. Why: large LiteLLM catalogues list a few
#: hundred; the bound keeps one ``ModelsResolved`` event small.
MODELS_PER_CREDENTIAL_MAX: Final = 2_000
#: Most roles in a mapping. Why: callers use two or three ("main", "summary",
#: "expansion"); sixteen is generous and keeps the event small.
ROLES_MAX: Final = 16


def check_now(now_us: int) -> None:
    """Raise :class:`UsageError` unless ``now_us`` is an engine time."""
    if not is_engine_time(now_us):
        raise UsageError(f"now_us must be engine time (an int in range), got {now_us!r}")


def check_id(command: object, field: str, value: str) -> None:
    """Raise :class:`CommandError` unless ``value`` is a usable credential or installation id."""
    if type(value) is not str or not value:
        raise CommandError(command, field, f"must be a non-empty str, got {value!r}")
    if len(value) > CREDENTIAL_ID_LENGTH_MAX:
        raise CommandError(command, field, f"longer than {CREDENTIAL_ID_LENGTH_MAX} characters")
    if ":" in value or any(not c.isprintable() or c.isspace() for c in value):
        raise CommandError(command, field, f"{value!r} has ':', a space or a control character")


def check_metadata(command: object, metadata: CredentialMetadata) -> None:
    """Raise :class:`CommandError` unless ``metadata`` is safe to record (no key in a URL)."""
    if not metadata.provider:
        raise CommandError(command, "metadata.provider", "is empty")
    parts = urlsplit(metadata.base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError(command, "metadata.base_url", "is not an http(s) URL with a host")
    if "@" in parts.netloc or parts.query or parts.fragment:
        # A URL with userinfo or a query string may carry a key into the log.
        raise CommandError(
            command, "metadata.base_url", "must not carry userinfo, a query or a fragment"
        )
    expires_at_us = metadata.expires_at_us
    if expires_at_us is not None and not is_engine_time(expires_at_us):
        raise CommandError(command, "metadata.expires_at_us", "is not engine time")


def check_resolution(command: RecordModelsResolved) -> tuple[RoleModel, ...]:
    """The roles of a well-formed resolution, sorted; raise :class:`CommandError` otherwise (I0)."""
    models = command.models
    if len(models) > MODELS_PER_CREDENTIAL_MAX:
        raise CommandError(command, "models", f"more than {MODELS_PER_CREDENTIAL_MAX} names")
    for name in sorted(models):
        if type(name) is not str or not name or len(name) > MODEL_NAME_LENGTH_MAX:
            raise CommandError(
                command, "models", f"{name!r} is not a str of 1..{MODEL_NAME_LENGTH_MAX} chars"
            )
    if len(command.roles) > ROLES_MAX:
        raise CommandError(command, "roles", f"more than {ROLES_MAX} roles")
    roles = tuple(sorted(command.roles, key=lambda entry: entry.role))
    seen: set[str] = set()
    for entry in roles:
        if not entry.role or entry.role in seen:
            raise CommandError(command, "roles", f"role {entry.role!r} is empty or repeated")
        if entry.model not in models:
            # I0: a role may only point at a name the provider listed.
            raise CommandError(
                command, "roles", f"role {entry.role!r} maps to unresolved model {entry.model!r}"
            )
        seen.add(entry.role)
    return roles
