"""React to the engine's decisions in-process, and trace every request with OpenTelemetry.

Run it: ``python docs/examples/integrations/hooks_and_otel.py`` (needs the
``providers`` and ``otel`` extras, and ``opentelemetry-sdk`` for the exporter).
It starts the scripted fake provider on loopback: the primary answers 429 with
Retry-After: 30, the spare serves. It shows

* ``engine.on(CooldownStarted, fn)``: called once the cooldown is recorded;
* ``engine.events(BlockEvent)``: an async stream of availability changes;
* the spans, printed by the console exporter: the request span ``chat chat``
  with one child per attempt, the first ``error.type = rate_limited``.

In a gateway, set ``[telemetry] otel = true`` in its TOML instead of passing
``tracer_provider``: the engine then uses the process's global tracer provider.
"""

from __future__ import annotations

import asyncio
import os

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from routeledger.adapters import Engine, Executor, Gap, Served, parse_config
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.events import Event
from routeledger.core.routing.events import BlockEvent, CooldownStarted

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


async def serve_one(engine: Engine) -> tuple[Served, list[Event | Gap]]:
    """One chat request through the executor while a task reads the event stream."""
    changes: list[Event | Gap] = []
    async with engine.events(BlockEvent) as stream:

        async def watch() -> None:
            async for evt in stream:  # a Gap would say how many a slow reader lost
                changes.append(evt)

        watcher = asyncio.create_task(watch())
        executor = Executor(engine)
        try:
            completion = await executor.chat(
                {"messages": [{"role": "user", "content": "Hello"}]},
                route="chat",
                caller_scope="user:alice",
            )
        finally:
            await executor.aclose()
        await asyncio.sleep(0)  # let the watcher take what is buffered
    await watcher  # the stream ended when it was closed
    assert isinstance(completion.result, Served), completion.result
    return completion.result, changes


def main() -> None:
    os.environ.setdefault("EXAMPLE_PRIMARY_KEY", "sk-example-primary")
    os.environ.setdefault("EXAMPLE_SPARE_KEY", "sk-example-spare")
    spans = InMemorySpanExporter()  # for the asserts below
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    tracing.add_span_processor(SimpleSpanProcessor(spans))

    scripts = {"gpt-primary": {"kind": "rate_limited", "retry_after": 30}, "gpt-spare": "ok"}
    with FakeProvider(scripts) as upstream:
        config = parse_config(CONFIG.format(base_url=upstream.base_url))
        engine = Engine.open("memory://", config, tracer_provider=tracing)
        paged: list[CooldownStarted] = []

        def page(evt: CooldownStarted) -> None:  # quick, never blocks: it runs in the commit
            paged.append(evt)
            print(
                f"paging: {evt.credential_id}/{evt.upstream_model} cools down ({evt.reason.value})"
            )

        unsubscribe = engine.on(CooldownStarted, page)
        try:
            served, changes = asyncio.run(serve_one(engine))
        finally:
            unsubscribe()
            engine.close()

    print(f"served by {served.credential_id}/{served.upstream_model}")
    assert [(e.credential_id, e.upstream_model) for e in paged] == [("primary", "gpt-primary")]
    assert [type(e) for e in changes] == [CooldownStarted]
    by_name = {span.name: span for span in spans.get_finished_spans()}
    request, failed = by_name["chat chat"], by_name["chat gpt-primary"]
    assert failed.parent is not None and failed.parent.span_id == request.context.span_id
    assert failed.attributes is not None and failed.attributes["error.type"] == "rate_limited"
    assert request.attributes is not None
    assert request.attributes["gen_ai.response.model"] == "gpt-spare"


if __name__ == "__main__":
    main()
