"""``routeledger serve``: the reference gateway (the ``server`` extra: Starlette, uvicorn,
prometheus-client). :class:`Gateway` is the ASGI app behind it; docs/server.md."""

from __future__ import annotations

from routeledger.adapters.server.app import Gateway, app_from_environment

__all__ = ["Gateway", "app_from_environment"]
