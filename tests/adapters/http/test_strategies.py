"""The ranked strategies end to end (G6): the Executor over loopback, the engine ranking members
by what it measured and recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine, _seed_of
from routeledger.adapters.http.executor import Executor
from routeledger.adapters.testing.clock import counter_ids
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.routing.selection import EXPLORE_ONE_IN, mix64

KEY_ENV = "ROUTELEDGER_SECRET_STRATEGY"
_EXPLORE_SALT = 0x5EED_E7B1
#: The slow member's time to first token, in seconds: far above loopback noise.
SLOW_S = 0.25


def config_text(base_url: str, strategy: str) -> str:
    return f"""
[credentials.a]
provider = "openai"
base_url = "{base_url}"
secret_env = "{KEY_ENV}"
[credentials.b]
provider = "openai"
base_url = "{base_url}"
secret_env = "{KEY_ENV}"

[models.slow-model]
max_output_tokens = 16
input_micros_per_mtok = 9_000
[models.fast-model]
max_output_tokens = 16
input_micros_per_mtok = 1_000

[routes.chat]
[[routes.chat.chain]]
strategy = "{strategy}"
members = [
  {{ credential = "a", model = "slow-model" }},
  {{ credential = "b", model = "fast-model" }},
]
"""


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    monkeypatch.setenv(KEY_ENV, "sk-strategy-test-0123456789")
    scripts = {
        "slow-model": {"kind": "slow_first_token", "first_token_delay": SLOW_S},
        "fast-model": "ok",
    }
    with FakeProvider(scripts) as provider:
        yield provider


def _serve(upstream: FakeProvider, strategy: str, requests: int) -> list[str]:
    """``requests`` streamed chats one after another; the upstream model that served each."""
    engine = Engine.open(
        "memory://",
        parse_config(config_text(upstream.base_url, strategy)),
        clock=SystemClock(),
        ids=counter_ids(),
    )

    async def go() -> list[str]:
        executor = Executor(engine)
        served = []
        try:
            for _ in range(requests):
                body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
                async for _ in executor.stream_chat(body, route="chat", caller_scope="u"):
                    pass
            served = [a.model or "" for a in upstream.attempts()]
        finally:
            await executor.aclose()
        return served

    try:
        return asyncio.run(go())
    finally:
        engine.close()


def test_least_latency_learns_which_member_answers_first(upstream: FakeProvider) -> None:
    """Each member is tried once (unmeasured ranks first), then every request goes to the
    member whose first token came sooner, except those whose seed explores."""
    served = _serve(upstream, "least_latency", 10)
    assert served[:2] == ["slow-model", "fast-model"]
    explores = [
        mix64(_seed_of(f"req-{n}"), 1 ^ _EXPLORE_SALT) % EXPLORE_ONE_IN == 0 for n in range(1, 11)
    ]
    for n in range(2, 10):
        if not explores[n]:
            assert served[n] == "fast-model", (n, served)
    assert served.count("fast-model") >= 7


def test_lowest_cost_routes_to_the_cheaper_model(upstream: FakeProvider) -> None:
    """lowest_cost sends every request to the model whose price for it is lowest, although
    it is listed second."""
    assert _serve(upstream, "lowest_cost", 3) == ["fast-model"] * 3
