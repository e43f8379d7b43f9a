"""The real openai and anthropic SDK clients over RouteLedger's transport, the fake provider upstream.

Each SDK client is built as a user would build it (``http_client=`` an httpx2
client whose transport is RouteLedger's), sync and async; the upstream is the
fake provider on loopback. Nothing else stands between the SDK and the engine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from routeledger.adapters import Engine, Executor
from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.integrations import AsyncRouteLedgerTransport, RouteLedgerTransport
from routeledger.adapters.testing.clock import counter_ids
from routeledger.adapters.testing.fake_provider import Behaviour, FakeProvider
from routeledger.core.routing import FailureClass
from routeledger.core.routing.events import AttemptFailed, RequestReceived
from tests.adapters.http.test_executor import KEYS, config_text

MODES = ["sync", "async"]
#: Where the SDKs think they send requests; the transport never opens a socket to it.
OPENAI_BASE = "http://routeledger.invalid/v1"
ANTHROPIC_BASE = "http://routeledger.invalid"
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
OPENAI_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ANTHROPIC_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
SLOW_WORDS = "one two three four five six"


class World:
    """The fake upstream and one engine; SDK calls run sync or async as ``mode`` says."""

    def __init__(self, fake: FakeProvider, engine: Engine, mode: str, sdk: str) -> None:
        self.fake = fake
        self.engine = engine
        self.mode = mode
        self.sdk = sdk

    def script(self, primary: Any, spare: Any = "ok") -> None:
        names = ("claude-a", "claude-b") if self.sdk == "anthropic" else ("gpt-a", "gpt-b")
        self.fake.set_scripts({names[0]: primary, names[1]: spare})

    def events(self) -> list[Any]:
        return [r.event for r in self.engine.store.read_all()]

    def failures(self) -> list[FailureClass]:
        return [e.failure for e in self.events() if isinstance(e, AttemptFailed)]

    def received(self) -> list[RequestReceived]:
        return [e for e in self.events() if isinstance(e, RequestReceived)]

    def call(self, use: Callable[[Any], Any], **transport: Any) -> Any:
        """``use(client)`` with a fresh SDK client over the transport (awaited when async)."""
        transport.setdefault("accounts", ("team",))
        if self.mode == "sync":
            sync_transport = RouteLedgerTransport(Executor(self.engine), **transport)
            with self._client(httpx2.Client(transport=sync_transport)) as client:
                return use(client)

        async def run() -> Any:
            executor = Executor(self.engine)
            async_transport = AsyncRouteLedgerTransport(executor, **transport)
            try:
                async with self._client(httpx2.AsyncClient(transport=async_transport)) as client:
                    return await use(client)
            finally:
                await executor.aclose()

        return asyncio.run(run())

    def _client(self, http: Any) -> Any:
        asynchronous = self.mode == "async"
        if self.sdk == "anthropic":
            make: Any = anthropic.AsyncAnthropic if asynchronous else anthropic.Anthropic
            return make(base_url=ANTHROPIC_BASE, api_key="unused", http_client=http, max_retries=0)
        make = openai.AsyncOpenAI if asynchronous else openai.OpenAI
        return make(base_url=OPENAI_BASE, api_key="unused", http_client=http, max_retries=0)


def _world(monkeypatch: pytest.MonkeyPatch, mode: str, sdk: str) -> Iterator[World]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    with FakeProvider({}) as fake:
        if sdk == "anthropic":
            text = config_text(fake.base_url, "claude-a", "claude-b").replace(
                'provider = "openai"', 'provider = "anthropic"'
            )
        else:
            text = config_text(fake.base_url, "gpt-a", "gpt-b")
        engine = Engine.open(
            "memory://", parse_config(text), clock=SystemClock(), ids=counter_ids()
        )
        try:
            yield World(fake, engine, mode, sdk)
        finally:
            engine.close()


@pytest.fixture(params=MODES)
def oa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    yield from _world(monkeypatch, request.param, "openai")


@pytest.fixture(params=MODES)
def an(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    yield from _world(monkeypatch, request.param, "anthropic")


def both(world: World, sync: Callable[[Any], Any], asynchronous: Callable[[Any], Any]) -> Any:
    """The mode's half of a pair of callables (a sync client's, an async client's)."""
    return sync if world.mode == "sync" else asynchronous


# --- openai -------------------------------------------------------------------------


def _oa_create(**kwargs: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    def sync(client: Any) -> Any:
        return client.chat.completions.with_raw_response.create(**kwargs)

    async def asynchronous(client: Any) -> Any:
        return await client.chat.completions.with_raw_response.create(**kwargs)

    return sync, asynchronous


def test_openai_completion_is_the_sdks_chat_completion_with_the_request_id(oa: World) -> None:
    """Not streamed: the SDK parses the answer of the serving model; x-request-id is the engine's."""
    oa.script("ok")
    raw = oa.call(both(oa, *_oa_create(model="chat", messages=MESSAGES, max_tokens=32)))
    answer = raw.parse()
    assert answer.choices[0].message.content == "The quick brown fox jumps over the lazy dog."
    assert answer.model == "gpt-a"
    assert answer.usage is not None and answer.usage.prompt_tokens == 10
    (received,) = oa.received()
    assert raw.headers["x-request-id"] == received.request_id
    assert answer._request_id == received.request_id
    assert raw.headers["x-routeledger-model"] == "gpt-a"
    assert received.caller_scope == "client:sdk" and received.route == "chat"


def _oa_stream_sync(fake: FakeProvider) -> Callable[[Any], Any]:
    def use(client: Any) -> list[tuple[str, int]]:
        seen = []
        for chunk in client.chat.completions.create(
            model="chat", messages=MESSAGES, stream=True, max_tokens=32
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append((chunk.choices[0].delta.content, fake.attempts()[-1].tokens_sent))
        return seen

    return use


def _oa_stream_async(fake: FakeProvider) -> Callable[[Any], Any]:
    async def use(client: Any) -> list[tuple[str, int]]:
        seen = []
        stream = await client.chat.completions.create(
            model="chat", messages=MESSAGES, stream=True, max_tokens=32
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append((chunk.choices[0].delta.content, fake.attempts()[-1].tokens_sent))
        return seen

    return use


def test_openai_stream_is_live_and_in_order(oa: World) -> None:
    """Streamed: the deltas arrive in the upstream's order, the first before the upstream finished."""
    oa.script(Behaviour(content=SLOW_WORDS, token_interval=0.1))
    seen = oa.call(both(oa, _oa_stream_sync(oa.fake), _oa_stream_async(oa.fake)))
    assert "".join(text for text, _ in seen) == SLOW_WORDS
    assert seen[0][1] < len(SLOW_WORDS.split())  # the upstream had more to send


def test_openai_tool_call_reaches_the_sdk(oa: World) -> None:
    """A tool call passes through: the SDK sees its name, arguments and finish reason."""
    oa.script(Behaviour(tool_call="get_weather"))
    raw = oa.call(
        both(oa, *_oa_create(model="chat", messages=MESSAGES, tools=[OPENAI_TOOL], max_tokens=32))
    )
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"
    assert oa.fake.attempts()[-1].body["tools"] == [OPENAI_TOOL]


def test_openai_failover_is_a_normal_answer_from_the_spare(oa: World) -> None:
    """The primary's 429 is recorded and the spare serves; the SDK sees an ordinary completion."""
    oa.script({"kind": "rate_limited", "retry_after": 30})
    raw = oa.call(both(oa, *_oa_create(model="chat", messages=MESSAGES, max_tokens=32)))
    assert raw.status_code == 200 and raw.parse().model == "gpt-b"
    assert oa.failures() == [FailureClass.RATE_LIMITED]
    assert raw.headers["x-routeledger-attempts"] == "2"


def test_openai_exhaustion_raises_the_sdks_own_error_with_routeledgers_answer(oa: World) -> None:
    """Every member failing: the SDK raises InternalServerError, 502 fallback_exhausted, the request id."""
    oa.script("overloaded", "overloaded")
    with pytest.raises(openai.InternalServerError) as caught:
        oa.call(both(oa, *_oa_create(model="chat", messages=MESSAGES, max_tokens=32)))
    assert caught.value.status_code == 502
    assert caught.value.code == "fallback_exhausted"
    assert isinstance(caught.value.body, dict)
    assert [f["failure"] for f in caught.value.body["failures"]][-1] == "provider_unavailable"
    (received,) = oa.received()
    assert caught.value.request_id == received.request_id


def test_openai_stream_exhaustion_raises_before_any_chunk(oa: World) -> None:
    """A stream that fails before its first chunk is a plain HTTP error the SDK raises."""
    oa.script("overloaded", "overloaded")
    with pytest.raises(openai.InternalServerError) as caught:
        oa.call(both(oa, _oa_stream_sync(oa.fake), _oa_stream_async(oa.fake)))
    assert caught.value.status_code == 502


# --- anthropic ----------------------------------------------------------------------


def _an_create(**kwargs: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    kwargs = {"model": "chat", "max_tokens": 32, "messages": MESSAGES, **kwargs}

    def sync(client: Any) -> Any:
        raw = client.messages.with_raw_response.create(**kwargs)
        return raw.headers, raw.parse()

    async def asynchronous(client: Any) -> Any:
        raw = await client.messages.with_raw_response.create(**kwargs)
        return raw.headers, await raw.parse()

    return sync, asynchronous


def test_anthropic_message_is_the_sdks_message_with_the_request_id(an: World) -> None:
    """Not streamed: the SDK's Message from the serving model; request-id is the engine's."""
    an.script("ok")
    headers, message = an.call(both(an, *_an_create()))
    assert message.content[0].text == "The quick brown fox jumps over the lazy dog."
    assert message.model == "claude-a" and message.stop_reason == "end_turn"
    (received,) = an.received()
    assert message._request_id == received.request_id
    assert headers["x-request-id"] == received.request_id


def _an_stream_sync(fake: FakeProvider) -> Callable[[Any], Any]:
    def use(client: Any) -> list[tuple[str, int]]:
        with client.messages.stream(model="chat", max_tokens=32, messages=MESSAGES) as stream:
            return [(text, fake.attempts()[-1].tokens_sent) for text in stream.text_stream]

    return use


def _an_stream_async(fake: FakeProvider) -> Callable[[Any], Any]:
    async def use(client: Any) -> list[tuple[str, int]]:
        async with client.messages.stream(model="chat", max_tokens=32, messages=MESSAGES) as stream:
            return [(text, fake.attempts()[-1].tokens_sent) async for text in stream.text_stream]

    return use


def test_anthropic_stream_is_live_and_in_order(an: World) -> None:
    """Streamed: the text deltas arrive in order, the first before the upstream finished."""
    an.script(Behaviour(content=SLOW_WORDS, token_interval=0.1))
    seen = an.call(both(an, _an_stream_sync(an.fake), _an_stream_async(an.fake)))
    assert "".join(text for text, _ in seen) == SLOW_WORDS
    assert seen[0][1] < len(SLOW_WORDS.split())


def test_anthropic_tool_use_reaches_the_sdk(an: World) -> None:
    """A tool_use block passes through with its parsed input and stop reason."""
    an.script(Behaviour(tool_call="get_weather"))
    _, message = an.call(both(an, *_an_create(tools=[ANTHROPIC_TOOL])))
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input["city"] == "Paris"
    assert message.stop_reason == "tool_use"


def test_anthropic_failover_is_a_normal_answer_from_the_spare(an: World) -> None:
    """The primary's 429 is recorded and the spare serves; the SDK sees an ordinary Message."""
    an.script({"kind": "rate_limited", "retry_after": 30})
    _, message = an.call(both(an, *_an_create()))
    assert message.model == "claude-b"
    assert an.failures() == [FailureClass.RATE_LIMITED]


def test_anthropic_exhaustion_raises_the_sdks_own_error(an: World) -> None:
    """Every member failing: the SDK raises InternalServerError, 502, Anthropic's error shape."""
    an.script("overloaded", "overloaded")
    with pytest.raises(anthropic.InternalServerError) as caught:
        an.call(both(an, *_an_create()))
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["code"] == "fallback_exhausted"
    (received,) = an.received()
    assert caught.value.request_id == received.request_id


# --- what both share ---------------------------------------------------------------


@pytest.fixture
def sync_oa(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    yield from _world(monkeypatch, "sync", "openai")


def test_a_legacy_httpx_client_works_too(sync_oa: World) -> None:
    """openai 3 also takes an httpx (not httpx2) client: the transport answers in httpx's types."""
    sync_oa.script({"kind": "rate_limited", "retry_after": 30})
    transport = RouteLedgerTransport(Executor(sync_oa.engine))
    http = httpx.Client(transport=transport)
    with openai.OpenAI(base_url=OPENAI_BASE, api_key="unused", http_client=http) as client:
        answer = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=32)
    assert answer.model == "gpt-b"
    assert isinstance(transport, httpx.BaseTransport) and isinstance(
        transport, httpx2.BaseTransport
    )


def test_the_sdks_own_retries_never_rerun_a_final_answer(sync_oa: World) -> None:
    """With the SDK's default retries on, a refused request is one request (x-should-retry: false)."""
    sync_oa.script("rate_limited", "rate_limited")
    http = httpx2.Client(transport=RouteLedgerTransport(Executor(sync_oa.engine)))
    with (
        openai.OpenAI(base_url=OPENAI_BASE, api_key="unused", http_client=http) as client,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=32)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(sync_oa.received()) == 1


def test_routes_map_sdk_model_names_and_a_header_names_the_caller(sync_oa: World) -> None:
    """``routes`` maps the SDK's model to a route; x-routeledger-caller-scope names one request's caller."""
    sync_oa.script("ok")

    def use(client: Any) -> Any:
        return client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            max_tokens=32,
            extra_headers={"x-routeledger-caller-scope": "user:42"},
        )

    answer = sync_oa.call(use, routes={"gpt-4o": "chat"}, caller_scope="team:web")
    assert answer.model == "gpt-a"
    (received,) = sync_oa.received()
    assert received.route == "chat" and received.caller_scope == "user:42"


def test_an_endpoint_the_executor_does_not_serve_is_a_404_and_records_nothing(
    sync_oa: World,
) -> None:
    """Embeddings (or any other endpoint) is the SDK's NotFoundError naming it; the log stays empty."""
    with pytest.raises(openai.NotFoundError) as caught:
        sync_oa.call(lambda client: client.embeddings.create(model="chat", input="hi"))
    assert caught.value.code == "unsupported_endpoint"
    assert "/v1/embeddings" in caught.value.message
    assert sync_oa.received() == [] and sync_oa.fake.attempts() == []


def test_a_bad_caller_scope_is_the_callers_400_and_nothing_is_sent(sync_oa: World) -> None:
    """A caller scope the engine refuses is a 400 naming caller_scope; no upstream call is made."""
    sync_oa.script("ok")
    with pytest.raises(openai.BadRequestError) as caught:
        sync_oa.call(
            lambda client: client.chat.completions.create(
                model="chat", messages=MESSAGES, max_tokens=32
            ),
            caller_scope="x" * 10_000,
        )
    assert caught.value.param == "caller_scope"
    assert sync_oa.fake.attempts() == []


def test_a_stream_the_client_stops_reading_ends_its_run(sync_oa: World) -> None:
    """Closing a live stream early ends the run: the attempt is the caller's cancellation, the hold resolved."""
    sync_oa.script(Behaviour(content=SLOW_WORDS, token_interval=0.1))

    def use(client: Any) -> str:
        stream = client.chat.completions.create(
            model="chat", messages=MESSAGES, stream=True, max_tokens=32
        )
        first = next(chunk for chunk in stream if chunk.choices and chunk.choices[0].delta.content)
        stream.close()
        return str(first.choices[0].delta.content)

    assert sync_oa.call(use) == "one"
    assert sync_oa.failures() == [FailureClass.CALLER_CANCELLED]
    assert "HoldRefunded" in [type(event).__name__ for event in sync_oa.events()]
    assert len(sync_oa.fake.attempts()) == 1  # nothing tried after the client left


def test_openai_stream_failing_after_output_raises_the_sdks_error_while_iterating(
    oa: World,
) -> None:
    """A cut after text reached the client (no prefill, no instruction) ends with the in-band error."""
    oa.script("cut:3")
    with pytest.raises(openai.APIError) as caught:
        oa.call(both(oa, _oa_stream_sync(oa.fake), _oa_stream_async(oa.fake)))
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "fallback_exhausted"
    assert [f["failure"] for f in body["failures"]] == ["stream_interrupted", "caller_cancelled"]
    assert oa.failures() == [FailureClass.STREAM_INTERRUPTED, FailureClass.CALLER_CANCELLED]
    assert len(oa.fake.attempts()) == 1  # the text the client has is never sent again
