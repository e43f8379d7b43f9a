"""A real pydantic-ai ``Agent`` on ``RouteLedgerModel``, the fake provider as its upstream on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelResponse, ToolCallPart, ToolReturnPart

from routeledger.adapters import Engine, Executor, RouteLedgerModel
from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.testing.clock import counter_ids
from routeledger.adapters.testing.fake_provider import Behaviour, FakeProvider
from routeledger.core.errors import UsageError
from routeledger.core.routing import FailureClass
from routeledger.core.routing.events import AttemptFailed, RequestReceived
from tests.adapters.http.test_executor import KEYS, config_text

T = TypeVar("T")
ANSWER = "The quick brown fox jumps over the lazy dog."
SLOW_WORDS = "one two three four five six"


class World:
    """The fake upstream and an engine with a ``chat`` route (primary, then spare)."""

    def __init__(self, fake: FakeProvider, engine: Engine, names: tuple[str, str]) -> None:
        self.fake = fake
        self.engine = engine
        self.names = names

    def script(self, primary: Any, spare: Any = "ok") -> None:
        self.fake.set_scripts({self.names[0]: primary, self.names[1]: spare})

    def failures(self) -> list[FailureClass]:
        events = [r.event for r in self.engine.store.read_all()]
        return [e.failure for e in events if isinstance(e, AttemptFailed)]

    def received(self) -> list[RequestReceived]:
        events = [r.event for r in self.engine.store.read_all()]
        return [e for e in events if isinstance(e, RequestReceived)]

    def run(self, use: Callable[[Agent[None, str]], Awaitable[T]], **model: Any) -> T:
        """``use(agent)`` on this loop with a fresh executor and an Agent on RouteLedgerModel."""

        async def main() -> T:
            executor = Executor(self.engine)
            try:
                agent: Agent[None, str] = Agent(
                    RouteLedgerModel(executor, "chat", accounts=["team"], **model)
                )
                return await use(agent)
            finally:
                await executor.aclose()

        return asyncio.run(main())


def _world(monkeypatch: pytest.MonkeyPatch, provider: str) -> Iterator[World]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    names = ("claude-a", "claude-b") if provider == "anthropic" else ("gpt-a", "gpt-b")
    with FakeProvider({}) as fake:
        text = config_text(fake.base_url, *names).replace(
            'provider = "openai"', f'provider = "{provider}"'
        )
        engine = Engine.open(
            "memory://", parse_config(text), clock=SystemClock(), ids=counter_ids()
        )
        try:
            yield World(fake, engine, names)
        finally:
            engine.close()


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    yield from _world(monkeypatch, "openai")


@pytest.fixture(params=["openai", "anthropic"])
def any_dialect(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    yield from _world(monkeypatch, request.param)


def responses(messages: list[Any]) -> list[ModelResponse]:
    return [m for m in messages if isinstance(m, ModelResponse)]


def test_a_run_is_one_engine_request_answered_by_the_serving_model(any_dialect: World) -> None:
    """agent.run: the output is the upstream's text and the response names the model that served."""
    any_dialect.script("ok")

    async def use(agent: Agent[None, str]) -> Any:
        return await agent.run("What is the weather in Paris?")

    result = any_dialect.run(use, caller_scope="user:42")
    assert result.output == ANSWER
    (response,) = responses(result.all_messages())
    assert response.model_name == any_dialect.names[0]
    assert response.usage.input_tokens == 10
    (received,) = any_dialect.received()
    assert received.route == "chat" and received.caller_scope == "user:42"


def test_a_streamed_run_arrives_live_and_in_order(any_dialect: World) -> None:
    """agent.run_stream: text deltas in the upstream's order, the first before the upstream finished."""
    any_dialect.script(Behaviour(content=SLOW_WORDS, token_interval=0.1))
    fake = any_dialect.fake

    async def use(agent: Agent[None, str]) -> tuple[list[tuple[str, int]], list[Any]]:
        seen = []
        async with agent.run_stream("Count") as stream:
            async for delta in stream.stream_text(delta=True, debounce_by=None):
                seen.append((delta, fake.attempts()[-1].tokens_sent))
        return seen, stream.all_messages()

    seen, messages = any_dialect.run(use)
    assert "".join(delta for delta, _ in seen).split() == SLOW_WORDS.split()
    assert seen[0][1] < len(SLOW_WORDS.split())  # the upstream had more to send
    assert responses(messages)[-1].model_name == any_dialect.names[0]


def test_a_tool_call_round_trip_is_two_engine_requests(world: World) -> None:
    """The model calls an @agent.tool, the tool's return goes back through the engine, the answer ends the run."""
    world.script([Behaviour(tool_call="get_weather"), "ok:Sunny in Paris."])
    calls: list[dict[str, str]] = []

    async def use(agent: Agent[None, str]) -> Any:
        @agent.tool
        def get_weather(ctx: RunContext[None], city: str, unit: str) -> str:
            """The weather in a city."""
            calls.append({"city": city, "unit": unit})
            return f"Sunny, 21 degrees {unit} in {city}"

        return await agent.run("What is the weather in Paris?")

    result = world.run(use)
    assert calls == [{"city": "Paris", "unit": "celsius"}]
    assert result.output == "Sunny in Paris."
    parts = [part for message in result.all_messages() for part in message.parts]
    assert any(isinstance(p, ToolCallPart) and p.tool_name == "get_weather" for p in parts)
    assert any(isinstance(p, ToolReturnPart) for p in parts)
    assert len(world.received()) == 2
    sent = world.fake.attempts()[-1].body
    assert sent is not None
    tool_messages = [m for m in sent["messages"] if m["role"] == "tool"]
    assert tool_messages and "Sunny, 21 degrees celsius in Paris" in tool_messages[0]["content"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_failover_is_invisible_to_the_agent_but_named_in_its_messages(world: World) -> None:
    """The primary's 429 is recorded, the spare serves, and model_name says the spare served."""
    world.script({"kind": "rate_limited", "retry_after": 30})

    async def use(agent: Agent[None, str]) -> Any:
        return await agent.run("Hello")

    result = world.run(use)
    assert result.output == ANSWER
    assert responses(result.all_messages())[-1].model_name == "gpt-b"
    assert world.failures() == [FailureClass.RATE_LIMITED]


def test_exhaustion_is_pydantic_ais_model_http_error_with_routeledgers_answer(world: World) -> None:
    """Nothing serving: the agent raises ModelHTTPError with RouteLedger's 502 body; one engine request."""
    world.script("overloaded", "overloaded")

    async def use(agent: Agent[None, str]) -> Any:
        return await agent.run("Hello")

    with pytest.raises(ModelHTTPError) as caught:
        world.run(use)
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "fallback_exhausted"
    assert len(world.received()) == 1  # neither the SDK nor pydantic-ai ran the route again


def test_an_unknown_route_is_refused_when_the_model_is_made(world: World) -> None:
    """A route that is not configured is a UsageError naming it, before any agent runs."""
    with pytest.raises(UsageError, match="'nope'"):
        RouteLedgerModel(Executor(world.engine), "nope")


def test_importing_the_adapters_imports_no_sdk() -> None:
    """routeledger.adapters and its integrations package import neither SDK nor pydantic-ai until used."""
    code = (
        "import sys, routeledger.adapters, routeledger.adapters.integrations\n"
        "loaded = [m for m in ('openai', 'anthropic', 'pydantic_ai', 'httpx2') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "from routeledger.adapters import RouteLedgerModel\n"
        "assert 'pydantic_ai' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
