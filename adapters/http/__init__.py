"""HTTP execution: OpenAI-compatible chat completions over httpx with the engine in charge."""

from __future__ import annotations

from routeledger.adapters.http.executor import ChatEvent, Completion, Executor

__all__ = ["ChatEvent", "Completion", "Executor"]
