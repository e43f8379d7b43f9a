"""The in-memory secret store honours the secret store contract."""

from __future__ import annotations

from routeledger.core.credentials import InMemorySecretStore

from .secret_store_contract import SecretStoreContract


class TestInMemorySecretStore(SecretStoreContract):
    """Contract run against :class:`InMemorySecretStore`."""

    def make(self, secrets: dict[str, str]) -> InMemorySecretStore:
        return InMemorySecretStore(secrets)
