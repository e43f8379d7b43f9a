"""The environment-variable secret reader honours the reader contract, and names variables."""

from __future__ import annotations

import pytest

from routeledger.adapters.providers.secrets import (
    DEFAULT_PREFIX,
    EnvironmentSecretReader,
    variable_for,
)
from routeledger.core.errors import UsageError
from tests.core.credentials.secret_store_contract import KEY_A, KEY_B, SecretReaderContract


class TestEnvironmentSecretReader(SecretReaderContract):
    """Contract run against :class:`EnvironmentSecretReader` over a dict environment."""

    def make(self, secrets: dict[str, str]) -> EnvironmentSecretReader:
        environ = {variable_for(cid): key for cid, key in secrets.items()}
        environ["PATH"] = "/usr/bin"
        return EnvironmentSecretReader(environ=environ)


def test_variable_names_are_prefixed_and_normalised() -> None:
    """Adapter: ids map to ROUTELEDGER_SECRET_<ID>, upper-cased, non-alphanumerics as '_'."""
    assert variable_for("cred-a.1") == "ROUTELEDGER_SECRET_CRED_A_1"
    assert variable_for("x", prefix="MY_") == "MY_X"
    assert DEFAULT_PREFIX == "ROUTELEDGER_SECRET_"
    with pytest.raises(UsageError):
        variable_for("")


def test_explicit_names_and_custom_prefix() -> None:
    """Adapter: explicit variable names win, and their values are listed for the scrubber."""
    environ = {"OPENAI_API_KEY": KEY_A, "GW_KEY_B": KEY_B, "OTHER": "not-a-secret"}
    reader = EnvironmentSecretReader(
        prefix="GW_KEY_", names={"openai": "OPENAI_API_KEY"}, environ=environ
    )
    assert reader.variable("openai") == "OPENAI_API_KEY"
    assert reader.get("openai") == KEY_A
    assert reader.get("b") == KEY_B
    assert reader.secret_values() == {KEY_A, KEY_B}


def test_empty_values_count_as_absent() -> None:
    """Adapter: an exported but empty variable is no key and no secret."""
    reader = EnvironmentSecretReader(environ={"ROUTELEDGER_SECRET_A": ""})
    assert reader.get("a") is None
    assert reader.secret_values() == frozenset()


def test_reads_the_live_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adapter: by default os.environ is read at each call, so late exports are seen."""
    reader = EnvironmentSecretReader()
    monkeypatch.setenv("ROUTELEDGER_SECRET_LATE", KEY_B)
    assert reader.get("late") == KEY_B
    assert KEY_B in reader.secret_values()


def test_prefix_must_be_a_variable_name() -> None:
    """Adapter: a prefix that is not an upper-case variable name is a usage error."""
    with pytest.raises(UsageError, match="prefix"):
        EnvironmentSecretReader(prefix="bad-prefix")
