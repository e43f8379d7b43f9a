"""End to end over loopback: a pair announcing no requests left is skipped until its reset, no 429."""

from __future__ import annotations

import asyncio

from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.http.executor import Completion, Executor
from routeledger.adapters.testing.clock import FakeClock, counter_ids
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.routing.events import (
    Announced,
    AttemptFailed,
    AttemptRouted,
    AttemptSucceeded,
    ExhaustionPredicted,
    SkipReason,
)

from .test_executor import assert_no_open_hold, config_text, env, fake, models_seen

__all__ = ["env", "fake"]  # the fixtures, used by name

#: The primary's first answer: a 200 announcing no requests left until a reset in 2 s.
EXHAUSTED = {
    "kind": "ok",
    "headers": {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6ms",
    },
}


def _chat(engine: Engine) -> Completion:
    """One chat request through a fresh Executor, as a gateway would send it."""

    async def go() -> Completion:
        executor = Executor(engine)
        try:
            return await executor.chat(
                {"messages": [{"role": "user", "content": "hi"}]},
                route="chat",
                caller_scope="u",
                accounts=("team",),
            )
        finally:
            await executor.aclose()

    return asyncio.run(go())


def test_a_pair_announcing_zero_requests_left_is_skipped_until_the_reset_without_a_429(
    env: None, fake: FakeProvider
) -> None:
    """G6: after a 200 announcing remaining 0 / reset 2 s, the next request goes to the spare
    without calling the primary; once engine time reaches the reset the primary serves again."""
    fake.set_scripts({"primary-model": [EXHAUSTED, "ok"], "spare-model": "ok"})
    text = config_text(fake.base_url, "primary-model", "spare-model")
    clock = FakeClock()
    engine = Engine.open("memory://", parse_config(text), clock=clock, ids=counter_ids())
    assert _chat(engine).model == "primary-model"
    first = [e for e in engine.store.load("request:req-1") if isinstance(e, AttemptSucceeded)]
    assert first[0].announced == Announced(
        remaining_requests=0,
        remaining_tokens=149_984,
        requests_reset_us=2_000_000,
        tokens_reset_us=6_000,
    )
    assert first[0].ttft_us is not None and first[0].duration_us is not None
    assert 0 <= first[0].ttft_us <= first[0].duration_us
    predicted = engine.store.load("pair:primary:primary-model")
    assert [(type(e), getattr(e, "until_us", None)) for e in predicted] == [
        (ExhaustionPredicted, clock.now + 2_000_000)
    ]

    clock.now += 1_999_999  # just before the announced reset
    assert _chat(engine).model == "spare-model"
    fake.wait_idle()
    assert models_seen(fake) == ["primary-model", "spare-model"]
    routed = [e for e in engine.store.load("request:req-2") if isinstance(e, AttemptRouted)]
    assert [(s.credential_id, s.reason) for s in routed[0].skipped] == [
        ("primary", SkipReason.PREDICTED_EXHAUSTED)
    ]

    clock.now += 1  # the reset
    assert _chat(engine).model == "primary-model"
    assert models_seen(fake) == ["primary-model", "spare-model", "primary-model"]
    assert [a.status for a in fake.attempts()] == [200, 200, 200]  # never a 429
    log = [r.event for r in engine.store.read_all(0)]
    assert not any(isinstance(e, AttemptFailed) for e in log)
    assert_no_open_hold(engine)


def test_an_anthropic_reset_time_is_announced_relative_to_engine_time(
    env: None, fake: FakeProvider
) -> None:
    """Anthropic's RFC 3339 reset is turned into a duration from the engine clock and predicted."""
    clock = FakeClock()
    reset = clock.now + 3_000_000
    seconds, micros = divmod(reset, 1_000_000)
    import datetime

    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC).replace(microsecond=micros)
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": moment.isoformat().replace("+00:00", "Z"),
    }
    fake.set_scripts({"primary-model": {"kind": "ok", "headers": headers}, "spare-model": "ok"})
    text = config_text(fake.base_url, "primary-model", "spare-model")
    engine = Engine.open("memory://", parse_config(text), clock=clock, ids=counter_ids())
    assert _chat(engine).model == "primary-model"
    assert _chat(engine).model == "spare-model"
    predicted = engine.store.load("pair:primary:primary-model")
    assert [getattr(e, "until_us", None) for e in predicted] == [reset]
