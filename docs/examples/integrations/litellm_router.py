"""A LiteLLM Router whose every pick is RouteLedger's, and whose outcomes RouteLedger records.

Run it: ``python docs/examples/integrations/litellm_router.py`` (needs the
``litellm`` extra). Your code keeps calling ``router.acompletion``; RouteLedger
decides which deployment each attempt uses and keeps the log. The upstream is
the scripted fake provider on loopback, so it runs offline.
"""

from __future__ import annotations

import asyncio
import os

# LiteLLM reads this when first imported: use its packaged model cost map, offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm

from routeledger.adapters.integrations.litellm_router import RouteLedgerRouting
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.routing.events import AttemptFailed, CooldownStarted


async def ask(router: litellm.Router, times: int) -> list[str]:
    served = []
    for _ in range(times):
        response = await router.acompletion(
            model="chat", messages=[{"role": "user", "content": "Hello"}]
        )
        served.append(response.model)
    return served


def main() -> None:
    # The first deployment answers 429 with Retry-After: 30; the second serves.
    scripts = {"gpt-primary": {"kind": "rate_limited", "retry_after": 30}, "gpt-spare": "ok"}
    with FakeProvider(scripts) as upstream:
        router = litellm.Router(
            model_list=[
                {
                    "model_name": "chat",
                    "litellm_params": {
                        "model": f"openai/{model}",
                        "api_base": upstream.base_url,
                        "api_key": f"sk-example-{model}",
                        "order": order,
                    },
                }
                for order, model in ((1, "gpt-primary"), (2, "gpt-spare"))
            ],
            num_retries=2,  # LiteLLM's loop retries; RouteLedger picks each retry's deployment
        )
        routing = RouteLedgerRouting.for_router(router, router_settings={"cooldown_time": 30})
        try:
            served = asyncio.run(ask(router, 3))
            log = [record.event for record in routing.engine.store.read_all()]
        finally:
            routing.close()
    failed = [e for e in log if isinstance(e, AttemptFailed)]
    cooled = [e for e in log if isinstance(e, CooldownStarted)]
    assert served == ["gpt-spare"] * 3, served
    assert [e.failure.value for e in failed] == ["rate_limited"]
    assert [e.stream_id for e in cooled] == ["pair:openai:gpt-primary"]
    print(f"served by {served}; RouteLedger recorded {failed[0].failure.value} and cooled")
    print(f"{cooled[0].stream_id} for {cooled[0].hint_us} µs (the provider's Retry-After)")


if __name__ == "__main__":
    main()
