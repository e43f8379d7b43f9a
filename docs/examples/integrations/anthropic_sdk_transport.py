"""The anthropic SDK (async), unchanged, routed through RouteLedger by its HTTP transport.

Run it: ``python docs/examples/integrations/anthropic_sdk_transport.py`` (needs
the ``providers`` extra). It starts the scripted fake provider on loopback as the
upstream (it speaks Anthropic's messages API too), so it runs offline; point
``base_url`` at Anthropic and set the key variables to use it for real.

``AsyncAnthropic`` takes an ``httpx2.AsyncClient`` (anthropic 2.x is built on
httpx2); its transport is RouteLedger's, running the executor on this event loop.
"""

from __future__ import annotations

import asyncio
import os

import anthropic
import httpx2

from routeledger.adapters import AsyncRouteLedgerTransport, Engine, Executor, parse_config
from routeledger.adapters.testing.fake_provider import FakeProvider

CONFIG = """
[credentials.primary]
provider = "anthropic"
base_url = "{base_url}"
secret_env = "EXAMPLE_PRIMARY_KEY"
[credentials.spare]
provider = "anthropic"
base_url = "{base_url}"
secret_env = "EXAMPLE_SPARE_KEY"

[models.claude-primary]
max_output_tokens = 1024
[models.claude-spare]
max_output_tokens = 1024

[routes.claude]
[[routes.claude.chain]]
members = [{{ credential = "primary", model = "claude-primary" }}]
[[routes.claude.chain]]
members = [{{ credential = "spare", model = "claude-spare" }}]
"""


async def run(executor: Executor) -> None:
    transport = AsyncRouteLedgerTransport(executor, caller_scope="user:alice")
    async with anthropic.AsyncAnthropic(
        base_url="http://routeledger.invalid",  # never contacted: the transport answers
        api_key="unused",  # the credentials' own keys are used upstream
        http_client=httpx2.AsyncClient(transport=transport),
        max_retries=0,  # RouteLedger answers with final outcomes (x-should-retry: false)
    ) as client:
        messages = [{"role": "user", "content": "Hello"}]
        # Streamed: the primary's 429 comes before any output, so the spare
        # serves the stream and the SDK sees only the spare's events.
        async with client.messages.stream(
            model="claude", max_tokens=256, messages=messages
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        assert final.model == "claude-spare", final.model
        assert text == "The quick brown fox jumps over the lazy dog.", text
        print(f"streamed by {final.model}: {text}")

        message = await client.messages.create(model="claude", max_tokens=256, messages=messages)
        assert message.model == "claude-spare" and message.stop_reason == "end_turn"
        # request-id (and x-request-id) is the engine's id: `routeledger audit <id>`.
        print(f"served by {message.model}, request {message._request_id}")


def main() -> None:
    os.environ.setdefault("EXAMPLE_PRIMARY_KEY", "sk-ant-example-primary")
    os.environ.setdefault("EXAMPLE_SPARE_KEY", "sk-ant-example-spare")
    # The primary answers 429 with Retry-After: 30; the spare serves.
    scripts = {"claude-primary": {"kind": "rate_limited", "retry_after": 30}, "claude-spare": "ok"}
    with FakeProvider(scripts) as upstream:
        engine = Engine.open("memory://", parse_config(CONFIG.format(base_url=upstream.base_url)))
        executor = Executor(engine)

        async def session() -> None:
            try:
                await run(executor)
            finally:
                await executor.aclose()  # the async transport leaves the executor to its owner

        try:
            asyncio.run(session())
        finally:
            engine.close()
    assert len(upstream.attempts()) == 3  # the primary once, then the spare twice


if __name__ == "__main__":
    main()
