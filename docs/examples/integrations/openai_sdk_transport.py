"""The openai SDK, unchanged, routed through RouteLedger by its HTTP transport.

Run it: ``python docs/examples/integrations/openai_sdk_transport.py`` (needs the
``providers`` extra). It starts the scripted fake provider on loopback as the
upstream, so it runs offline; point ``base_url`` at a real provider and set the
key variables to use it for real.

The SDK client is built as usual, with an ``http_client`` whose transport is
RouteLedger's: the body's ``model`` names a route, and the engine picks the
credential and upstream model, fails over and records every attempt. openai 3.x
is built on ``httpx2`` (its ``http_client=`` takes an ``httpx2.Client``; openai
1.x-2.x an ``httpx.Client``): the transport works with either.
"""

from __future__ import annotations

import os

import httpx2
import openai

from routeledger.adapters import Engine, Executor, RouteLedgerTransport, parse_config
from routeledger.adapters.testing.fake_provider import FakeProvider

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


def main() -> None:
    os.environ.setdefault("EXAMPLE_PRIMARY_KEY", "sk-example-primary")
    os.environ.setdefault("EXAMPLE_SPARE_KEY", "sk-example-spare")
    # The primary answers 429 with Retry-After: 30; the spare serves.
    scripts = {"gpt-primary": {"kind": "rate_limited", "retry_after": 30}, "gpt-spare": "ok"}
    with FakeProvider(scripts) as upstream:
        engine = Engine.open("memory://", parse_config(CONFIG.format(base_url=upstream.base_url)))
        transport = RouteLedgerTransport(Executor(engine), caller_scope="user:alice")
        try:
            with openai.OpenAI(
                base_url="http://routeledger.invalid/v1",  # never contacted: the transport answers
                api_key="unused",  # the credentials' own keys are used upstream
                http_client=httpx2.Client(transport=transport),
                max_retries=0,  # RouteLedger answers with final outcomes (x-should-retry: false)
            ) as client:
                messages = [{"role": "user", "content": "Hello"}]
                raw = client.chat.completions.with_raw_response.create(
                    model="chat", messages=messages
                )
                answer = raw.parse()
                # The primary's 429 was recorded; the spare served; the SDK saw a normal answer.
                assert answer.model == "gpt-spare", answer.model
                print(f"served by {answer.model}, request {raw.headers['x-request-id']}")

                # Streamed: chunks pass through as the upstream sends them (the
                # primary is cooling down now, so the engine goes to the spare at once).
                text = ""
                for chunk in client.chat.completions.create(
                    model="chat", messages=messages, stream=True
                ):
                    text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
                assert text == "The quick brown fox jumps over the lazy dog.", text
                print(f"streamed: {text}")

                # Not served: the SDK raises its own error type with RouteLedger's answer.
                upstream.set_scripts({"gpt-primary": "overloaded", "gpt-spare": "overloaded"})
                refused: openai.InternalServerError | None = None
                try:
                    client.chat.completions.create(model="chat", messages=messages)
                except openai.InternalServerError as error:
                    refused = error
                assert refused is not None, "an exhausted route raises the SDK's own error"
                assert refused.status_code == 502 and refused.code == "fallback_exhausted"
                print(f"exhausted: {refused.code}, request {refused.request_id}")
        finally:
            engine.close()


if __name__ == "__main__":
    main()
