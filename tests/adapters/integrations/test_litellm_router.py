"""A real litellm.Router picks deployments with RouteLedger and reports every attempt to it,
against the fake provider over loopback (LiteLLM offline: its packaged cost map)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import litellm
import pytest
from litellm import Router

from routeledger.adapters.integrations.litellm_router import NoDeployment, RouteLedgerRouting
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.errors import UsageError
from routeledger.core.routing import FailureClass
from routeledger.core.routing.events import AttemptFailed, AttemptRouted, CooldownStarted
from routeledger.core.time import US_PER_S

MESSAGES = [{"role": "user", "content": "Hello"}]
#: LiteLLM's own TypedDicts make pydantic warn when their schemas are first built.
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")


@pytest.fixture
def upstream() -> Iterator[FakeProvider]:
    with FakeProvider({}) as provider:
        yield provider


def router_on(upstream: FakeProvider, *models: str, num_retries: int = 2) -> Router:
    """A Router with one deployment per model, each its own key, in this order."""
    return Router(
        model_list=[
            {
                "model_name": "chat",
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": upstream.base_url,
                    "api_key": f"sk-{model}",
                    "order": index + 1,
                },
            }
            for index, model in enumerate(models)
        ],
        num_retries=num_retries,
    )


async def calls(router: Router, count: int) -> list[str]:
    """The upstream model that served each of ``count`` sequential calls."""
    served = []
    for _ in range(count):
        response: Any = await router.acompletion(model="chat", messages=MESSAGES)
        served.append(response.model)
    return served


def events(routing: RouteLedgerRouting, kind: type[Any]) -> list[Any]:
    return [r.event for r in routing.engine.store.read_all() if isinstance(r.event, kind)]


def test_every_pick_is_routeledgers_decision(upstream: FakeProvider) -> None:
    """Each call is served by the pair RouteLedger routed (its log says which), and a pair an
    operator blocks in RouteLedger is not picked by LiteLLM any more."""
    upstream.set_scripts({"first": "ok", "second": "ok"})
    router = router_on(upstream, "first", "second")
    routing = RouteLedgerRouting.for_router(router)
    try:
        assert asyncio.run(calls(router, 3)) == ["first"] * 3  # order 1 is RouteLedger's first pool
        routing.engine.impose_block(
            "openai", "first", duration_us=60 * US_PER_S, actor="test", reason="maintenance"
        )
        assert asyncio.run(calls(router, 2)) == ["second"] * 2
        routed = [(e.credential_id, e.upstream_model) for e in events(routing, AttemptRouted)]
        assert routing.awaiting == 0  # every attempt's success was reported
    finally:
        routing.close()
    assert routed == [("openai", "first")] * 3 + [("openai-2", "second")] * 2
    assert [a.model for a in upstream.attempts()] == ["first"] * 3 + ["second"] * 2


def test_a_429_is_recorded_and_the_next_call_avoids_that_deployment(
    upstream: FakeProvider,
) -> None:
    """LiteLLM's RateLimitError is recorded as rate_limited with its Retry-After; LiteLLM's retry
    and every later call go to the other deployment."""
    upstream.set_scripts({"limited": {"kind": "rate_limited", "retry_after": 30}, "spare": "ok"})
    router = router_on(upstream, "limited", "spare")
    routing = RouteLedgerRouting.for_router(router)
    try:
        assert asyncio.run(calls(router, 3)) == ["spare"] * 3
        (failed,) = events(routing, AttemptFailed)
        (cooled,) = events(routing, CooldownStarted)
        assert routing.awaiting == 0
    finally:
        routing.close()
    assert failed.failure is FailureClass.RATE_LIMITED
    assert cooled.stream_id == "pair:openai:limited"
    assert cooled.hint_us == 30 * US_PER_S
    assert [(a.model, a.status) for a in upstream.attempts()] == [
        ("limited", 429),
        ("spare", 200),
        ("spare", 200),
        ("spare", 200),
    ]


def test_nothing_usable_is_a_no_deployment_error_and_no_upstream_call(
    upstream: FakeProvider,
) -> None:
    """After a 429 cools the only deployment, the next call fails with NoDeployment and LiteLLM
    calls no provider (no retries here: LiteLLM itself sleeps out a lone deployment's
    Retry-After before retrying)."""
    upstream.set_scripts({"only": {"kind": "rate_limited", "retry_after": 30}})
    router = router_on(upstream, "only", num_retries=0)
    # No waiting for the pair's recovery inside a pick (RouteLedger's default waits up to 30 s).
    routing = RouteLedgerRouting.for_router(router, extra_toml="[limits]\nwait_total_us_max = 0")
    try:
        with pytest.raises(litellm.RateLimitError):
            asyncio.run(calls(router, 1))
        with pytest.raises(NoDeployment):
            asyncio.run(calls(router, 1))
    finally:
        routing.close()
    assert [(a.model, a.status) for a in upstream.attempts()] == [("only", 429)]


def test_the_sync_endpoint_is_refused_with_a_usage_error(upstream: FakeProvider) -> None:
    """Router.completion (sync) is refused clearly: the integration serves the async endpoints."""
    upstream.set_scripts({"only": "ok"})
    router = router_on(upstream, "only", num_retries=0)
    routing = RouteLedgerRouting.for_router(router)
    try:
        with pytest.raises(UsageError, match="async endpoints"):
            router.completion(model="chat", messages=MESSAGES)
    finally:
        routing.close()
    assert upstream.attempts() == []
