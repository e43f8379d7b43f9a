"""The embedding engine: the request API, its runtime, configuration, clock and results."""

from __future__ import annotations

from routeledger.adapters.engine.clock import Clock, SystemClock
from routeledger.adapters.engine.config import ConfigError, EngineConfig, load_config, parse_config
from routeledger.adapters.engine.engine import Engine
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
    "Exhausted",
    "RequestHandle",
    "Result",
    "Served",
    "SystemClock",
    "load_config",
    "parse_config",
]
