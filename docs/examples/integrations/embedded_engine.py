"""Embed the engine in your own gateway: RouteLedger decides, your code calls the provider.

Run it: ``python docs/examples/integrations/embedded_engine.py`` (needs the
``providers`` extra for httpx). It starts the scripted fake provider on loopback
as the upstream, so it runs offline; point ``base_url`` at a real provider and
set the key variables to use it for real.
"""

from __future__ import annotations

import os

import httpx

from routeledger.adapters import Engine, Served, parse_config
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
        config = parse_config(CONFIG.format(base_url=upstream.base_url))
        engine = Engine.open("memory://", config)
        try:
            with engine.request(route="chat", caller_scope="user:alice") as req:
                for attempt in req.sync_attempts():
                    key = os.environ[attempt.endpoint.secret_env or ""]
                    try:
                        response = httpx.post(
                            f"{attempt.endpoint.base_url}/chat/completions",
                            headers={"Authorization": f"Bearer {key}"},
                            json={
                                "model": attempt.upstream_model,
                                "messages": [{"role": "user", "content": "Hello"}],
                            },
                            timeout=10,
                        )
                    except httpx.HTTPError as error:
                        attempt.failed_from_exception(error)
                        continue
                    attempt.observe_response(response)  # classified: 429 -> rate_limited
        finally:
            engine.close()
    assert isinstance(req.result, Served), req.result
    print(f"served by {req.result.credential_id}/{req.result.upstream_model}")


if __name__ == "__main__":
    main()
