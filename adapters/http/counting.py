"""Token counts through the gateway: Anthropic's ``count_tokens``, answered by the provider
of the pair the route would use now, and recorded as a count (G6), never as an attempt.

The count is no evidence about the pair (``TokensCounted`` changes no availability),
takes no probe slot, no configured-limit slot and no budget hold, and is not a
served request. An answer that is not a count (the provider's error, a transport
failure) is passed back to the caller and records nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import orjson

from routeledger.adapters.http.chat import ChatRequestError
from routeledger.core.routing.events import TokensCounted
from routeledger.core.routing.failures import Evidence
from routeledger.core.time import US_PER_S

if TYPE_CHECKING:  # pragma: no cover
    from routeledger.adapters.http.executor import Executor

__all__ = ["CountAnswer", "count_message_tokens"]


class CountAnswer(NamedTuple):
    """What to answer the client: the provider's status and JSON body, and the record."""

    status: int
    body: dict[str, Any]
    #: The recorded count; ``None`` when the provider did not count.
    counted: TokensCounted | None


def _unavailable(message: str) -> CountAnswer:
    error = {"type": "api_error", "message": message}
    return CountAnswer(502, {"type": "error", "error": error}, None)


async def count_message_tokens(
    executor: Executor,
    body: object,
    *,
    route: str,
    caller_scope: str,
    headers: Mapping[str, str] | None = None,
    count_id: str | None = None,
) -> CountAnswer:
    """Count a messages body's input tokens on the pair ``route`` would use now.

    Raises :class:`ChatRequestError` (nothing sent, nothing recorded) for a body
    without messages or a route that does not speak the Anthropic dialect.
    """
    from routeledger.adapters.http.executor import ANTHROPIC_VERSION, _forwarded

    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ChatRequestError("messages", "must be a list of messages")
    engine = executor.engine
    if engine.config.dialect(route) != "anthropic":
        raise ChatRequestError("model", f"route {route!r} does not speak the messages API")
    target = engine.count_target(route=route, caller_scope=caller_scope)
    sent = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
    sent.update(_forwarded(headers))
    key = executor.secrets.get(target.credential_id)
    if key:
        sent["x-api-key"] = key
    base = engine.endpoint(target.credential_id).base_url.rstrip("/")
    try:
        response = await executor.http_client.post(
            base + "/messages/count_tokens",
            content=orjson.dumps({**body, "model": target.upstream_model}),
            headers=sent,
            timeout=engine.config.timeouts.total_us / US_PER_S,
        )
    except httpx.HTTPError as error:
        return _unavailable(f"the provider could not be reached: {type(error).__name__}")
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return _unavailable(f"the provider answered {response.status_code} without JSON")
    tokens = answer.get("input_tokens") if isinstance(answer, dict) else None
    if response.status_code != 200 or type(tokens) is not int or tokens < 0:
        body_out = answer if isinstance(answer, dict) else {"type": "error"}
        return CountAnswer(response.status_code, body_out, None)
    counted = engine.record_count(target, tokens, evidence=Evidence.UPSTREAM, count_id=count_id)
    return CountAnswer(200, answer, counted)
