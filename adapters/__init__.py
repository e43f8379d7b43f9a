"""RouteLedger's adapters: what a gateway author imports.

::

    from routeledger.adapters import Engine, Executor, Served, load_config, open_store

The sub-packages, by role:

* ``engine`` — :class:`Engine` (the request API), its runtime and group
  committer, configuration, clock and results;
* ``store`` — :func:`open_store` and the three backends, the codec, snapshots,
  store URLs and canonical hashing;
* ``providers`` — failure classification of responses, streams and SDK
  exceptions, secret scrubbing, problem details, exhaustion reports;
* ``http`` — :class:`Executor`, chat completions over httpx (the ``providers``
  extra);
* ``integrations`` — :class:`RouteLedgerTransport` and
  :class:`AsyncRouteLedgerTransport` (the openai and anthropic SDKs through an
  executor), :class:`RouteLedgerModel` (a pydantic-ai model; the
  ``pydantic-ai`` extra);
* ``audit`` — verified replay and what-if;
* ``cli`` — the ``routeledger`` command line and the demo;
* ``testing`` — test doubles and tools: the fake provider, the fleet
  simulation, :class:`FakeClock`, deterministic ids.

Names are loaded on first use, so importing this package costs nothing and the
optional dependencies (httpx, the SDKs, pydantic-ai) are needed only when a name
that uses them is.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routeledger.adapters.engine import (
        Attempt,
        BudgetRejected,
        Clock,
        ConfigError,
        Degradation,
        Engine,
        EngineConfig,
        EventStream,
        Exhausted,
        Gap,
        RequestHandle,
        Result,
        Served,
        SystemClock,
        Unsubscribe,
        load_config,
        parse_config,
    )
    from routeledger.adapters.http import (
        ChatEvent,
        ChatRequestError,
        Completion,
        Executor,
        request_error_response,
    )
    from routeledger.adapters.integrations import (
        AsyncRouteLedgerTransport,
        RouteLedgerModel,
        RouteLedgerTransport,
    )
    from routeledger.adapters.providers import DEFAULT_SCRUBBER, EnvironmentSecretReader
    from routeledger.adapters.store import Conflict, EventStore, StoreError, open_store
    from routeledger.adapters.testing import FakeClock, counter_ids

#: Public name -> the sub-package that defines it.
_HOMES: dict[str, str] = {
    **dict.fromkeys(
        (
            "Attempt",
            "BudgetRejected",
            "Clock",
            "ConfigError",
            "Degradation",
            "Engine",
            "EngineConfig",
            "EventStream",
            "Exhausted",
            "Gap",
            "RequestHandle",
            "Result",
            "Served",
            "SystemClock",
            "Unsubscribe",
            "load_config",
            "parse_config",
        ),
        "engine",
    ),
    **dict.fromkeys(
        ("ChatEvent", "ChatRequestError", "Completion", "Executor", "request_error_response"),
        "http",
    ),
    **dict.fromkeys(
        ("AsyncRouteLedgerTransport", "RouteLedgerModel", "RouteLedgerTransport"), "integrations"
    ),
    **dict.fromkeys(("DEFAULT_SCRUBBER", "EnvironmentSecretReader"), "providers"),
    **dict.fromkeys(("Conflict", "EventStore", "StoreError", "open_store"), "store"),
    **dict.fromkeys(("FakeClock", "counter_ids"), "testing"),
}

__all__ = [
    "DEFAULT_SCRUBBER",
    "AsyncRouteLedgerTransport",
    "Attempt",
    "BudgetRejected",
    "ChatEvent",
    "ChatRequestError",
    "Clock",
    "Completion",
    "ConfigError",
    "Conflict",
    "Degradation",
    "Engine",
    "EngineConfig",
    "EnvironmentSecretReader",
    "EventStore",
    "EventStream",
    "Executor",
    "Exhausted",
    "FakeClock",
    "Gap",
    "RequestHandle",
    "Result",
    "RouteLedgerModel",
    "RouteLedgerTransport",
    "Served",
    "StoreError",
    "SystemClock",
    "Unsubscribe",
    "counter_ids",
    "load_config",
    "open_store",
    "parse_config",
    "request_error_response",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'routeledger.adapters' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"routeledger.adapters.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
