"""Anthropic Messages API responses and ``anthropic`` SDK exceptions (I4, A3)."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from routeledger.adapters.providers.observe import Provider, observe_exception, observe_response
from routeledger.core.routing.commands import Succeeded
from routeledger.core.routing.failures import FailureClass

from ._helpers import NOW_US, expect, response

F = FailureClass
S = 1_000_000
URL = "https://api.anthropic.com/v1/messages"


def _err(type_: str, message: str) -> dict[str, object]:
    return {"type": "error", "error": {"type": type_, "message": message}}


CASES = [
    (
        "invalid-request",
        400,
        {},
        _err("invalid_request_error", "messages: roles must alternate"),
        F.INVALID_REQUEST,
        None,
    ),
    (
        "credit-balance",
        400,
        {},
        _err(
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
        ),
        F.QUOTA_EXHAUSTED,
        None,
    ),
    (
        "prompt-too-long",
        400,
        {},
        _err("invalid_request_error", "prompt is too long: 212345 tokens > 200000 maximum"),
        F.CONTEXT_LENGTH_EXCEEDED,
        None,
    ),
    (
        "authentication",
        401,
        {},
        _err("authentication_error", "invalid x-api-key"),
        F.AUTH_ERROR,
        None,
    ),
    (
        "permission",
        403,
        {},
        _err(
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        F.AUTH_ERROR,
        None,
    ),
    (
        "not-found",
        404,
        {},
        _err("not_found_error", "model: claude-3-opus-latest"),
        F.MODEL_NOT_FOUND,
        None,
    ),
    (
        "too-large",
        413,
        {},
        _err("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        F.INVALID_REQUEST,
        None,
    ),
    (
        "rate-limit-retry-after",
        429,
        {"retry-after": "12", "anthropic-ratelimit-requests-reset": "2026-01-01T00:01:00Z"},
        _err(
            "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"
        ),
        F.RATE_LIMITED,
        12 * S,
    ),
    (
        "rate-limit-reset-timestamps",
        429,
        {
            "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:20Z",
            "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:45.5Z",
            "anthropic-ratelimit-input-tokens-reset": "not a time",
        },
        _err("rate_limit_error", "This request would exceed the rate limit for your organization"),
        F.RATE_LIMITED,
        45_500_000,
    ),
    (
        "api-error",
        500,
        {},
        _err("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
        F.PROVIDER_UNAVAILABLE,
        None,
    ),
    (
        "overloaded-529",
        529,
        {},
        _err("overloaded_error", "Overloaded"),
        F.PROVIDER_UNAVAILABLE,
        None,
    ),
]


@pytest.mark.parametrize(
    ("status", "headers", "body", "failure", "hint_us"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_anthropic_error_table(
    status: int, headers: dict[str, str], body: object, failure: FailureClass, hint_us: int | None
) -> None:
    """Each real-looking Anthropic error maps to its class, keeps its status and parses its hint (I4, A3)."""
    observation = observe_response(response(status, body, headers=headers, url=URL), now_us=NOW_US)
    expect(observation, failure, status=status, hint_us=hint_us)
    assert observation.provider is Provider.ANTHROPIC


def test_anthropic_success_usage_and_refusal() -> None:
    """A message is a success with input/output tokens; stop_reason refusal is CONTENT_FILTERED (I4)."""
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 25, "output_tokens": 4},
    }
    observation = observe_response(response(200, body, url=URL), now_us=NOW_US)
    assert observation.outcome == Succeeded(input_tokens=25, output_tokens=4)
    assert observation.provider is Provider.ANTHROPIC
    refused = observe_response(
        response(200, {**body, "stop_reason": "refusal"}, url=URL), now_us=NOW_US
    )
    expect(refused, F.CONTENT_FILTERED, status=200)


def test_anthropic_headers_alone_identify_the_dialect() -> None:
    """An Anthropic response without a typed body is still recognised by its headers."""
    observation = observe_response(
        response(
            500,
            text="upstream connect error",
            headers={"anthropic-organization-id": "org"},
            url=URL,
        ),
        now_us=NOW_US,
    )
    assert observation.provider is Provider.ANTHROPIC
    expect(observation, F.PROVIDER_UNAVAILABLE, status=500)


def test_anthropic_sdk_status_errors() -> None:
    """anthropic.APIStatusError subclasses are read through their responses (I4)."""
    body = _err("overloaded_error", "Overloaded")
    exc = anthropic.InternalServerError(
        "Error code: 529", response=response(529, body, url=URL), body=body
    )
    expect(observe_exception(exc, now_us=NOW_US), F.PROVIDER_UNAVAILABLE, status=529)
    body = _err("rate_limit_error", "rate limited")
    exc2 = anthropic.RateLimitError(
        "Error code: 429",
        response=response(429, body, headers={"retry-after": "4"}, url=URL),
        body=body,
    )
    expect(observe_exception(exc2, now_us=NOW_US), F.RATE_LIMITED, status=429, hint_us=4 * S)
    body = _err("authentication_error", "invalid x-api-key")
    exc3 = anthropic.APIStatusError(
        "Error code: 401", response=response(401, body, url=URL), body=body
    )
    observation = observe_exception(exc3, now_us=NOW_US)
    expect(observation, F.AUTH_ERROR, status=401)
    assert observation.provider_code == "authentication_error"


def test_anthropic_sdk_transport_errors() -> None:
    """anthropic's connection and timeout errors map to CONNECT_ERROR and TIMEOUT_BEFORE_RESPONSE (I4)."""
    request = httpx.Request("POST", URL)
    expect(
        observe_exception(anthropic.APIConnectionError(request=request), now_us=NOW_US),
        F.CONNECT_ERROR,
        status=None,
    )
    expect(
        observe_exception(anthropic.APITimeoutError(request=request), now_us=NOW_US),
        F.TIMEOUT_BEFORE_RESPONSE,
        status=None,
    )
