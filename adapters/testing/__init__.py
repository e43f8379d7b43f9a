"""Test doubles and tools: the fake provider, the fleet simulation, a fake clock and ids.

Shipped for gateway authors' own tests. The request path never imports it; only
the command line does, for the tools it runs: ``routeledger demo`` (against the
fake provider), ``routeledger fake-provider`` and ``routeledger simulate``
(imported when those commands run)."""

from __future__ import annotations

from routeledger.adapters.testing.clock import FakeClock, counter_ids

__all__ = ["FakeClock", "counter_ids"]
