"""A pydantic-ai model that sends every request of an ``Agent`` through RouteLedger.

::

    from pydantic_ai import Agent
    from routeledger.adapters import Engine, Executor, RouteLedgerModel

    executor = Executor(Engine.open("sqlite:///routeledger.db", "gateway.toml"))
    agent = Agent(RouteLedgerModel(executor, "chat", caller_scope="user:42", accounts=["team"]))
    result = await agent.run("What is the weather in Paris?")
    result.all_messages()[-1].model_name  # the upstream model that served

:class:`RouteLedgerModel` is a ``WrapperModel`` around pydantic-ai's own model
for the route's dialect: ``OpenAIChatModel`` for a route of OpenAI-compatible
credentials, ``AnthropicModel`` for one of ``anthropic`` credentials. That
model's SDK client talks to nothing but an :class:`AsyncRouteLedgerTransport`
over ``executor``, so every request the agent makes (``run``, ``run_stream``,
``iter``, each tool-call round trip) is one engine request on ``route``: routed,
failed over, billed and recorded, streamed live when the agent streams. What the
agent sees is pydantic-ai's usual result; each ``ModelResponse.model_name`` is
the upstream model that served that request, and its ``provider_response_id``
the upstream's answer id. When RouteLedger cannot serve, pydantic-ai raises its
own ``ModelHTTPError`` with RouteLedger's status and body (``docs/errors.md``).

On an Anthropic route, a request without ``max_tokens`` in its settings asks for
the route's largest ``max_output_tokens`` (Anthropic requires a value, and
pydantic-ai cannot know one for a route's name).

The SDK client has its retries off (RouteLedger already retried and fell back),
and the model runs on the caller's event loop: use the agent from one loop (as
``await agent.run(...)`` does), the one the executor's HTTP pool belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from pydantic_ai.models import Model
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.profiles import ModelProfileSpec
from pydantic_ai.settings import ModelSettings

from routeledger.adapters.http.executor import Executor
from routeledger.adapters.integrations.sdk_transport import (
    DEFAULT_CALLER_SCOPE,
    AsyncRouteLedgerTransport,
)
from routeledger.core.errors import UsageError

__all__ = ["RouteLedgerModel"]

#: Where the wrapped model's SDK client believes it sends requests; nothing is
#: ever sent there (its transport is RouteLedger's).
LOCAL_BASE_URL: Final = "http://routeledger.invalid"
#: The SDK's API key: required by the SDKs, never sent anywhere (the executor
#: uses the credentials' own keys).
UNUSED_KEY: Final = "routeledger"


class RouteLedgerModel(WrapperModel):
    """A pydantic-ai model whose every request is an engine request on ``route`` (module docs)."""

    def __init__(
        self,
        executor: Executor,
        route: str,
        *,
        caller_scope: str = DEFAULT_CALLER_SCOPE,
        accounts: Sequence[str] = (),
        backups: Sequence[str] = (),
        settings: ModelSettings | None = None,
        profile: ModelProfileSpec | None = None,
    ) -> None:
        config = executor.engine.config
        if route not in config.dialects:
            known = ", ".join(sorted(config.dialects)) or "none"
            raise UsageError(f"route {route!r} is not in the configuration (routes: {known})")
        transport = AsyncRouteLedgerTransport(
            executor, caller_scope=caller_scope, accounts=accounts, backups=backups
        )
        if config.dialect(route) == "anthropic":
            # Anthropic requires max_tokens; pydantic-ai would guess one from the
            # route's name. The route's own limit is the honest default.
            limit = executor.engine.output_tokens_max(route, tuple(backups))
            if limit is not None and (settings is None or "max_tokens" not in settings):
                settings = ModelSettings(**(settings or {}), max_tokens=limit)
            wrapped = _anthropic_model(route, transport, settings, profile)
        else:
            wrapped = _openai_model(route, transport, settings, profile)
        super().__init__(wrapped)
        self.executor = executor
        self.route = route


def _http_client(sdk_default: type, transport: AsyncRouteLedgerTransport) -> Any:
    """An async client of the httpx flavour the SDK is built on (its default client's base)."""
    for base in sdk_default.__mro__:
        if base.__name__ == "AsyncClient" and base.__module__.partition(".")[0] in (
            "httpx",
            "httpx2",
        ):
            return base(transport=transport)
    raise UsageError(f"{sdk_default!r} is not an httpx or httpx2 AsyncClient")  # pragma: no cover


def _openai_model(
    route: str,
    transport: AsyncRouteLedgerTransport,
    settings: ModelSettings | None,
    profile: ModelProfileSpec | None,
) -> Model:
    import openai
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    client = openai.AsyncOpenAI(
        base_url=f"{LOCAL_BASE_URL}/v1",
        api_key=UNUSED_KEY,
        http_client=_http_client(openai.DefaultAsyncHttpxClient, transport),
        max_retries=0,
    )
    provider = OpenAIProvider(openai_client=client)
    return OpenAIChatModel(route, provider=provider, settings=settings, profile=profile)


def _anthropic_model(
    route: str,
    transport: AsyncRouteLedgerTransport,
    settings: ModelSettings | None,
    profile: ModelProfileSpec | None,
) -> Model:
    import anthropic
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    client = anthropic.AsyncAnthropic(
        base_url=LOCAL_BASE_URL,
        api_key=UNUSED_KEY,
        http_client=_http_client(anthropic.DefaultAsyncHttpxClient, transport),
        max_retries=0,
    )
    provider = AnthropicProvider(anthropic_client=client)
    return AnthropicModel(route, provider=provider, settings=settings, profile=profile)
