"""The embedding engine: the request API, its runtime, configuration, clock, results and hooks."""

from __future__ import annotations

from routeledger.adapters.engine.clock import Clock, SystemClock
from routeledger.adapters.engine.config import ConfigError, EngineConfig, load_config, parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.hooks import EventStream, Gap, Unsubscribe
from routeledger.adapters.engine.lifecycle import Attempt, RequestHandle
from routeledger.adapters.engine.results import (
    BudgetRejected,
    Degradation,
    Exhausted,
    Result,
    Served,
)

__all__ = [
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
]
