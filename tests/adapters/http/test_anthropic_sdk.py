"""The official anthropic SDK as a gateway's client, for a route of Anthropic credentials.

The upstream is the fake provider's ``/v1/messages`` (Anthropic's event stream and
error bodies); the gateway is ``gateway.Gateway`` on uvicorn; everything on loopback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.http import Executor
from routeledger.adapters.testing.clock import counter_ids
from routeledger.adapters.testing.fake_provider import Behaviour, FakeProvider
from routeledger.adapters.testing.fake_provider import key_id as fake_key_id

from .gateway import Gateway, serve
from .test_executor import KEYS, config_text

MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


class World:
    def __init__(self, fake: FakeProvider, root: str, engine: Engine) -> None:
        self.fake = fake
        self.engine = engine
        self.client = anthropic.Anthropic(base_url=root, api_key="sk-client", max_retries=0)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    with FakeProvider({}) as fake:
        text = config_text(fake.base_url, "claude-a", "claude-b", spare_prefill=True).replace(
            'provider = "openai"', 'provider = "anthropic"'
        )
        engine = Engine.open(
            "memory://", parse_config(text), clock=SystemClock(), ids=counter_ids()
        )
        with serve(Gateway(lambda: Executor(engine), accounts=("team",))) as base_url:
            yield World(fake, base_url.removesuffix("/v1"), engine)


def script(world: World, primary: Any, spare: Any = "ok") -> None:
    world.fake.set_scripts({"claude-a": primary, "claude-b": spare})


def test_a_message_parses_as_the_sdks_message_from_the_serving_model(world: World) -> None:
    """Not streamed: the SDK's Message holds the text, stop reason, usage and serving model."""
    script(world, "ok")
    message = world.client.messages.create(model="chat", max_tokens=32, messages=MESSAGES)
    assert message.content[0].type == "text"
    assert message.content[0].text == "The quick brown fox jumps over the lazy dog."
    assert message.model == "claude-a" and message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 10
    call = world.fake.attempts()[-1]
    assert call.key_id == fake_key_id(KEYS["ROUTELEDGER_SECRET_PRIMARY"])  # sent as x-api-key


def test_a_streamed_message_arrives_as_the_sdks_events(world: World) -> None:
    """Streamed: Anthropic's events pass through; the SDK's text stream and final message agree."""
    script(world, "ok")
    with world.client.messages.stream(model="chat", max_tokens=32, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "The quick brown fox jumps over the lazy dog."
    assert final.stop_reason == "end_turn"


def test_a_tool_use_block_is_assembled_from_its_json_deltas(world: World) -> None:
    """A streamed tool_use passes through; not streamed, its input is the parsed JSON."""
    script(world, Behaviour(tool_call="get_weather"))
    message = world.client.messages.create(
        model="chat", max_tokens=32, messages=MESSAGES, tools=[WEATHER_TOOL]
    )
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == json.loads('{"city": "Paris", "unit": "celsius"}')
    assert message.stop_reason == "tool_use"
    assert world.fake.attempts()[-1].body["tools"] == [WEATHER_TOOL]  # type: ignore[index]


def test_a_cut_stream_continues_on_the_prefill_spare(world: World) -> None:
    """A cut after output continues on the spare with the text so far as the assistant turn."""
    script(world, "cut:3", "ok: fox jumps.")
    with world.client.messages.stream(model="chat", max_tokens=32, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
    assert text == "The quick brown fox jumps."
    sent = world.fake.attempts()[-1].body
    assert sent is not None
    assert sent["messages"][-1] == {"role": "assistant", "content": "The quick brown"}


def test_errors_are_the_sdks_own_exceptions(world: World) -> None:
    """Unknown route: NotFoundError; everything failing: a 502 with Anthropic's error shape."""
    with pytest.raises(anthropic.NotFoundError) as missing:
        world.client.messages.create(model="nope", max_tokens=8, messages=MESSAGES)
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["error"]["type"] == "not_found_error"
    script(world, "overloaded", "overloaded")
    with pytest.raises(anthropic.InternalServerError) as failed:
        world.client.messages.create(model="chat", max_tokens=8, messages=MESSAGES)
    assert failed.value.status_code == 502
    body = failed.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["code"] == "fallback_exhausted" and len(body["error"]["failures"]) >= 2


def test_a_chat_completions_call_on_an_anthropic_route_is_refused(world: World) -> None:
    """The OpenAI endpoint on an Anthropic route is a 400 naming the dialect, nothing sent."""
    import httpx

    response = httpx.post(
        str(world.client.base_url).rstrip("/") + "/v1/chat/completions",
        json={"model": "chat", "messages": MESSAGES},
    )
    assert response.status_code == 400
    assert "anthropic" in response.json()["error"]["message"]
    assert world.fake.attempts() == []


def test_the_clients_version_and_beta_headers_reach_the_upstream_and_its_key_does_not(
    world: World,
) -> None:
    """The SDK's anthropic-version and anthropic-beta go upstream; its own x-api-key does not."""
    script(world, "ok")
    beta = {"anthropic-beta": "token-efficient-tools-2025-02-19"}
    sent_version = world.client.default_headers["anthropic-version"]  # the SDK's own, not ours
    world.client.messages.create(model="chat", max_tokens=8, messages=MESSAGES, extra_headers=beta)
    with world.client.messages.stream(
        model="chat", max_tokens=8, messages=MESSAGES, extra_headers=beta
    ) as stream:
        assert stream.get_final_text()
    for call in world.fake.attempts():
        assert call.anthropic_headers["anthropic-beta"] == beta["anthropic-beta"]
        assert call.anthropic_headers["anthropic-version"] == sent_version
        assert call.key_id == fake_key_id(KEYS["ROUTELEDGER_SECRET_PRIMARY"])


def test_a_bad_forwarded_header_is_the_callers_error(world: World) -> None:
    """An anthropic-beta longer than the limit is a 400 naming the header; nothing is sent."""
    with pytest.raises(anthropic.BadRequestError) as refused:
        world.client.messages.create(
            model="chat",
            max_tokens=8,
            messages=MESSAGES,
            extra_headers={"anthropic-beta": "x" * 2_000},
        )
    assert "anthropic-beta" in str(refused.value)
    assert world.fake.attempts() == []
