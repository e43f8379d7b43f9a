"""``[[classification.rules]]`` end to end: the executor over loopback, then Engine's own path.

The fake provider answers the primary with an error only the configured rule
recognises (the built-in table reads it as a plain invalid request, which never
falls back); with the rule the failure is recorded as the rule's class and the
route falls back to the spare, without it the request ends there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.results import Served
from routeledger.adapters.http.executor import ChatEvent, Completion, Executor
from routeledger.adapters.testing.clock import counter_ids
from routeledger.adapters.testing.fake_provider import Behaviour, FakeProvider
from routeledger.core.routing import FailureClass
from routeledger.core.routing.events import AttemptFailed

from .test_executor import KEYS, config_text

F = FailureClass
BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "Say something."}]}
#: An upstream's own wording for "this deployment no longer serves that model".
RETIRED = "PIPELINE-7731: deployment dep-42 was retired by the operator"
RULES = """
[[classification.rules]]
failure = "model_not_supported"  # any status, and in-band errors (which have none)
body = 'pipeline-\\d+: deployment \\S+ was retired'

[[classification.rules]]
failure = "rate_limited"
status = 503
header = "Retry-After"
header_value = '^1$'
"""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    with FakeProvider({}) as provider:
        yield provider


def engine_for(fake: FakeProvider, *, rules: bool) -> Engine:
    text = config_text(fake.base_url, "primary-model", "spare-model")
    return Engine.open(
        "memory://",
        parse_config(text + (RULES if rules else ""), source="gateway.toml"),
        clock=SystemClock(),
        ids=counter_ids(),
    )


def failures(engine: Engine) -> list[AttemptFailed]:
    return [r.event for r in engine.store.read_all() if isinstance(r.event, AttemptFailed)]


def chat(engine: Engine) -> Completion:
    async def go() -> Completion:
        executor = Executor(engine)
        try:
            return await executor.chat(BODY, route="chat", caller_scope="u", accounts=("team",))
        finally:
            await executor.aclose()

    return asyncio.run(go())


def stream(engine: Engine) -> list[ChatEvent]:
    async def go() -> list[ChatEvent]:
        executor = Executor(engine)
        try:
            return [
                event
                async for event in executor.stream_chat(
                    {**BODY, "stream": True}, route="chat", caller_scope="u", accounts=("team",)
                )
            ]
        finally:
            await executor.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("rules", [True, False], ids=["with-rule", "without"])
def test_a_body_rule_classifies_an_http_error_and_its_route_falls_back(
    fake: FakeProvider, rules: bool
) -> None:
    """A 400 whose body only the configured rule knows is model_not_supported and falls back;
    without the rule it is invalid_request and the request ends on it."""
    fake.set_scripts(
        {"primary-model": Behaviour(kind="error", status=400, message=RETIRED), "spare-model": "ok"}
    )
    engine = engine_for(fake, rules=rules)
    done = chat(engine)
    recorded = failures(engine)
    assert [(f.failure, f.status) for f in recorded] == [
        (F.MODEL_NOT_SUPPORTED if rules else F.INVALID_REQUEST, 400)
    ]
    assert isinstance(done.result, Served) is rules
    assert [a.model for a in fake.attempts()] == (
        ["primary-model", "spare-model"] if rules else ["primary-model"]
    )


def test_a_body_rule_classifies_an_in_band_stream_error(fake: FakeProvider) -> None:
    """An SSE error event only the rule knows is the rule's class (not stream_interrupted)."""
    fake.set_scripts(
        {
            "primary-model": Behaviour(kind="error_event", after_tokens=0, message=RETIRED),
            "spare-model": "ok",
        }
    )
    engine = engine_for(fake, rules=True)
    events = stream(engine)
    assert [f.failure for f in failures(engine)] == [F.MODEL_NOT_SUPPORTED]
    assert events[-1].kind == "done"


@pytest.mark.parametrize(
    ("retry_after", "failure"), [(1, F.RATE_LIMITED), (2, F.PROVIDER_UNAVAILABLE)]
)
def test_a_header_rule_needs_its_header_value(
    fake: FakeProvider, retry_after: int, failure: FailureClass
) -> None:
    """A 503 with Retry-After 1 is rate_limited by the header rule; with Retry-After 2 it is
    the built-in provider_unavailable."""
    fake.set_scripts(
        {
            "primary-model": Behaviour(kind="overloaded", retry_after=retry_after),
            "spare-model": "ok",
        }
    )
    engine = engine_for(fake, rules=True)
    chat(engine)
    assert [(f.failure, f.status) for f in failures(engine)] == [(failure, 503)]


def test_engine_failed_from_exception_applies_the_rules(fake: FakeProvider) -> None:
    """An embedding gateway's SDK exception is classified with the same configured rules."""
    fake.set_scripts(
        {"primary-model": Behaviour(kind="error", status=422, message=RETIRED), "spare-model": "ok"}
    )
    engine = engine_for(fake, rules=True)
    client = openai.OpenAI(base_url=fake.base_url, api_key="sk-x", max_retries=0)
    with engine.request(route="chat", caller_scope="u", accounts=("team",), input_tokens=10) as req:
        for attempt in req.sync_attempts():
            try:
                client.chat.completions.create(
                    model=attempt.upstream_model, messages=BODY["messages"]
                )
            except openai.APIStatusError as error:
                attempt.failed_from_exception(error)
                continue
            attempt.succeeded(input_tokens=10, output_tokens=5)
    assert isinstance(req.result, Served)
    assert [(f.failure, f.status) for f in failures(engine)] == [(F.MODEL_NOT_SUPPORTED, 422)]
