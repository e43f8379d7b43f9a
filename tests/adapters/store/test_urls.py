"""Opening stores by URL: the three schemes, and clear errors for everything else."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from routeledger.adapters.store.eventstore import StoreNotFound, StoreUnavailable, open_store
from routeledger.adapters.store.urls import (
    DEFAULT_STORE_URL,
    StoreUrlError,
    mask_url,
    parse_store_url,
)


def test_memory_sqlite_and_postgres_urls_parse() -> None:
    """Each supported scheme parses into its backend with the parts it needs."""
    assert parse_store_url("memory://").backend == "memory"
    rel = parse_store_url("sqlite:///data/routeledger.db")
    assert (rel.backend, rel.path) == ("sqlite", "data/routeledger.db")
    absolute = parse_store_url("sqlite:////var/lib/rl.db?lock_timeout=3")
    assert (absolute.path, absolute.options["lock_timeout"]) == ("/var/lib/rl.db", "3")
    pg = parse_store_url("postgresql://rl:s3cret@db.internal:6543/ledger?schema=rl")
    assert (pg.host, pg.port, pg.user, pg.password, pg.dbname) == (
        "db.internal",
        6543,
        "rl",
        "s3cret",
        "ledger",
    )
    assert "s3cret" not in repr(pg)
    assert parse_store_url("postgres://u@h/d").port == 5432


def test_no_url_means_the_environment_or_the_sqlite_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a URL the store is $ROUTELEDGER_STORE_URL, else ./routeledger.db."""
    monkeypatch.delenv("ROUTELEDGER_STORE_URL", raising=False)
    assert parse_store_url(None).path == "routeledger.db"
    assert DEFAULT_STORE_URL == "sqlite:///routeledger.db"
    monkeypatch.setenv("ROUTELEDGER_STORE_URL", "memory://")
    assert parse_store_url(None).backend == "memory"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://u:pw@h/d", "scheme must be"),
        ("memory://x", "write just 'memory://'"),
        ("sqlite://host/file.db", "has no host"),
        ("sqlite:///", "no database file"),
        ("sqlite:///:memory:", "use 'memory://'"),
        ("sqlite:///x.db?cache=shared", "unknown option 'cache'"),
        ("postgresql://u:pw@h", "expected 'postgresql://"),
        ("postgresql://:pw@h/d", "no user name"),
        ("postgresql://u:pw@h:99999/d", "malformed store URL"),
        ("postgresql://u:pw@h/d?connect_timeout=soon", "whole number"),
    ],
)
def test_a_malformed_url_is_a_usage_error_with_the_password_masked(url: str, fragment: str) -> None:
    """Malformed URLs raise StoreUrlError naming the problem, never showing the password."""
    with pytest.raises(StoreUrlError, match=fragment) as caught:
        parse_store_url(url)
    assert ":pw@" not in str(caught.value)


def test_mask_url_hides_only_the_password() -> None:
    """mask_url replaces the password and keeps everything else."""
    assert mask_url("postgresql://u:pw@h:5/d") == "postgresql://u:***@h:5/d"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
    assert mask_url("postgresql://u:pw@h:notaport/d") == "postgresql://u:***@h:notaport/d"


def test_an_unreachable_database_is_store_unavailable_naming_the_masked_url() -> None:
    """A PostgreSQL URL nobody listens on fails at open with the URL, password masked."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://rl:topsecret@127.0.0.1:{port}/nowhere?connect_timeout=2"
    with pytest.raises(StoreUnavailable) as caught:
        open_store(url)
    message = str(caught.value)
    assert f"postgresql://rl:***@127.0.0.1:{port}/nowhere" in message
    assert "topsecret" not in message


def test_a_missing_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg, opening a PostgreSQL URL says to pip install routeledger[postgres]."""
    import sys

    for name in list(sys.modules):
        if name == "eventsourcing.postgres" or name.startswith("psycopg"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    with pytest.raises(StoreUnavailable, match=r"pip install 'routeledger\[postgres\]'"):
        open_store("postgresql://u:pw@127.0.0.1:1/d")


def test_opening_a_missing_sqlite_file_read_only_is_store_not_found(tmp_path: Path) -> None:
    """create=False never creates a SQLite file: a missing one is StoreNotFound."""
    target = tmp_path / "absent.db"
    with pytest.raises(StoreNotFound, match="does not exist"):
        open_store(f"sqlite:///{target}", create=False)
    assert not target.exists()


def test_a_sqlite_file_in_a_missing_directory_is_store_unavailable(tmp_path: Path) -> None:
    """A SQLite path whose directory does not exist fails at open, naming the URL."""
    url = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    with pytest.raises(StoreUnavailable, match="no/such/dir"):
        open_store(url)


def test_the_sqlite_default_store_is_created_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_store() with no URL creates ./routeledger.db."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROUTELEDGER_STORE_URL", raising=False)
    with open_store() as store:
        assert store.backend == "sqlite"
    assert (tmp_path / "routeledger.db").exists()
