"""HTTP execution: OpenAI-compatible chat completions over httpx with the engine in charge."""

from __future__ import annotations

from routeledger.adapters.http.chat import ChatRequestError
from routeledger.adapters.http.executor import (
    ChatEvent,
    Completion,
    Executor,
    request_error_response,
    result_problem,
)

__all__ = [
    "ChatEvent",
    "ChatRequestError",
    "Completion",
    "Executor",
    "request_error_response",
    "result_problem",
]
