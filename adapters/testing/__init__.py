"""Test doubles and tools: the fake provider, the fleet simulation, a fake clock and ids.

Shipped for gateway authors' own tests; nothing in production code imports it."""

from __future__ import annotations

from routeledger.adapters.testing.clock import FakeClock, counter_ids

__all__ = ["FakeClock", "counter_ids"]
