"""Opening an engine: a missing or unwritable store fails at open, naming it."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.store.eventstore import StoreNotFound, StoreUnavailable
from routeledger.core.budget import events as bev
from tests.adapters.engine.test_engine import CONFIG
from tests.backends import PostgresServer


def test_a_mistyped_path_with_create_false_fails_naming_it_and_creates_nothing(
    tmp_path: Path,
) -> None:
    """Engine.open(create=False) on a path with no store is StoreNotFound, and no file appears."""
    Engine.open(f"sqlite:///{tmp_path}/gateway.db", parse_config(CONFIG)).close()
    typo = tmp_path / "gatway.db"
    with pytest.raises(StoreNotFound, match=r"gatway\.db"):
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


def test_lowering_a_limit_in_the_file_takes_effect_at_the_next_open_as_one_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The TOML is the desired state: a changed limit is a LimitConfigured at open, logged, and
    opening again with the same file (or from a second engine) records nothing more."""
    url = f"sqlite:///{tmp_path}/gateway.db"
    Engine.open(url, parse_config(CONFIG)).close()
    lowered = parse_config(CONFIG.replace("limit = 1_000", "limit = 300"))
    with caplog.at_level(logging.INFO, logger="routeledger.engine"):
        engine = Engine.open(url, lowered)
    assert engine.state.budget.accounts["team"].limit == 300
    changes = [r.event for r in engine.store.read_all() if isinstance(r.event, bev.LimitConfigured)]
    assert [(c.previous_limit, c.limit) for c in changes] == [(1_000, 300)]
    assert "config: account team limit 1000 -> 300" in caplog.text
    positions = engine.store.max_position()
    engine.close()
    with Engine.open(url, lowered) as again:
        assert again.store.max_position() == positions


def test_what_the_file_cannot_change_is_kept_and_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A changed period and an account no longer configured are kept as logged, each a WARNING."""
    url = f"sqlite:///{tmp_path}/gateway.db"
    Engine.open(url, parse_config(CONFIG)).close()
    daily = CONFIG.replace("limit = 1_000", 'limit = 1_000\nperiod = { kind = "day" }')
    renamed = daily.replace("[accounts.team]", "[accounts.team-b]")
    with caplog.at_level(logging.WARNING, logger="routeledger.engine"):
        Engine.open(url, parse_config(daily)).close()
        with Engine.open(url, parse_config(renamed)) as engine:
            assert set(engine.state.budget.accounts) == {"team", "team-b"}
    assert "config: account team period is" in caplog.text
    assert "config: account team is in the log but not configured" in caplog.text
