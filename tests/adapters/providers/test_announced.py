"""Announced limits: what each dialect's rate-limit headers say is left, and when it resets."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.adapters.providers.observe import observe_response, parse_announced
from routeledger.core.routing.events import Announced

NOW = 1_800_000_000_000_000


def test_openai_headers_give_counts_and_go_duration_resets() -> None:
    """OpenAI: remaining requests/tokens and ``6m0s`` / ``20ms`` resets, as µs durations."""
    headers = {
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-reset-tokens": "20ms",
    }
    assert parse_announced(headers, now_us=NOW) == Announced(
        remaining_requests=59,
        remaining_tokens=0,
        requests_reset_us=360_000_000,
        tokens_reset_us=20_000,
    )


def test_anthropic_headers_give_resets_relative_to_now() -> None:
    """Anthropic: RFC 3339 resets become durations from ``now_us`` (a past one is 0)."""
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:01.5Z",
        "anthropic-ratelimit-tokens-remaining": "12",
        "anthropic-ratelimit-tokens-reset": "2000-01-01T00:00:00Z",
    }
    now = 1_800_000_000_000_000  # 2027-01-15T08:00:00Z
    assert parse_announced(headers, now_us=now) == Announced(
        remaining_requests=0, remaining_tokens=12, requests_reset_us=1_500_000, tokens_reset_us=0
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-ratelimit-remaining-requests": "-1"},
        {"x-ratelimit-remaining-requests": "1.5", "x-ratelimit-reset-requests": "soon"},
        {"anthropic-ratelimit-requests-reset": "tomorrow"},
    ],
)
def test_headers_that_do_not_parse_announce_nothing(headers: dict[str, str]) -> None:
    """A count or reset that does not parse is left out, never guessed: nothing is announced."""
    assert parse_announced(headers, now_us=NOW) is None


@given(st.text(max_size=20), st.text(max_size=20))
def test_any_header_text_gives_an_announcement_or_none_never_an_error(
    remaining: str, reset: str
) -> None:
    """Whatever a provider sends, parsing never raises and counts are never negative."""
    announced = parse_announced(
        {"x-ratelimit-remaining-requests": remaining, "x-ratelimit-reset-requests": reset},
        now_us=NOW,
    )
    if announced is not None:
        assert (announced.remaining_requests or 0) >= 0 and (announced.requests_reset_us or 0) >= 0


def test_an_error_response_carries_its_announcement_beside_its_hint() -> None:
    """A 429's observation keeps its Retry-After hint and also what its headers announced."""
    response = httpx.Response(
        429,
        headers={
            "retry-after-ms": "1500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "2s",
        },
        json={"error": {"message": "Rate limit reached", "type": "requests"}},
    )
    observed = observe_response(response, now_us=NOW)
    assert observed.outcome.hint_us == 1_500_000  # type: ignore[union-attr]
    assert observed.announced == Announced(remaining_requests=0, requests_reset_us=2_000_000)
