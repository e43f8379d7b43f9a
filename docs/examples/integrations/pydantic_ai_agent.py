"""A pydantic-ai Agent whose every model request goes through RouteLedger.

Run it: ``python docs/examples/integrations/pydantic_ai_agent.py`` (needs the
``pydantic-ai`` extra). It starts the scripted fake provider on loopback as the
upstream, so it runs offline; point ``base_url`` at a real provider and set the
key variables to use it for real.

``RouteLedgerModel(executor, "chat")`` is a pydantic-ai model for the route
``chat``: each request the agent makes (each tool round trip, streamed or not)
is one engine request, routed, failed over and recorded; the run's messages
name the upstream model that served each response.
"""

from __future__ import annotations

import asyncio
import os

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelResponse

from routeledger.adapters import Engine, Executor, RouteLedgerModel, parse_config
from routeledger.adapters.testing.fake_provider import Behaviour, FakeProvider

CONFIG = """
[credentials.primary]
provider = "openai"
base_url = "{base_url}"
secret_env = "EXAMPLE_PRIMARY_KEY"
[credentials.spare]
provider = "openai"
base_url = "{base_url}"
secret_env = "EXAMPLE_SPARE_KEY"

[models.gpt-primary]
[models.gpt-spare]

[routes.chat]
[[routes.chat.chain]]
members = [{{ credential = "primary", model = "gpt-primary" }}]
[[routes.chat.chain]]
members = [{{ credential = "spare", model = "gpt-spare" }}]
"""


async def run(executor: Executor) -> None:
    agent = Agent(RouteLedgerModel(executor, "chat", caller_scope="user:alice"))

    @agent.tool
    def get_weather(ctx: RunContext[None], city: str, unit: str) -> str:
        """The weather in a city."""
        return f"Sunny, 21 degrees {unit} in {city}"

    # The primary answers 429: the spare calls the tool, then answers with its result.
    result = await agent.run("What is the weather in Paris?")
    served = [m.model_name for m in result.all_messages() if isinstance(m, ModelResponse)]
    assert served == ["gpt-spare", "gpt-spare"], served
    assert result.output == "It is sunny in Paris.", result.output
    print(f"{result.output} (served by {served})")

    async with agent.run_stream("And tomorrow?") as stream:
        pieces = [delta async for delta in stream.stream_text(delta=True, debounce_by=None)]
    assert "".join(pieces) == "It is sunny in Paris.", pieces
    print(f"streamed in {len(pieces)} pieces: {''.join(pieces)}")


def main() -> None:
    os.environ.setdefault("EXAMPLE_PRIMARY_KEY", "sk-example-primary")
    os.environ.setdefault("EXAMPLE_SPARE_KEY", "sk-example-spare")
    scripts = {
        "gpt-primary": {"kind": "rate_limited", "retry_after": 30},
        # First a call of get_weather, then a text answer (the last step repeats).
        "gpt-spare": [Behaviour(tool_call="get_weather"), "ok:It is sunny in Paris."],
    }
    with FakeProvider(scripts) as upstream:
        engine = Engine.open("memory://", parse_config(CONFIG.format(base_url=upstream.base_url)))
        executor = Executor(engine)

        async def session() -> None:
            try:
                await run(executor)
            finally:
                await executor.aclose()

        try:
            asyncio.run(session())
        finally:
            engine.close()


if __name__ == "__main__":
    main()
