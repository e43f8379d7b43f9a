"""Opening an engine: a missing or unwritable store fails at open, naming it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.store.eventstore import StoreNotFound, StoreUnavailable
from tests.adapters.engine.test_engine import CONFIG
from tests.backends import PostgresServer


def test_a_mistyped_path_with_create_false_fails_naming_it_and_creates_nothing(
    tmp_path: Path,
) -> None:
    """Engine.open(create=False) on a path with no store is StoreNotFound, and no file appears."""
    Engine.open(f"sqlite:///{tmp_path}/gateway.db", parse_config(CONFIG)).close()
    typo = tmp_path / "gatway.db"
    with pytest.raises(StoreNotFound, match="gatway.db"):
        Engine.open(f"sqlite:///{typo}", parse_config(CONFIG), create=False)
    assert not typo.exists()
    Engine.open(f"sqlite:///{tmp_path}/gateway.db", parse_config(CONFIG), create=False).close()


def test_a_read_only_database_fails_at_open_not_at_the_first_request(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """A database whose sessions are read-only is StoreUnavailable at open, saying so."""
    Engine.open(postgres_url, parse_config(CONFIG)).close()  # tables and accounts exist
    name = urlsplit(postgres_url).path.lstrip("/")
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    with pytest.raises(StoreUnavailable, match="read-only"):
        Engine.open(postgres_url, parse_config(CONFIG), create=False)
