"""The official openai SDK as a gateway's client: a gateway over ``Executor`` on loopback HTTP.

The upstream is the fake provider (loopback); the gateway is ``gateway.Gateway``
on uvicorn (loopback); the client is ``openai.OpenAI`` with retries off, so each
test sees exactly what one call returns or raises.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.http import Executor
from routeledger.adapters.testing.clock import counter_ids
from routeledger.adapters.testing.fake_provider import Behaviour, FakeProvider
from routeledger.core.routing import FailureClass
from routeledger.core.routing.events import AttemptFailed, RequestReceived

from .gateway import Gateway, serve
from .test_executor import KEYS, config_text

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


class World:
    """The fake upstream, an engine, a gateway over its executor and an openai client."""

    def __init__(self, fake: FakeProvider, base_url: str, engine: Engine) -> None:
        self.fake = fake
        self.engine = engine
        self.client = openai.OpenAI(base_url=base_url, api_key="sk-client", max_retries=0)

    def failures(self) -> list[FailureClass]:
        events = [r.event for r in self.engine.store.read_all()]
        return [e.failure for e in events if isinstance(e, AttemptFailed)]

    def requests(self) -> int:
        return sum(isinstance(r.event, RequestReceived) for r in self.engine.store.read_all())


@contextmanager
def running(monkeypatch: pytest.MonkeyPatch, *, spare_prefill: bool) -> Iterator[World]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    with FakeProvider({}) as fake:
        text = config_text(
            fake.base_url, "primary-model", "spare-model", spare_prefill=spare_prefill
        )
        engine = Engine.open(
            "memory://", parse_config(text), clock=SystemClock(), ids=counter_ids()
        )
        gateway = Gateway(lambda: Executor(engine), accounts=("team",))
        with serve(gateway) as base_url:
            yield World(fake, base_url, engine)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with running(monkeypatch, spare_prefill=False) as made:
        yield made


@pytest.fixture
def prefill_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with running(monkeypatch, spare_prefill=True) as made:
        yield made


def drain(stream: Any, pieces: list[str]) -> None:
    """Read a streamed answer's content deltas into ``pieces`` until it ends or raises."""
    for chunk in stream:
        pieces.append((chunk.choices[0].delta.content or "") if chunk.choices else "")


def script(world: World, primary: Any, spare: Any = "ok") -> None:
    world.fake.set_scripts({"primary-model": primary, "spare-model": spare})


def test_a_non_streamed_tool_call_parses_as_the_sdks_chat_completion(world: World) -> None:
    """The SDK's ChatCompletion carries the tool call, its finish reason, usage and serving model."""
    script(world, Behaviour(tool_call="get_weather"))
    answer = world.client.chat.completions.create(
        model="chat", messages=MESSAGES, tools=[WEATHER_TOOL], max_tokens=32
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert answer.model == "primary-model"
    assert answer.usage is not None and answer.usage.prompt_tokens == 10


def test_the_clients_tools_reach_the_upstream_unchanged(world: World) -> None:
    """The body passes through: tools, tool_choice, temperature, user and unknown fields."""
    script(world, "ok")
    world.client.chat.completions.create(
        model="chat",
        messages=MESSAGES,
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        temperature=0.2,
        user="u-1",
        max_tokens=32,
        extra_body={"x_vendor_field": {"keep": True}},
    )
    sent = world.fake.attempts()[-1].body
    assert sent["tools"] == [WEATHER_TOOL]
    assert sent["tool_choice"] == "auto"
    assert sent["temperature"] == 0.2 and sent["user"] == "u-1"
    assert sent["x_vendor_field"] == {"keep": True}
    assert sent["model"] == "primary-model"


def test_a_streamed_tool_call_arrives_as_the_sdks_chunks(world: World) -> None:
    """Streamed tool-call deltas pass through whole; the SDK reassembles the arguments."""
    script(world, Behaviour(tool_call="get_weather"))
    stream = world.client.chat.completions.create(
        model="chat", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True, max_tokens=32
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                name += call.function.name or "" if call.function else ""
                arguments += call.function.arguments or "" if call.function else ""
            finish = choice.finish_reason or finish
    assert name == "get_weather"
    assert json.loads(arguments)["city"] == "Paris"
    assert finish == "tool_calls"


def test_streamed_text_reaches_the_client_before_the_upstream_has_finished(world: World) -> None:
    """Live pass-through: the first delta arrives while the upstream is still generating."""
    script(world, Behaviour(content="one two three four five six", token_interval=0.15))
    stream = world.client.chat.completions.create(
        model="chat", messages=MESSAGES, stream=True, max_tokens=32
    )
    sent_at_first_delta = None
    text = ""
    for chunk in stream:
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta and sent_at_first_delta is None:
            sent_at_first_delta = world.fake.attempts()[-1].tokens_sent
        text += delta or ""
    assert text == "one two three four five six"
    assert sent_at_first_delta is not None and sent_at_first_delta < 6


def test_the_usage_chunk_reaches_only_a_client_that_asked_for_it(world: World) -> None:
    """stream_options.include_usage is honoured as the client set it (the executor always asks)."""
    script(world, "ok")
    plain = list(world.client.chat.completions.create(model="chat", messages=MESSAGES, stream=True))
    assert all(chunk.usage is None for chunk in plain)
    with_usage = list(
        world.client.chat.completions.create(
            model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.prompt_tokens == 10


def test_an_unknown_model_is_the_sdks_not_found_error(world: World) -> None:
    """An unknown route is 404 model_not_found, as OpenAI answers it."""
    with pytest.raises(openai.NotFoundError) as caught:
        world.client.chat.completions.create(model="no-such-route", messages=MESSAGES)
    assert caught.value.code == "model_not_found"
    assert "no-such-route" in caught.value.message


def test_a_content_filter_keeps_its_own_status_and_type(world: World) -> None:
    """A single non-fallback failure is a 400 content_filtered, not a 502 exhaustion."""
    script(world, "content_filter")
    with pytest.raises(openai.BadRequestError) as caught:
        world.client.chat.completions.create(model="chat", messages=MESSAGES)
    assert caught.value.code == "content_filtered"
    assert len(world.fake.attempts()) == 1  # no fallback


def test_exhaustion_is_a_502_with_the_per_attempt_report_and_no_key(world: World) -> None:
    """Every member failing is a 502 whose error lists each attempt, scrubbed of keys."""
    script(world, "overloaded", "overloaded")
    with pytest.raises(openai.InternalServerError) as caught:
        world.client.chat.completions.create(model="chat", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.code == "fallback_exhausted"
    body = caught.value.body
    assert isinstance(body, dict)
    assert [f["failure"] for f in body["failures"]][-2:] == ["provider_unavailable"] * 2
    assert "sk-test" not in json.dumps(body)


def test_a_budget_rejection_is_a_402_the_sdk_does_not_retry(world: World) -> None:
    """A refused hold is 402 insufficient_quota/budget_exceeded, and nothing is dispatched."""
    script(world, "ok")
    with pytest.raises(openai.APIStatusError) as caught:
        world.client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x" * 4_000_000}]
        )
    assert caught.value.status_code == 402
    assert caught.value.code == "budget_exceeded"
    assert world.fake.attempts() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", -1), ("max_tokens", 0), ("max_tokens", 1.5), ("max_completion_tokens", 10**9)],
)
def test_a_bad_output_cap_is_a_400_naming_it_and_records_nothing(
    world: World, field: str, value: object
) -> None:
    """A negative, zero, fractional or too-large output cap is refused before any hold (no zero hold)."""
    with pytest.raises(openai.BadRequestError) as caught:
        world.client.chat.completions.create(
            model="chat", messages=MESSAGES, extra_body={field: value}
        )
    assert caught.value.param == field
    assert world.requests() == 0
    assert world.fake.attempts() == []


def test_a_body_without_messages_is_a_400_naming_messages(world: World) -> None:
    """A body with no messages is the caller's mistake: 400 param=messages, nothing recorded."""
    with pytest.raises(openai.BadRequestError) as caught:
        world.client.chat.completions.create(model="chat", messages=[])
    assert caught.value.param == "messages"
    assert world.requests() == 0


def test_problem_json_is_served_when_the_client_asks_for_it(world: World) -> None:
    """Accept: application/problem+json gets the RFC 9457 body."""
    import httpx

    url = str(world.client.base_url) + "chat/completions"
    response = httpx.post(
        url,
        json={"model": "nope", "messages": MESSAGES},
        headers={"Accept": "application/problem+json"},
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/model-not-found")


def test_a_live_stream_cut_is_never_resent_the_client_gets_the_error_event(world: World) -> None:
    """After text reached the client, a target without prefill is not restarted: an error ends it."""
    script(world, "cut:3", "ok")
    stream = world.client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
    pieces: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        drain(stream, pieces)
    assert "".join(pieces) == "The quick brown"  # exactly what the upstream sent, once
    assert "stream interrupted" in str(caught.value.message).lower()
    assert [a.model for a in world.fake.attempts()] == ["primary-model"]
    assert world.failures() == [FailureClass.STREAM_INTERRUPTED, FailureClass.CALLER_CANCELLED]


def test_a_live_stream_cut_continues_on_a_prefill_target(prefill_world: World) -> None:
    """After a cut, a prefill target continues: the text already sent is its assistant prefix."""
    script(prefill_world, "cut:3", "ok: fox jumps.")
    stream = prefill_world.client.chat.completions.create(
        model="chat", messages=MESSAGES, stream=True
    )
    text = "".join(
        (chunk.choices[0].delta.content or "") if chunk.choices else "" for chunk in stream
    )
    assert text.startswith("The quick brown") and text.count("The quick brown") == 1
    continued = prefill_world.fake.attempts()[-1].body["messages"]
    assert continued[-1] == {"role": "assistant", "content": "The quick brown"}
