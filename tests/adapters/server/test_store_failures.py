"""A store that stops taking writes under a running gateway (PostgreSQL turned read-only)."""

from __future__ import annotations

from urllib.parse import urlsplit

import openai
import psycopg
import pytest

from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.server import Gateway
from routeledger.adapters.store.eventstore import open_store
from routeledger.adapters.testing.fake_provider import FakeProvider
from tests.adapters.http.gateway import serve
from tests.adapters.http.test_executor import KEYS
from tests.adapters.server.test_server import ADMIN_KEY, MESSAGES, WEB_KEY, server_config
from tests.backends import PostgresServer


def _turn_read_only(server: PostgresServer, url: str) -> None:
    """New sessions of the database are read-only; its open sessions are ended."""
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def test_a_store_gone_read_only_is_a_503_naming_it_and_nothing_is_half_written(
    monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, postgres_url: str
) -> None:
    """Once the store refuses writes, a request is a 503 store_unavailable the SDK parses,
    the upstream is not called, and the log holds exactly what it held before."""
    for name, value in {**KEYS, "WEB_CLIENT_KEY": WEB_KEY}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ROUTELEDGER_ADMIN_KEY", ADMIN_KEY)
    with FakeProvider({"gpt-a": "ok", "gpt-b": "ok", "claude-a": "ok"}) as fake:
        gateway = Gateway(parse_config(server_config(fake.base_url)), postgres_url)
        with serve(gateway.app) as base_url:  # type: ignore[arg-type]
            client = openai.OpenAI(base_url=base_url, api_key=WEB_KEY, max_retries=0)
            client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=8)
            with open_store(postgres_url, create=False) as store:
                before = [r.position for r in store.read_all()]
            _turn_read_only(postgres_server, postgres_url)
            with pytest.raises(openai.APIStatusError) as raised:
                client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=8)
    error = raised.value
    assert error.status_code == 503
    assert isinstance(error.body, dict) and error.body["code"] == "store_unavailable"
    assert error.response.headers["x-request-id"] == error.body["request_id"]
    assert len(fake.attempts()) == 1  # only the first request reached the upstream
    with open_store(postgres_url, create=False) as store:
        assert [r.position for r in store.read_all()] == before
