"""Bring a LiteLLM config over: convert its model_list, load it, serve a request.

Run it: ``python docs/examples/integrations/litellm_import.py`` (needs the
``litellm`` extra for PyYAML, and ``providers`` for httpx). It does what
``routeledger import-litellm config.yaml > gateway.toml`` does, with the same
function, then serves one request through the Executor. The upstream is the
scripted fake provider on loopback, so it runs offline.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from routeledger.adapters import Engine, Executor, Served, parse_config
from routeledger.adapters.integrations.litellm_config import convert_litellm_yaml
from routeledger.adapters.testing.fake_provider import FakeProvider

LITELLM_CONFIG = """
model_list:
  - model_name: chat
    litellm_params:
      model: openai/gpt-primary
      api_base: {base_url}
      api_key: os.environ/EXAMPLE_PRIMARY_KEY
      order: 1
      rpm: 600                      # reported: no per-pair rpm in RouteLedger yet
  - model_name: chat
    litellm_params:
      model: openai/gpt-spare
      api_base: {base_url}
      api_key: os.environ/EXAMPLE_SPARE_KEY
      order: 2
router_settings:
  allowed_fails: 1
  cooldown_time: 30
"""


async def serve_one(engine: Engine) -> Served:
    executor = Executor(engine)
    try:
        body = {"messages": [{"role": "user", "content": "Hello"}]}
        completion = await executor.chat(body, route="chat", caller_scope="user:alice")
    finally:
        await executor.aclose()
    assert isinstance(completion.result, Served), completion.result
    return completion.result


def main() -> None:
    os.environ.setdefault("EXAMPLE_PRIMARY_KEY", "sk-example-primary")
    os.environ.setdefault("EXAMPLE_SPARE_KEY", "sk-example-spare")
    # The order-1 deployment answers 429 with Retry-After: 30; the order-2 one serves.
    scripts = {"gpt-primary": {"kind": "rate_limited", "retry_after": 30}, "gpt-spare": "ok"}
    with FakeProvider(scripts) as upstream, tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "config.yaml"
        source.write_text(LITELLM_CONFIG.format(base_url=upstream.base_url), encoding="utf-8")
        conversion = convert_litellm_yaml(source.read_text(encoding="utf-8"), source=str(source))
        print(conversion.toml)
        print(conversion.report())  # what `routeledger import-litellm` prints on stderr
        engine = Engine.open("memory://", parse_config(conversion.toml))
        try:
            served = asyncio.run(serve_one(engine))
        finally:
            engine.close()
        assert [call.status for call in upstream.attempts()] == [429, 200]
    assert served.upstream_model == "gpt-spare"
    print(f"served by {served.credential_id}/{served.upstream_model}")


if __name__ == "__main__":
    main()
