"""Imports every context's events so that :data:`~routeledger.core.events.REGISTRY` is complete.

The codec, the stores and the round-trip property test import this module; a
new context adds its ``events`` module here.
"""

from __future__ import annotations

from . import retention as _retention_events
from .budget import events as _budget_events
from .credentials import events as _credentials_events
from .events import REGISTRY
from .operator import events as _operator_events
from .routing import events as _routing_events

__all__ = ["REGISTRY"]

_CONTEXTS = (
    _budget_events,
    _credentials_events,
    _operator_events,
    _retention_events,
    _routing_events,
)
