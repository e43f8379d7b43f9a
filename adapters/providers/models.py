"""The model-resolution port: list the model names a key accepts (I0's self-healing).

When the credential lifecycle decides *resolve* (key stored, models never
resolved, or the last listing failed and its backoff passed), the executor asks
a :class:`ModelLister` for the names and records the answer through the engine
(``ModelsResolved``) or the failure (``ModelResolutionFailed``, whose backoff
the core decides). :class:`HttpModelLister` is the real one: ``GET
<base_url>/models`` with the key, for OpenAI-compatible upstreams (``Authorization:
Bearer``) and Anthropic (``x-api-key`` and ``anthropic-version``); both answer
``{"data": [{"id": …}, …]}``.
"""

from __future__ import annotations

from typing import Final, Protocol

import httpx
import orjson

from routeledger.core.credentials.events import ResolutionFailure

__all__ = ["ANTHROPIC_VERSION", "LISTING_TIMEOUT_S", "HttpModelLister", "Listing", "ModelLister"]

#: The Anthropic API version sent with a listing (the one the executor speaks).
ANTHROPIC_VERSION: Final = "2023-06-01"
#: How long one listing may take, in seconds. Why: it runs before a request is
#: routed; a listing endpoint slower than this is as good as unreachable.
LISTING_TIMEOUT_S: Final = 5.0
#: Most model names kept from one listing. Why: bounds what one answer adds to
#: the state; the largest provider listings hold a few hundred names.
LISTED_MODELS_MAX: Final = 4_096

#: The names a key accepts, or why listing them failed (401/403 is the key's failure).
Listing = frozenset[str] | ResolutionFailure | int


class ModelLister(Protocol):
    """Lists the model names ``key`` may use at ``base_url`` (speaking ``dialect``)."""

    async def list_models(self, base_url: str, dialect: str, key: str | None) -> Listing:
        """The names, a :class:`ResolutionFailure`, or the HTTP status 401/403 that rejected the key."""
        ...  # pragma: no cover


class HttpModelLister:
    """``GET <base_url>/models`` over an httpx client (the executor's own)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def list_models(self, base_url: str, dialect: str, key: str | None) -> Listing:
        """The names, a :class:`ResolutionFailure`, or the HTTP status 401/403 that rejected the key."""
        headers: dict[str, str] = {}
        if dialect == "anthropic":
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if key:
                headers["x-api-key"] = key
        elif key:
            headers["Authorization"] = f"Bearer {key}"
        url = base_url.rstrip("/") + "/models"
        try:
            response = await self._client.get(url, headers=headers, timeout=LISTING_TIMEOUT_S)
        except httpx.HTTPError:
            return ResolutionFailure.UNREACHABLE
        if response.status_code in (401, 403):
            return response.status_code
        if response.status_code != 200:
            return ResolutionFailure.UNREACHABLE
        return _names(response.content)


def _names(body: bytes) -> frozenset[str] | ResolutionFailure:
    try:
        data = orjson.loads(body).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return ResolutionFailure.UNREADABLE
    if not isinstance(data, list):
        return ResolutionFailure.UNREADABLE
    names = frozenset(
        item["id"]
        for item in data[:LISTED_MODELS_MAX]
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
    )
    return names or ResolutionFailure.EMPTY_LISTING
