"""End to end over real HTTP on loopback: the executor, the engine and the fake provider."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.results import Exhausted, Served
from routeledger.adapters.http.executor import Completion, Executor
from routeledger.adapters.testing.clock import counter_ids
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.budget.values import HoldStatus
from routeledger.core.routing import FailureClass
from routeledger.core.routing.events import AttemptFailed

KEYS = {
    "ROUTELEDGER_SECRET_PRIMARY": "sk-test-primary-0123456789",
    "ROUTELEDGER_SECRET_SPARE": "sk-test-spare-9876543210",
}


def config_text(base_url: str, primary: str, spare: str, *, spare_prefill: bool = False) -> str:
    return f"""
[credentials.primary]
provider = "openai"
base_url = "{base_url}"
secret_env = "ROUTELEDGER_SECRET_PRIMARY"
[credentials.spare]
provider = "openai"
base_url = "{base_url}"
secret_env = "ROUTELEDGER_SECRET_SPARE"

[models."{primary}"]
prefill = false
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 1_000_000
max_output_tokens = 64
[models."{spare}"]
prefill = {str(spare_prefill).lower()}
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 1_000_000
max_output_tokens = 64

[routes.chat]
[[routes.chat.chain]]
members = [{{ credential = "primary", model = "{primary}" }}]
[[routes.chat.chain]]
members = [{{ credential = "spare", model = "{spare}" }}]

[hints]
min_us = 100_000
max_us = 3_000_000

[limits]
attempts_max = 4
wait_total_us_max = 3_000_000

[timeouts]
connect_us = 1_000_000
first_token_us = 600_000
idle_us = 400_000
total_us = 3_000_000

[accounts.team]
scope = "team"
limit = 1_000_000
"""


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider({}) as provider:
        yield provider


def run(
    fake: FakeProvider,
    primary: Any,
    spare: Any = "ok",
    *,
    spare_prefill: bool = False,
    primary_model: str = "primary-model",
    spare_model: str = "spare-model",
) -> tuple[Completion, Engine]:
    fake.set_scripts({primary_model: primary, spare_model: spare})
    config = parse_config(
        config_text(fake.base_url, primary_model, spare_model, spare_prefill=spare_prefill)
    )
    engine = Engine.open("memory://", config, clock=SystemClock(), ids=counter_ids())

    async def go() -> Completion:
        executor = Executor(engine)
        try:
            return await executor.chat(
                {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 64},
                route="chat",
                caller_scope="user:test",
                accounts=("team",),
            )
        finally:
            await executor.aclose()

    return asyncio.run(go()), engine


#: The classes the default failure table tolerates once before cooling (G6).
TOLERATED_ONCE = frozenset({FailureClass.PROVIDER_UNAVAILABLE, FailureClass.CONNECT_ERROR})


def models_seen(fake: FakeProvider) -> list[str | None]:
    return [a.model for a in fake.attempts()]


def failures(engine: Engine, request_id: str) -> list[FailureClass]:
    return [
        e.failure
        for e in engine.store.load(f"request:{request_id}")
        if isinstance(e, AttemptFailed)
    ]


def assert_no_open_hold(engine: Engine) -> None:
    assert engine.state.budget.open_holds == {}
    assert engine.state.budget.accounts["team"].reserved == 0


def test_success_returns_the_content_the_serving_model_and_settles(
    env: None, fake: FakeProvider
) -> None:
    """A healthy upstream serves on the first attempt; the hold settles at the reported usage."""
    done, engine = run(fake, "ok")
    assert isinstance(done.result, Served)
    assert done.content == "The quick brown fox jumps over the lazy dog."
    assert (done.model, done.credential_id, done.attempts) == ("primary-model", "primary", 1)
    assert engine.state.budget.holds[done.request_id].status is HoldStatus.SETTLED
    assert next(a.key_id for a in fake.attempts()) is not None
    assert_no_open_hold(engine)


def test_the_right_credentials_key_is_sent(env: None, fake: FakeProvider) -> None:
    """Each attempt authenticates with its own credential's key (a wrong key would be 401)."""
    done, _ = run(fake, {"steps": ["ok"], "api_key": KEYS["ROUTELEDGER_SECRET_PRIMARY"]})
    assert isinstance(done.result, Served)
    assert done.attempts == 1


@pytest.mark.parametrize(
    ("primary", "failure"),
    [
        ("rate_limited", FailureClass.RATE_LIMITED),
        ("server_error", FailureClass.PROVIDER_UNAVAILABLE),
        ("overloaded", FailureClass.PROVIDER_UNAVAILABLE),
        ("reset", FailureClass.CONNECT_ERROR),
        ("model_not_supported", FailureClass.MODEL_NOT_SUPPORTED),
        ("unauthorized", FailureClass.AUTH_ERROR),
        ("error_event", FailureClass.STREAM_INTERRUPTED),  # in-band error after output started
        ("malformed_chunk:0", FailureClass.MALFORMED_RESPONSE),
    ],
)
def test_a_failing_primary_falls_over_to_the_spare(
    env: None, fake: FakeProvider, primary: str, failure: FailureClass
) -> None:
    """I1/I4: each classified failure moves the request to the next target, which serves it
    (a 5xx or connect error after one retry of the same pair: allowed_fails, G6)."""
    done, engine = run(fake, primary)
    assert isinstance(done.result, Served), done
    assert done.model == "spare-model"
    tries = 2 if failure in TOLERATED_ONCE else 1
    assert failures(engine, done.request_id) == [failure] * tries
    assert models_seen(fake) == ["primary-model"] * tries + ["spare-model"]
    assert_no_open_hold(engine)


@pytest.mark.parametrize("primary", ["server_error", "overloaded", "reset"])
def test_a_single_transient_failure_is_retried_on_the_same_pair(
    env: None, fake: FakeProvider, primary: str
) -> None:
    """G6: with the default failure table, a single 500/503/connection reset then healthy serves
    from the same pair with one retry; the spare is never called and nothing cools."""
    done, engine = run(fake, {"steps": [primary, "ok"]})
    assert isinstance(done.result, Served), done
    assert (done.model, done.credential_id, done.attempts) == ("primary-model", "primary", 2)
    assert models_seen(fake) == ["primary-model", "primary-model"]
    log = list(engine.store.read_all(0))
    assert [type(r.event).__name__ for r in log if r.event.stream_id.startswith("pair:")] == [
        "FailureTolerated"
    ]
    assert_no_open_hold(engine)


def test_no_response_is_abandoned_at_the_first_token_deadline_and_fails_over(
    env: None, fake: FakeProvider
) -> None:
    """A silent upstream is abandoned at the configured timeout, not waited on forever."""
    began = time.monotonic()
    done, engine = run(fake, "no_response:5")
    elapsed = time.monotonic() - began
    assert isinstance(done.result, Served)
    assert done.model == "spare-model"
    assert elapsed < 3.0
    assert failures(engine, done.request_id)[0] in {
        FailureClass.TIMEOUT_BEFORE_RESPONSE,
        FailureClass.FIRST_TOKEN_TIMEOUT,
    }


def test_slow_first_token_times_out(env: None, fake: FakeProvider) -> None:
    """A first token later than first_token_us is a first-token timeout; the spare serves."""
    done, engine = run(fake, "slow_first_token:2")
    assert isinstance(done.result, Served)
    assert failures(engine, done.request_id)[0] in {
        FailureClass.FIRST_TOKEN_TIMEOUT,
        FailureClass.TIMEOUT_BEFORE_RESPONSE,
    }


def test_a_stream_cut_is_never_a_truncated_success_and_restarts_cleanly(
    env: None, fake: FakeProvider
) -> None:
    """A cut after k tokens moves on; a spare without prefill restarts, so the answer is whole."""
    done, engine = run(fake, "cut:3", "ok", spare_prefill=False)
    assert isinstance(done.result, Served)
    assert done.content == "The quick brown fox jumps over the lazy dog."
    assert done.restarts == 1
    assert failures(engine, done.request_id) == [FailureClass.STREAM_INTERRUPTED]
    assert [a.last_role for a in fake.attempts()] == ["user", "user"]


def test_a_stream_cut_continues_on_a_prefill_target(env: None, fake: FakeProvider) -> None:
    """I3: mid-stream, a target that supports prefill continues after the partial output."""
    done, _ = run(fake, "cut:3", "ok", spare_prefill=True)
    assert isinstance(done.result, Served)
    assert done.restarts == 0
    assert [a.last_role for a in fake.attempts()] == ["user", "assistant"]


def test_a_stall_is_detected_by_the_idle_timeout(env: None, fake: FakeProvider) -> None:
    """A stream that stops sending is abandoned after idle_us and counted as stalled."""
    done, engine = run(fake, "stall:2")
    assert isinstance(done.result, Served)
    assert failures(engine, done.request_id) == [FailureClass.STREAM_STALLED]


def test_missing_done_with_complete_content_is_a_success(env: None, fake: FakeProvider) -> None:
    """A stream with finish_reason but no [DONE] is complete: no fallback."""
    done, _ = run(fake, "no_done")
    assert isinstance(done.result, Served)
    assert done.model == "primary-model"


def test_a_content_filter_refusal_does_not_fall_back(env: None, fake: FakeProvider) -> None:
    """A1: a content-filter refusal ends the request without trying the spare or cooling anything."""
    done, engine = run(fake, "content_filter")
    assert isinstance(done.result, Exhausted)
    assert models_seen(fake) == ["primary-model"]
    assert done.problem is not None
    assert engine.state.routing.pairs == {}
    assert_no_open_hold(engine)


def test_context_length_moves_to_another_model_without_cooling_the_first(
    env: None, fake: FakeProvider
) -> None:
    """A1: context too long is caller-caused: no availability change, another model may serve."""
    done, engine = run(fake, "context_length")
    assert isinstance(done.result, Served)
    assert done.model == "spare-model"
    assert engine.state.routing.pairs == {}


def test_everything_failing_returns_a_problem_without_secrets(
    env: None, fake: FakeProvider
) -> None:
    """I4/E1: exhaustion is a 502 problem listing each attempt, with no key in it."""
    done, engine = run(fake, "unauthorized", "overloaded")
    assert isinstance(done.result, Exhausted)
    assert done.problem is not None
    assert done.problem.status == 502
    text = done.problem.to_json().decode()
    for key in KEYS.values():
        assert key not in text
        assert key[:10] not in text
    assert engine.state.budget.holds[done.request_id].status is HoldStatus.REFUNDED


def test_flapping_primary_gets_traffic_back_after_it_recovers(
    env: None, fake: FakeProvider
) -> None:
    """A3/A4: while the primary is down the spare serves; after recovery a probe returns traffic to it."""
    fake.set_scripts({"primary-model": {"steps": ["ok"], "down": [0.0, 0.6]}, "spare-model": "ok"})
    fake.reset()
    short_cooldown = (
        '[failures.provider_unavailable]\nscope = "pair"\naction = "cooldown"\n'
        "base_us = 300_000\nfactor = 2\nmax_us = 600_000\n\n[limits]"
    )
    text = config_text(fake.base_url, "primary-model", "spare-model")
    config = parse_config(text.replace("[limits]", short_cooldown))
    engine = Engine.open("memory://", config, clock=SystemClock(), ids=counter_ids())

    async def go() -> list[str | None]:
        executor = Executor(engine)
        served = []
        try:
            for _ in range(2):
                done = await executor.chat(
                    {"messages": [{"role": "user", "content": "hi"}]},
                    route="chat",
                    caller_scope="u",
                    accounts=("team",),
                )
                served.append(done.model)
            await asyncio.sleep(
                1.2
            )  # the window ends and the cooldown (hint clamp 0.1-3 s) expires
            done = await executor.chat(
                {"messages": [{"role": "user", "content": "hi"}]},
                route="chat",
                caller_scope="u",
                accounts=("team",),
            )
            served.append(done.model)
        finally:
            await executor.aclose()
        return served

    served = asyncio.run(go())
    assert served[0] == "spare-model"
    assert served[-1] == "primary-model"
    primary_attempts = [a for a in fake.attempts() if a.model == "primary-model"]
    assert len(primary_attempts) <= 3  # no hammering while it was down
    assert_no_open_hold(engine)


def test_a_credential_whose_key_is_not_set_is_not_routed_until_it_is(
    monkeypatch: pytest.MonkeyPatch, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """A missing key is reported at start-up and skipped (secret_missing), never sent as a 401
    nor recorded as the upstream's failure; once the variable is set, the credential serves."""
    from routeledger.core.routing.events import AttemptRouted, SkipReason

    monkeypatch.setenv("ROUTELEDGER_SECRET_SPARE", KEYS["ROUTELEDGER_SECRET_SPARE"])
    monkeypatch.delenv("ROUTELEDGER_SECRET_PRIMARY", raising=False)
    fake.set_scripts({"primary-model": "ok", "spare-model": "ok"})
    config = parse_config(config_text(fake.base_url, "primary-model", "spare-model"))
    engine = Engine.open("memory://", config, clock=SystemClock(), ids=counter_ids())
    body = {"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 64}

    async def go() -> tuple[Completion, Completion]:
        executor = Executor(engine)
        try:
            first = await executor.chat(body, route="chat", caller_scope="u", accounts=("team",))
            monkeypatch.setenv("ROUTELEDGER_SECRET_PRIMARY", KEYS["ROUTELEDGER_SECRET_PRIMARY"])
            second = await executor.chat(body, route="chat", caller_scope="u", accounts=("team",))
            return first, second
        finally:
            await executor.aclose()

    first, second = asyncio.run(go())
    assert "ROUTELEDGER_SECRET_PRIMARY is not set" in caplog.text
    assert first.credential_id == "spare" and second.credential_id == "primary"
    assert models_seen(fake) == ["spare-model", "primary-model"]
    routed = [
        e for e in engine.store.load(f"request:{first.request_id}") if isinstance(e, AttemptRouted)
    ]
    assert [s.reason for s in routed[0].skipped] == [SkipReason.SECRET_MISSING]
    assert failures(engine, first.request_id) == [] and engine.state.routing.creds == {}


def test_a_credential_whose_listing_failed_heals_on_its_next_use(
    env: None, fake: FakeProvider
) -> None:
    """I0 self-healing: a key stored with a failed model listing is re-resolved against the
    stored key (GET /models) before the next request, which then routes to a listed name;
    no trial is ever claimed for an installation with an operator key."""
    from routeledger.adapters.testing.clock import FakeClock
    from routeledger.core.credentials.events import (
        CredentialMetadata,
        ModelsResolved,
        ResolutionFailure,
        TrialProvisioningDecided,
    )

    fake.set_scripts({"primary-model": "ok", "spare-model": "ok"})
    config = parse_config(config_text(fake.base_url, "primary-model", "spare-model"))
    clock = FakeClock()
    engine = Engine.open(
        "memory://", config, clock=clock, ids=counter_ids(), track_credentials=True
    )
    meta = CredentialMetadata(
        provider="openai",
        base_url=fake.base_url,
        region=None,
        expires_at_us=None,
        validates_model_names=True,
    )
    for credential in ("primary", "spare"):
        engine.provision_key(credential, meta)
        engine.record_resolution_failed(credential, ResolutionFailure.UNREACHABLE)
    body = {"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 64}

    async def ask() -> Completion:
        executor = Executor(engine)
        try:
            return await executor.chat(body, route="chat", caller_scope="u", accounts=("team",))
        finally:
            await executor.aclose()

    backing_off = asyncio.run(ask())
    assert not isinstance(backing_off.result, Served)  # still inside the listing's backoff
    clock.advance(3_600)
    healed = asyncio.run(ask())
    assert isinstance(healed.result, Served) and healed.credential_id == "primary"
    events = [r.event for r in engine.store.read_all()]
    resolved = [e for e in events if isinstance(e, ModelsResolved)]
    assert {e.credential_id for e in resolved} == {"primary", "spare"}
    assert "primary-model" in resolved[0].models
    assert not any(isinstance(e, TrialProvisioningDecided) for e in events)
    again = asyncio.run(ask())  # usable now: no second listing
    assert again.credential_id == "primary"
    assert sum(isinstance(r.event, ModelsResolved) for r in engine.store.read_all()) == 2


@pytest.mark.parametrize("outage_s", [60, 100])
def test_after_an_outage_the_primary_serves_again_within_30_s_of_healing(
    env: None, fake: FakeProvider, outage_s: int
) -> None:
    """G6: with the default failure table, a primary down for 60 or 100 s of engine time (503s,
    no hint) serves again within 30 s of healing, the spare serving meanwhile."""
    from routeledger.adapters.testing.clock import FakeClock
    from routeledger.core.routing.failures import OUTAGE_PROBE_US_MAX

    fake.set_scripts({"primary-model": "overloaded", "spare-model": "ok"})
    text = config_text(fake.base_url, "primary-model", "spare-model")
    text = text.replace("[hints]\nmin_us = 100_000\nmax_us = 3_000_000\n", "")
    clock = FakeClock()
    engine = Engine.open("memory://", parse_config(text), clock=clock, ids=counter_ids())
    healed_at = clock.now + outage_s * 1_000_000

    async def go() -> list[tuple[int, str | None]]:
        executor = Executor(engine)
        served = []
        try:
            for _ in range(outage_s + 60):  # one request a second of engine time
                if clock.now >= healed_at:
                    fake.set_scripts({"primary-model": "ok", "spare-model": "ok"})
                done = await executor.chat(
                    {"messages": [{"role": "user", "content": "hi"}]},
                    route="chat",
                    caller_scope="u",
                    accounts=("team",),
                )
                served.append((clock.now, done.model))
                clock.now += 1_000_000
        finally:
            await executor.aclose()
        return served

    served = asyncio.run(go())
    assert all(model == "spare-model" for at, model in served if at < healed_at)
    back = min(at for at, model in served if at >= healed_at and model == "primary-model")
    assert back - healed_at <= 30 * 1_000_000 and OUTAGE_PROBE_US_MAX <= 30 * 1_000_000
    assert all(model == "primary-model" for at, model in served if at > back)
    during = [a for a in fake.attempts() if a.model == "primary-model" and a.status == 503]
    assert len(during) <= outage_s // 5 + 2  # probed, not hammered: backoff 5, 10, 20, 30 s
    assert_no_open_hold(engine)


@pytest.mark.parametrize(("prefer_us", "served_by"), [(2_000_000, "primary"), (0, "spare")])
def test_a_429_with_a_short_retry_after_on_the_primary_is_waited_for_when_preferred(
    env: None, fake: FakeProvider, prefer_us: int, served_by: str
) -> None:
    """G6: with prefer_wait_us_max = 2 s a primary's 429 with Retry-After: 1 is waited for and
    the primary serves (the spare is never called); with 0 the spare serves at once."""
    from routeledger.adapters.testing.clock import FakeClock
    from routeledger.core.routing.events import WaitDecided

    fake.set_scripts({"primary-model": ["rate_limited:1", "ok"], "spare-model": "ok"})
    text = config_text(fake.base_url, "primary-model", "spare-model").replace(
        "[routes.chat]\n", f"[routes.chat]\nprefer_wait_us_max = {prefer_us}\n"
    )
    clock = FakeClock()
    engine = Engine.open("memory://", parse_config(text), clock=clock, ids=counter_ids())

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

    done = asyncio.run(go())
    assert done.model == f"{served_by}-model"
    waits = [e for e in engine.store.load("request:req-1") if isinstance(e, WaitDecided)]
    if served_by == "primary":
        assert models_seen(fake) == ["primary-model", "primary-model"]
        assert [w.until_us - w.at_us for w in waits] == [1_000_000]
        assert clock.slept_s == [1.0]
    else:
        assert models_seen(fake) == ["primary-model", "spare-model"] and waits == []
    assert_no_open_hold(engine)
