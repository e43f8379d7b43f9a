"""The secret store port: where keys live, so that they never enter the log.

Events name a credential by id; the key itself is kept here under that id.
Two ports:

* :class:`SecretReader` — look a key up, and list *every* secret value held,
  so that a scrubber can redact exact values from anything rendered or logged
  (E1);
* :class:`SecretStore` — a reader that can also store and forget keys (trial
  provisioning and key recovery write the new key here *before* recording the
  event that names it).

:class:`InMemorySecretStore` implements both without I/O (tests, short-lived
processes). The environment-variable reader is an adapter
(``routeledger.adapters.providers.secrets``).
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from ..errors import UsageError

__all__ = [
    "SECRET_LENGTH_MAX",
    "InMemorySecretStore",
    "SecretReader",
    "SecretStore",
    "check_secret",
]

#: Longest secret accepted, in characters. Why: API keys and JWTs seen in the
#: wild are under 2 KiB; 16 KiB leaves room for signed tokens while refusing a
#: whole file pasted by mistake.
SECRET_LENGTH_MAX: Final = 16_384


@runtime_checkable
class SecretReader(Protocol):
    """Reads keys by credential id."""

    def get(self, credential_id: str) -> str | None:
        """The key stored for ``credential_id``, or ``None``."""
        ...

    def secret_values(self) -> frozenset[str]:
        """Every secret value held, exactly as stored (for the scrubber)."""
        ...


@runtime_checkable
class SecretStore(SecretReader, Protocol):
    """Reads, stores and forgets keys by credential id."""

    def put(self, credential_id: str, secret: str) -> None:
        """Store ``secret`` for ``credential_id`` (replacing any previous one)."""
        ...

    def delete(self, credential_id: str) -> None:
        """Forget the key of ``credential_id`` (no error if there is none)."""
        ...


def check_secret(credential_id: str, secret: str) -> None:
    """Raise :class:`UsageError` unless ``credential_id`` and ``secret`` can be stored.

    The message never contains the secret.
    """
    if type(credential_id) is not str or not credential_id:
        raise UsageError(
            f"secret store: credential id must be a non-empty str, got {credential_id!r}"
        )
    if type(secret) is not str or not secret.strip():
        raise UsageError(f"secret store: the secret for {credential_id!r} is empty or not a str")
    if len(secret) > SECRET_LENGTH_MAX:
        raise UsageError(
            f"secret store: the secret for {credential_id!r} is longer than "
            f"{SECRET_LENGTH_MAX} characters"
        )


class InMemorySecretStore:
    """A :class:`SecretStore` in a dict (no I/O; lost when the process ends)."""

    def __init__(self, secrets: dict[str, str] | None = None) -> None:
        self._secrets: dict[str, str] = {}
        for credential_id, secret in (secrets or {}).items():
            self.put(credential_id, secret)

    def get(self, credential_id: str) -> str | None:
        """The key stored for ``credential_id``, or ``None``."""
        return self._secrets.get(credential_id)

    def put(self, credential_id: str, secret: str) -> None:
        """Store ``secret`` for ``credential_id``."""
        check_secret(credential_id, secret)
        self._secrets[credential_id] = secret

    def delete(self, credential_id: str) -> None:
        """Forget the key of ``credential_id``."""
        self._secrets.pop(credential_id, None)

    def secret_values(self) -> frozenset[str]:
        """Every secret value held."""
        return frozenset(self._secrets.values())

    def __repr__(self) -> str:
        # Never print the values.
        return f"InMemorySecretStore(credential_ids={sorted(self._secrets)!r})"
