"""Integrations with the libraries gateway authors already use.

* ``sdk_transport`` — :class:`RouteLedgerTransport` and
  :class:`AsyncRouteLedgerTransport`: httpx (and httpx2) transports that make
  the openai and anthropic SDKs route, fail over and record through an
  :class:`~routeledger.adapters.Executor` (the ``providers`` extra);
* ``pydantic_ai`` — :class:`RouteLedgerModel`, a pydantic-ai model that sends
  every request of an ``Agent`` through the engine (the ``pydantic-ai`` extra);
* ``litellm_config`` — convert a LiteLLM router/proxy ``config.yaml`` into
  RouteLedger's gateway TOML (``routeledger import-litellm``; PyYAML, the
  ``litellm`` extra);
* ``litellm_router`` — a LiteLLM ``Router`` that picks deployments with
  RouteLedger's engine and reports every attempt's outcome to it (the
  ``litellm`` extra).

Names are loaded on first use, so importing this package imports neither SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routeledger.adapters.integrations.pydantic_ai import RouteLedgerModel
    from routeledger.adapters.integrations.sdk_transport import (
        AsyncRouteLedgerTransport,
        RouteLedgerTransport,
    )

_HOMES: dict[str, str] = {
    "AsyncRouteLedgerTransport": "sdk_transport",
    "RouteLedgerTransport": "sdk_transport",
    "RouteLedgerModel": "pydantic_ai",
}

__all__ = ["AsyncRouteLedgerTransport", "RouteLedgerModel", "RouteLedgerTransport"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(
            f"module 'routeledger.adapters.integrations' has no attribute {name!r}"
        )
    value = getattr(importlib.import_module(f"routeledger.adapters.integrations.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
