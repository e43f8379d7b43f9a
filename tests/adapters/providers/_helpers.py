"""Shared builders for the provider tables: in-memory responses, no network."""

from __future__ import annotations

from typing import Any

import httpx

from routeledger.adapters.providers.observe import Observation
from routeledger.core.routing.commands import Failed
from routeledger.core.routing.failures import FailureClass

#: Engine time used as "now" by every case: 2026-01-01T00:00:00Z.
NOW_US = 1_767_225_600_000_000


def response(
    status: int,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    text: str | None = None,
    url: str = "https://api.example.test/v1/chat/completions",
) -> httpx.Response:
    """A complete response as the executor would hold it."""
    request = httpx.Request("POST", url)
    if text is not None:
        return httpx.Response(status, headers=headers, text=text, request=request)
    return httpx.Response(status, headers=headers, json=body, request=request)


def failed(observation: Observation) -> Failed:
    """The observation's outcome, which must be a failure."""
    assert isinstance(observation.outcome, Failed), observation
    return observation.outcome


def expect(
    observation: Observation,
    failure: FailureClass,
    *,
    status: int | None,
    hint_us: int | None = None,
) -> None:
    """Assert class, status and hint together (one line per table row)."""
    outcome = failed(observation)
    assert (outcome.failure, observation.status, outcome.hint_us) == (failure, status, hint_us)
