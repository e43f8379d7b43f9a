"""OpenTelemetry spans per request and per attempt, through Engine, Executor and serve on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import ConfigError, parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.results import Exhausted, Served
from routeledger.adapters.http.executor import Completion, Executor
from routeledger.adapters.server import Gateway
from routeledger.adapters.testing.clock import counter_ids
from routeledger.adapters.testing.fake_provider import FakeProvider
from tests.adapters.http.gateway import serve
from tests.adapters.http.test_executor import KEYS, config_text

RATE_LIMITED = {"kind": "rate_limited", "retry_after": 30}
BODY = {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 64}
TELEMETRY_ON = "\n[telemetry]\notel = true\n"


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    traces = TracerProvider()
    traces.add_span_processor(SimpleSpanProcessor(exporter))
    return traces


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider({"primary-model": RATE_LIMITED, "spare-model": "ok"}) as upstream:
        yield upstream


def open_engine(fake: FakeProvider, *, tracer_provider: Any = None, extra: str = "") -> Engine:
    config = parse_config(config_text(fake.base_url, "primary-model", "spare-model") + extra)
    return Engine.open(
        "memory://",
        config,
        clock=SystemClock(),
        ids=counter_ids(),
        tracer_provider=tracer_provider,
    )


async def chat(engine: Engine) -> Completion:
    executor = Executor(engine)
    try:
        return await executor.chat(BODY, route="chat", caller_scope="user:test", accounts=("team",))
    finally:
        await executor.aclose()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def test_a_failover_request_has_a_span_with_one_child_per_attempt(
    fake: FakeProvider, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The request span parents both attempts; the 429'd one says rate_limited, the spare serves."""
    engine = open_engine(fake, tracer_provider=provider)
    completion = asyncio.run(chat(engine))
    assert isinstance(completion.result, Served)
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"chat chat", "chat primary-model", "chat spare-model"}
    request, failed, served = (
        spans["chat chat"],
        spans["chat primary-model"],
        spans["chat spare-model"],
    )
    assert request.parent is None and request.kind is SpanKind.INTERNAL
    for attempt in (failed, served):
        assert attempt.parent is not None
        assert attempt.parent.span_id == request.context.span_id
        assert attempt.context.trace_id == request.context.trace_id
        assert attempt.kind is SpanKind.CLIENT
        assert attempt.attributes["gen_ai.operation.name"] == "chat"
        assert attempt.attributes["gen_ai.provider.name"] == "openai"
        assert attempt.attributes["server.address"] == "127.0.0.1"
        assert attempt.attributes["server.port"] == httpx.URL(fake.base_url).port
        assert attempt.attributes["routeledger.request_id"] == completion.request_id
    assert failed.attributes["error.type"] == "rate_limited"
    assert failed.attributes["http.response.status_code"] == 429
    assert failed.attributes["routeledger.retry_after_us"] == 30_000_000
    assert failed.attributes["routeledger.attempt"] == 1
    assert failed.status.status_code is StatusCode.ERROR
    assert served.attributes["routeledger.attempt"] == 2
    assert served.attributes["routeledger.credential_id"] == "spare"
    assert served.attributes["gen_ai.response.model"] == "spare-model"
    assert served.attributes["gen_ai.usage.output_tokens"] == completion.result.output_tokens > 0
    assert "error.type" not in served.attributes
    assert request.attributes["gen_ai.request.model"] == "chat"
    assert request.attributes["gen_ai.response.model"] == "spare-model"
    assert request.attributes["gen_ai.provider.name"] == "openai"
    assert request.attributes["gen_ai.usage.input_tokens"] == completion.result.input_tokens
    assert request.attributes["gen_ai.usage.output_tokens"] == completion.result.output_tokens
    assert request.attributes["routeledger.attempts"] == 2
    assert request.attributes["routeledger.result"] == "served"
    assert request.status.status_code is not StatusCode.ERROR
    engine.close()


def test_a_skipped_member_is_named_on_the_next_attempt(
    fake: FakeProvider, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """While the primary cools down, the next request's attempt names it as skipped and why."""
    engine = open_engine(fake, tracer_provider=provider)
    asyncio.run(chat(engine))
    exporter.clear()
    asyncio.run(chat(engine))
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"chat chat", "chat spare-model"}
    skipped = spans["chat spare-model"].attributes["routeledger.skipped"]
    assert list(skipped) == ["primary/primary-model:cooling_down"]
    engine.close()


def test_an_exhausted_request_span_says_how_it_ended(
    fake: FakeProvider, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """When every member fails, the request span's error.type is exhausted, with the failures."""
    fake.set_scripts({"primary-model": RATE_LIMITED, "spare-model": RATE_LIMITED})
    engine = open_engine(fake, tracer_provider=provider)
    completion = asyncio.run(chat(engine))
    assert isinstance(completion.result, Exhausted)
    request = by_name(exporter.get_finished_spans())["chat chat"]
    assert request.attributes["error.type"] == "exhausted"
    failures = list(request.attributes["routeledger.failures"])
    assert failures == [f.value for f in completion.result.failures]
    assert len(failures) >= 2 and set(failures) == {"rate_limited"}
    assert request.status.status_code is StatusCode.ERROR
    engine.close()


def test_a_streamed_request_span_ends_when_the_stream_ends(
    fake: FakeProvider, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Through Executor.stream_chat the request span is still open after the first chunk."""
    engine = open_engine(fake, tracer_provider=provider)

    async def go() -> tuple[list[str], list[str]]:
        executor = Executor(engine)
        try:
            stream = executor.stream_chat(
                {**BODY, "stream": True},
                route="chat",
                caller_scope="user:test",
                accounts=("team",),
            )
            kinds = [(await anext(stream)).kind]
            open_while_streaming = [s.name for s in exporter.get_finished_spans()]
            kinds += [event.kind async for event in stream]
            return kinds, open_while_streaming
        finally:
            await executor.aclose()

    kinds, while_streaming = asyncio.run(go())
    assert kinds[0] == "delta" and kinds[-1] == "done"
    assert "chat chat" not in while_streaming
    assert "chat chat" in by_name(exporter.get_finished_spans())
    engine.close()


def test_the_engine_entry_is_a_child_of_the_current_span(
    fake: FakeProvider, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A request entered inside the gateway's own span is a child of it (one trace)."""
    engine = open_engine(fake, tracer_provider=provider)

    async def go() -> None:
        with provider.get_tracer("gateway").start_as_current_span("POST /chat"):
            await chat(engine)

    asyncio.run(go())
    spans = by_name(exporter.get_finished_spans())
    outer, request = spans["POST /chat"], spans["chat chat"]
    assert request.parent is not None and request.parent.span_id == outer.context.span_id
    engine.close()


def test_telemetry_is_off_unless_configured(fake: FakeProvider) -> None:
    """Without [telemetry] otel or a tracer_provider, the engine makes no span and holds none."""
    engine = open_engine(fake)
    assert engine.telemetry is None
    completion = asyncio.run(chat(engine))
    assert isinstance(completion.result, Served)
    engine.close()


def test_the_config_key_uses_the_global_tracer_provider(
    fake: FakeProvider,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[telemetry] otel = true makes spans on the process's global tracer provider."""
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    engine = open_engine(fake, extra=TELEMETRY_ON)
    asyncio.run(chat(engine))
    assert "chat chat" in by_name(exporter.get_finished_spans())
    engine.close()


def test_a_mistyped_telemetry_key_is_a_config_error() -> None:
    """otel = "yes" is refused with the key named, not read as true."""
    with pytest.raises(ConfigError, match=r"telemetry\.otel"):
        parse_config(config_text("http://127.0.0.1:9", "a", "b") + '\n[telemetry]\notel = "yes"\n')


def test_serve_produces_spans_for_plain_and_streamed_answers(
    fake: FakeProvider,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """routeledger serve's app with otel on: each chat request gives a request span and attempts."""
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.setenv("WEB_CLIENT_KEY", "sk-client-web-0123456789")
    text = config_text(fake.base_url, "primary-model", "spare-model") + TELEMETRY_ON
    text += '\n[clients.web]\nkey_env = "WEB_CLIENT_KEY"\naccounts = ["team"]\n'
    gateway = Gateway(parse_config(text), f"sqlite:///{tmp_path}/serve.db")
    headers = {"Authorization": "Bearer sk-client-web-0123456789"}
    with serve(gateway.app) as base_url:  # type: ignore[arg-type]
        plain = httpx.post(
            f"{base_url}/chat/completions", json={**BODY, "model": "chat"}, headers=headers
        )
        assert plain.status_code == 200
        with httpx.stream(
            "POST",
            f"{base_url}/chat/completions",
            json={**BODY, "model": "chat", "stream": True},
            headers=headers,
        ) as streamed:
            assert streamed.status_code == 200
            body = streamed.read()
    assert b"[DONE]" in body
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.name == "chat chat"]
    assert [s.attributes["routeledger.stream"] for s in requests] == [True, True]
    assert requests[0].attributes["routeledger.request_id"] == plain.headers["x-request-id"]
    assert [s.attributes["routeledger.result"] for s in requests] == ["served", "served"]
    failed = [s for s in spans if s.attributes.get("error.type") == "rate_limited"]
    assert len(failed) == 1  # the second request skips the cooling primary
    assert failed[0].parent is not None
    assert failed[0].parent.span_id == requests[0].context.span_id
