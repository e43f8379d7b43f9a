"""Contract tests for secret readers and stores, written once, subclassed per backend."""

from __future__ import annotations

import pytest

from routeledger.core.credentials.secrets import SECRET_LENGTH_MAX, SecretReader, SecretStore
from routeledger.core.errors import UsageError

KEY_A = "sk-live-A1b2C3d4E5f6G7h8"
KEY_B = "AIzaSyB-0123456789abcdefghijkl"


class SecretReaderContract:
    """Every secret reader: look-ups by id, exact listing, no leak through repr."""

    def make(self, secrets: dict[str, str]) -> SecretReader:
        """A reader holding exactly ``secrets`` (credential id -> key)."""
        raise NotImplementedError

    def test_is_a_secret_reader(self) -> None:
        """Contract: the backend satisfies the SecretReader port."""
        assert isinstance(self.make({}), SecretReader)

    def test_get_returns_the_stored_key_or_none(self) -> None:
        """Contract: a key is read back by its credential id; unknown ids give None."""
        reader = self.make({"cred-a": KEY_A, "cred-b": KEY_B})
        assert reader.get("cred-a") == KEY_A
        assert reader.get("cred-b") == KEY_B
        assert reader.get("cred-c") is None

    def test_secret_values_lists_exactly_the_keys(self) -> None:
        """E1: the scrubber gets every secret value, exactly as stored."""
        assert self.make({"cred-a": KEY_A, "cred-b": KEY_B}).secret_values() == {KEY_A, KEY_B}
        assert self.make({}).secret_values() == frozenset()

    def test_repr_never_shows_a_key(self) -> None:
        """E1: printing the reader never prints a key."""
        text = repr(self.make({"cred-a": KEY_A}))
        assert KEY_A not in text
        assert KEY_A[:8] not in text


class SecretStoreContract(SecretReaderContract):
    """Every writable secret store: put, replace, delete, validation."""

    def make(self, secrets: dict[str, str]) -> SecretStore:
        raise NotImplementedError

    def test_put_replaces_and_delete_forgets(self) -> None:
        """Contract: put stores or replaces a key; delete forgets it and tolerates unknown ids."""
        store = self.make({})
        assert isinstance(store, SecretStore)
        store.put("cred-a", KEY_A)
        store.put("cred-a", KEY_B)
        assert store.get("cred-a") == KEY_B
        assert store.secret_values() == {KEY_B}
        store.delete("cred-a")
        store.delete("cred-a")
        assert store.get("cred-a") is None
        assert store.secret_values() == frozenset()

    @pytest.mark.parametrize(
        ("credential_id", "secret"),
        [("", KEY_A), ("cred-a", ""), ("cred-a", "   "), ("cred-a", "x" * (SECRET_LENGTH_MAX + 1))],
    )
    def test_invalid_entries_are_refused_without_echoing_the_secret(
        self, credential_id: str, secret: str
    ) -> None:
        """E1: a refused entry raises UsageError whose message holds no secret."""
        store = self.make({})
        with pytest.raises(UsageError) as caught:
            store.put(credential_id, secret)
        assert not secret.strip() or secret not in str(caught.value)
