"""The executor's deadlines, pool, billing, continuation and hostile upstreams, over loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import ConfigError, parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.results import Exhausted, Served
from routeledger.adapters.http import ChatEvent, ChatRequestError, Completion, Executor
from routeledger.adapters.testing.clock import counter_ids
from routeledger.adapters.testing.fake_provider import Behaviour, FakeProvider
from routeledger.core.routing import FailureClass
from routeledger.core.routing.events import AttemptFailed, CooldownStarted, PairSuspended

from .test_executor import KEYS, config_text

BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "Say something."}]}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    with FakeProvider({}) as provider:
        yield provider


def engine_for(fake: FakeProvider, primary: Any, spare: Any = "ok", extra: str = "") -> Engine:
    fake.set_scripts({"primary-model": primary, "spare-model": spare})
    text = config_text(fake.base_url, "primary-model", "spare-model") + extra
    return Engine.open("memory://", parse_config(text), clock=SystemClock(), ids=counter_ids())


def chat(engine: Engine, body: dict[str, Any] = BODY) -> Completion:
    async def go() -> Completion:
        executor = Executor(engine)
        try:
            return await executor.chat(body, route="chat", caller_scope="u", accounts=("team",))
        finally:
            await executor.aclose()

    return asyncio.run(go())


def stream(engine: Engine, body: dict[str, Any] = BODY) -> list[ChatEvent]:
    async def go() -> list[ChatEvent]:
        executor = Executor(engine)
        try:
            return [
                event
                async for event in executor.stream_chat(
                    body, route="chat", caller_scope="u", accounts=("team",)
                )
            ]
        finally:
            await executor.aclose()

    return asyncio.run(go())


def failures(engine: Engine) -> list[AttemptFailed]:
    return [r.event for r in engine.store.read_all() if isinstance(r.event, AttemptFailed)]


def availability_events(engine: Engine) -> list[object]:
    blocks = (CooldownStarted, PairSuspended)
    return [r.event for r in engine.store.read_all() if isinstance(r.event, blocks)]


def test_the_first_token_deadline_covers_the_wait_for_headers(fake: FakeProvider) -> None:
    """Headers later than idle_us but within first_token_us are not a timeout (idle is for gaps)."""
    engine = engine_for(
        fake, Behaviour(headers_delay=0.5)
    )  # idle 0.4 s < 0.5 s < 0.6 s first token
    completion = chat(engine)
    assert isinstance(completion.result, Served)
    assert completion.model == "primary-model"
    assert failures(engine) == []


def test_headers_later_than_the_first_token_deadline_fail_over(fake: FakeProvider) -> None:
    """No headers within first_token_us is timeout_before_response, and the spare serves."""
    engine = engine_for(fake, Behaviour(headers_delay=1.0))
    completion = chat(engine)
    assert completion.model == "spare-model"
    assert [f.failure for f in failures(engine)] == [FailureClass.TIMEOUT_BEFORE_RESPONSE]


def test_a_full_local_pool_is_the_gateways_failure_and_cools_nothing(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """PoolTimeout is gateway_pool_exhausted: recorded, logged as a WARNING, no cooldown and
    no suspension for anyone."""
    pool = "\n[http]\nmax_connections = 1\npool_timeout_us = 50_000\n"
    engine = engine_for(fake, Behaviour(token_interval=0.1), Behaviour(token_interval=0.1), pool)

    async def go() -> list[Completion]:
        executor = Executor(engine)
        try:
            return list(
                await asyncio.gather(
                    *(
                        executor.chat(BODY, route="chat", caller_scope="u", accounts=("team",))
                        for _ in range(2)
                    )
                )
            )
        finally:
            await executor.aclose()

    with caplog.at_level(logging.INFO, logger="routeledger.engine"):
        done = asyncio.run(go())
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and "gateway_pool_exhausted" in warned[0].getMessage()
    classes = [f.failure for f in failures(engine)]
    assert FailureClass.GATEWAY_POOL_EXHAUSTED in classes
    assert set(classes) == {FailureClass.GATEWAY_POOL_EXHAUSTED}
    assert availability_events(engine) == []
    assert any(isinstance(c.result, Served) for c in done)


def test_connections_are_kept_alive_for_more_than_twenty_requests_in_flight(
    fake: FakeProvider,
) -> None:
    """With the default pool, a second wave of 40 concurrent requests opens no new connection."""
    engine = engine_for(fake, Behaviour(token_interval=0.02))

    async def go() -> tuple[int, int]:
        executor = Executor(engine)

        async def wave() -> int:
            done = await asyncio.gather(
                *(
                    executor.chat(BODY, route="chat", caller_scope="u", accounts=("team",))
                    for _ in range(40)
                )
            )
            assert all(isinstance(c.result, Served) for c in done)
            return fake.connections_accepted

        try:
            return await wave(), await wave()
        finally:
            await executor.aclose()

    first, second = asyncio.run(go())
    assert first >= 40  # the requests overlapped: one connection each
    assert second == first


def test_a_cut_attempt_then_a_served_one_bills_both(fake: FakeProvider) -> None:
    """L11 at the request level: the cut attempt's delivered output stays on the bill."""
    engine = engine_for(fake, "cut:3", "ok")
    completion = chat(engine)
    assert isinstance(completion.result, Served)
    served_alone = engine.cost_micros("spare-model", 10, 9)  # the spare's reported usage
    spent = engine.state.budget.accounts["team"].spent
    assert spent > served_alone
    assert completion.result.cost_micros == spent


def test_a_cut_then_exhausted_request_settles_at_the_estimate_never_zero(
    fake: FakeProvider,
) -> None:
    """L11: a cut and a failing spare settle the hold (no usage reported), never refund it."""
    engine = engine_for(fake, "cut:3", "overloaded")
    completion = chat(engine)
    assert isinstance(completion.result, Exhausted)
    account = engine.state.budget.accounts["team"]
    assert account.spent > 0 and account.reserved == 0


def test_a_route_with_a_continue_instruction_continues_a_live_stream_without_prefill(
    fake: FakeProvider,
) -> None:
    """Live, on a model without prefill: the delivered text and the instruction are sent on."""
    fake.set_scripts({"primary-model": "cut:3", "spare-model": "ok: fox jumps."})
    text = config_text(fake.base_url, "primary-model", "spare-model").replace(
        "[routes.chat]\n", '[routes.chat]\ncontinue_instruction = "Continue exactly."\n'
    )
    engine = Engine.open("memory://", parse_config(text), clock=SystemClock(), ids=counter_ids())
    events = stream(engine)
    content = "".join(event.text for event in events if event.kind == "delta")
    assert events[-1].kind == "done"
    assert content == "The quick brown fox jumps."
    sent = fake.attempts()[-1].body
    assert sent is not None
    assert sent["messages"][-2:] == [
        {"role": "assistant", "content": "The quick brown"},
        {"role": "user", "content": "Continue exactly."},
    ]


def test_a_ten_megabyte_error_body_is_classified_from_a_bounded_read(fake: FakeProvider) -> None:
    """An upstream's huge error body is read only up to the cap, and still classified."""
    engine = engine_for(fake, Behaviour(kind="error", status=400, message="x" * 10_000_000))
    completion = chat(engine)
    assert completion.problem is not None
    recorded = failures(engine)
    assert recorded[0].status == 400
    assert len(recorded[0].detail) <= 300


def test_a_megabyte_sse_line_is_a_malformed_response_that_fails_over(fake: FakeProvider) -> None:
    """An SSE line over the limit ends the attempt as malformed_response; the spare serves."""
    engine = engine_for(fake, Behaviour(content="y" * 1_100_000))
    completion = chat(engine)
    assert completion.model == "spare-model"
    assert [f.failure for f in failures(engine)] == [FailureClass.MALFORMED_RESPONSE]


def test_stream_chat_never_resends_text_and_chat_restarts_cleanly(fake: FakeProvider) -> None:
    """Not live (chat), a model without prefill restarts: the answer is the spare's alone."""
    engine = engine_for(fake, "cut:3", "ok:Fresh answer.")
    completion = chat(engine)
    assert completion.content == "Fresh answer."
    assert completion.restarts == 1
    assert completion.response is not None
    assert completion.response["choices"][0]["message"]["content"] == "Fresh answer."


def test_a_cut_then_served_bill_survives_a_restart(fake: FakeProvider, tmp_path: Any) -> None:
    """L11 after a restart: the store reopened gives the same settled hold and summed spend."""
    fake.set_scripts({"primary-model": "cut:3", "spare-model": "ok"})
    text = config_text(fake.base_url, "primary-model", "spare-model")
    url = f"sqlite:///{tmp_path}/gateway.db"
    engine = Engine.open(url, parse_config(text), clock=SystemClock(), ids=counter_ids())
    completion = chat(engine)
    assert isinstance(completion.result, Served)
    spent = engine.state.budget.accounts["team"].spent
    engine.close()
    again = Engine.open(url, parse_config(text), clock=SystemClock())
    try:
        assert again.state.budget.accounts["team"].spent == spent == completion.result.cost_micros
        assert again.state.budget.accounts["team"].reserved == 0
        assert spent > again.cost_micros("spare-model", 10, 9)  # the cut attempt is on the bill
    finally:
        again.close()


def test_a_hundred_thousand_tiny_chunks_arrive_whole_and_in_order(fake: FakeProvider) -> None:
    """An upstream sending 100k one-word chunks is served complete, nothing dropped or merged."""
    words = 100_000
    fake.set_scripts({"primary-model": Behaviour(content=" ".join(["w"] * words))})
    text = config_text(fake.base_url, "primary-model", "spare-model").replace(
        "total_us = 3_000_000", "total_us = 60_000_000"
    )
    engine = Engine.open("memory://", parse_config(text), clock=SystemClock(), ids=counter_ids())
    events = stream(engine)
    deltas = [event for event in events if event.kind == "delta" and event.text]
    assert len(deltas) == words
    completion = events[-1].completion
    assert completion is not None and completion.content == " ".join(["w"] * words)


def test_an_anthropic_route_is_refused_by_the_chat_completions_executor(
    fake: FakeProvider,
) -> None:
    """A route of Anthropic credentials is not sent as chat completions: a typed error, nothing recorded."""
    text = config_text(fake.base_url, "primary-model", "spare-model").replace(
        'provider = "openai"', 'provider = "anthropic"'
    )
    engine = Engine.open("memory://", parse_config(text), clock=SystemClock(), ids=counter_ids())
    before = engine.store.max_position()
    with pytest.raises(ChatRequestError) as caught:
        chat(engine)
    assert caught.value.param == "model" and "anthropic" in str(caught.value)
    assert engine.store.max_position() == before
    assert fake.attempts() == []


def test_an_executor_refuses_a_route_that_mixes_dialects(fake: FakeProvider) -> None:
    """The engine routes a mixed route; the executor, which does not translate, names it and stops."""
    text = config_text(fake.base_url, "primary-model", "spare-model").replace(
        '[credentials.spare]\nprovider = "openai"', '[credentials.spare]\nprovider = "anthropic"'
    )
    engine = Engine.open("memory://", parse_config(text), clock=SystemClock(), ids=counter_ids())
    with pytest.raises(ConfigError) as caught:
        Executor(engine)
    assert caught.value.key == "routes.chat"
    assert "primary: openai" in str(caught.value) and "spare: anthropic" in str(caught.value)


def test_the_input_estimate_counts_messages_and_an_anthropic_system_prompt() -> None:
    """The hold's input estimate reads message text (strings and text parts) and a system prompt."""
    from routeledger.adapters.http.chat import parse_chat_body

    body = {
        "system": [{"type": "text", "text": "x" * 40}],
        "messages": [
            {"role": "user", "content": "y" * 40},
            {"role": "user", "content": [{"type": "text", "text": "z" * 40}]},
        ],
    }
    _, tokens, cap = parse_chat_body(body)
    assert (tokens, cap) == (30, None)  # 120 characters at 4 per token
    assert parse_chat_body({**body, "system": "s" * 400})[1] == 120
