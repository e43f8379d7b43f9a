"""OpenAI-compatible responses and ``openai`` SDK exceptions (I4, I1, A3, E1)."""

from __future__ import annotations

import httpx
import openai
import pytest

from routeledger.adapters.providers.observe import (
    Provider,
    observe_exception,
    observe_response,
)
from routeledger.core.events import DETAIL_CHARS_MAX
from routeledger.core.routing.commands import Succeeded
from routeledger.core.routing.failures import Evidence, FailureClass, Phase

from ._helpers import NOW_US, expect, failed, response

F = FailureClass
S = 1_000_000


def _err(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


CASES = [
    # (id, status, headers, body, class, hint_us)
    (
        "rate-limit-tpm",
        429,
        {"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "1.5s"},
        _err(
            "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): "
            "Limit 30000, Used 29000, Requested 2000. Please try again in 2s.",
            "tokens",
            "rate_limit_exceeded",
        ),
        F.RATE_LIMITED,
        360 * S,
    ),
    (
        "rate-limit-retry-after-ms",
        429,
        {"retry-after-ms": "1500", "retry-after": "2"},
        _err("Rate limit reached", "requests", "rate_limit_exceeded"),
        F.RATE_LIMITED,
        1_500_000,
    ),
    (
        "insufficient-quota",
        429,
        {},
        _err(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        ),
        F.QUOTA_EXHAUSTED,
        None,
    ),
    (
        "invalid-api-key",
        401,
        {},
        _err(
            "Incorrect API key provided: sk-proj-****abcd.",
            "invalid_request_error",
            "invalid_api_key",
        ),
        F.AUTH_ERROR,
        None,
    ),
    (
        "model-not-found-404",
        404,
        {},
        _err(
            "The model `gpt-5-turbo` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        F.MODEL_NOT_FOUND,
        None,
    ),
    (
        "context-length",
        400,
        {},
        _err(
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
        ),
        F.CONTEXT_LENGTH_EXCEEDED,
        None,
    ),
    (
        "content-policy",
        400,
        {},
        _err(
            "Invalid prompt: your prompt was flagged as potentially violating our usage policy.",
            "invalid_request_error",
            "invalid_prompt",
        ),
        F.CONTENT_FILTERED,
        None,
    ),
    (
        "azure-content-filter",
        400,
        {},
        _err(
            "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "invalid_request_error",
            "content_filter",
        ),
        F.CONTENT_FILTERED,
        None,
    ),
    (
        "model-not-supported-400-i1",
        400,
        {},
        _err(
            "The requested model is not supported.", "invalid_request_error", "model_not_supported"
        ),
        F.MODEL_NOT_SUPPORTED,
        None,
    ),
    (
        "model-not-supported-422-i1",
        422,
        {},
        {
            "error": {
                "message": "model gpt-4.1 is not supported for this credential",
                "type": "invalid_request_error",
            }
        },
        F.MODEL_NOT_SUPPORTED,
        None,
    ),
    (
        "plain-bad-request",
        400,
        {},
        _err("'messages' is a required property", "invalid_request_error", None, "messages"),
        F.INVALID_REQUEST,
        None,
    ),
    (
        "server-error-503-retry-after",
        503,
        {"retry-after": "7"},
        _err("The server is currently overloaded with other requests.", "server_error"),
        F.PROVIDER_UNAVAILABLE,
        7 * S,
    ),
    (
        "server-error-500",
        500,
        {},
        _err("The server had an error while processing your request.", "server_error"),
        F.PROVIDER_UNAVAILABLE,
        None,
    ),
    (
        "payment-required",
        402,
        {},
        {"error": {"message": "Payment required"}},
        F.QUOTA_EXHAUSTED,
        None,
    ),
    (
        "forbidden",
        403,
        {},
        {"error": {"message": "Project does not have access"}},
        F.AUTH_ERROR,
        None,
    ),
    (
        "request-timeout",
        408,
        {},
        {"error": {"message": "Request timed out"}},
        F.TIMEOUT_BEFORE_RESPONSE,
        None,
    ),
    ("other-http-409", 409, {}, {"error": {"message": "Conflict"}}, F.UNKNOWN, None),
    ("other-http-302", 302, {}, {"error": {"message": "Moved"}}, F.UNKNOWN, None),
]


@pytest.mark.parametrize(
    ("status", "headers", "body", "failure", "hint_us"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_openai_error_table(
    status: int, headers: dict[str, str], body: object, failure: FailureClass, hint_us: int | None
) -> None:
    """Each real-looking OpenAI error response maps to its class, keeps its status and parses its hint (I4, I1, A3)."""
    observation = observe_response(response(status, body, headers=headers), now_us=NOW_US)
    expect(observation, failure, status=status, hint_us=hint_us)
    assert failed(observation).phase is Phase.BEFORE_RESPONSE
    assert observation.provider is Provider.OPENAI
    assert not observation.billed


def test_openai_success_carries_usage() -> None:
    """A 200 completion is an upstream success with the usage it reports (I1.2)."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    observation = observe_response(response(200, body), now_us=NOW_US)
    assert observation.outcome == Succeeded(
        evidence=Evidence.UPSTREAM, input_tokens=12, output_tokens=3
    )
    assert observation.model == "gpt-4o-2024-08-06" and observation.billed
    assert observation.failure is None
    assert observation.usage_reported


def test_openai_success_without_usage_says_none_was_reported() -> None:
    """A 200 without usage is still a success, with zero tokens, marked as not reporting usage (L11)."""
    observation = observe_response(response(200, {"choices": []}), now_us=NOW_US)
    assert observation.outcome == Succeeded(evidence=Evidence.UPSTREAM)
    assert not observation.usage_reported


def test_content_filter_finish_reason_is_a_failure() -> None:
    """A 200 whose finish_reason is content_filter is CONTENT_FILTERED, billed (I4)."""
    body = {
        "choices": [{"index": 0, "message": {"content": ""}, "finish_reason": "content_filter"}]
    }
    observation = observe_response(response(200, body), now_us=NOW_US)
    expect(observation, F.CONTENT_FILTERED, status=200)
    assert observation.billed


def test_in_band_error_in_200_is_classified() -> None:
    """An OpenRouter-style error object inside a 200 is classified from its own code (I4)."""
    body = {"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min"}}
    expect(observe_response(response(200, body), now_us=NOW_US), F.RATE_LIMITED, status=429)
    body = {"error": {"code": "weird", "message": "something odd"}}
    expect(observe_response(response(200, body), now_us=NOW_US), F.UNKNOWN, status=None)


def test_unparsable_200_is_malformed() -> None:
    """A 200 whose body is not a JSON object is MALFORMED_RESPONSE, never an exception (I4)."""
    observation = observe_response(response(200, text="<html>oops</html>"), now_us=NOW_US)
    expect(observation, F.MALFORMED_RESPONSE, status=200)
    assert "oops" in observation.detail


def test_unknown_text_body_keeps_status() -> None:
    """A non-JSON error the adapter does not understand is UNKNOWN with the raw status kept (I4)."""
    observation = observe_response(response(418, text="I'm a teapot"), now_us=NOW_US)
    expect(observation, F.UNKNOWN, status=418)
    assert observation.detail == "I'm a teapot"
    empty = observe_response(response(599, text=""), now_us=NOW_US)
    expect(empty, F.PROVIDER_UNAVAILABLE, status=599)
    assert empty.detail == "HTTP 599"


def test_detail_is_scrubbed_and_capped() -> None:
    """A secret-laden, over-long message is scrubbed and capped at 300 characters (I4, E1)."""
    key = "sk-proj-" + "Zx9" * 16
    message = f"Incorrect API key provided: {key}. " + "padding " * 80
    observation = observe_response(
        response(401, _err(message, "invalid_request_error", "invalid_api_key")), now_us=NOW_US
    )
    assert len(observation.detail) == DETAIL_CHARS_MAX and observation.detail.endswith("…")
    assert key[:8] not in observation.detail and "Zx9Zx9Zx" not in observation.detail
    assert "[REDACTED]" in observation.detail


def test_retry_after_http_date_is_relative_to_now() -> None:
    """An HTTP-date Retry-After becomes a duration from the given now, never from the clock (A3)."""
    headers = {"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"}
    observation = observe_response(
        response(429, _err("slow down", "requests"), headers=headers), now_us=NOW_US
    )
    expect(observation, F.RATE_LIMITED, status=429, hint_us=30 * S)
    assert observation.hint_source == "retry-after"
    past = {"retry-after": "Wed, 31 Dec 2025 23:00:00 GMT"}
    expect(
        observe_response(response(429, {}, headers=past), now_us=NOW_US),
        F.RATE_LIMITED,
        status=429,
        hint_us=0,
    )


def test_garbage_hints_are_ignored() -> None:
    """Unparsable hint headers yield no hint rather than an error (I4)."""
    headers = {
        "retry-after-ms": "soon",
        "retry-after": "whenever",
        "x-ratelimit-reset-requests": "1x",
    }
    expect(
        observe_response(response(429, {}, headers=headers), now_us=NOW_US),
        F.RATE_LIMITED,
        status=429,
    )


def test_reset_headers_only_hint_a_429() -> None:
    """x-ratelimit-reset-* describe the window; they hint only a 429, not a 500 (A3)."""
    headers = {"x-ratelimit-reset-requests": "20ms"}
    expect(
        observe_response(response(429, {}, headers=headers), now_us=NOW_US),
        F.RATE_LIMITED,
        status=429,
        hint_us=20_000,
    )
    expect(
        observe_response(response(500, {}, headers=headers), now_us=NOW_US),
        F.PROVIDER_UNAVAILABLE,
        status=500,
    )


# --------------------------------------------------------------------------- SDK exceptions


def _sdk_response(
    status: int, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    return response(status, body, headers=headers, url="https://api.openai.com/v1/chat/completions")


def test_openai_rate_limit_error() -> None:
    """openai.RateLimitError is read through its response: class, status and hint (I4, A3)."""
    body = _err("Rate limit reached for requests", "requests", "rate_limit_exceeded")
    exc = openai.RateLimitError(
        "Error code: 429",
        response=_sdk_response(429, body, {"retry-after": "3"}),
        body=body["error"],
    )
    expect(observe_exception(exc, now_us=NOW_US), F.RATE_LIMITED, status=429, hint_us=3 * S)


def test_openai_quota_error_is_quota() -> None:
    """A 429 RateLimitError whose code is insufficient_quota is QUOTA_EXHAUSTED, not a rate limit (I4)."""
    body = _err(
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    )
    exc = openai.RateLimitError(
        "Error code: 429", response=_sdk_response(429, body), body=body["error"]
    )
    expect(observe_exception(exc, now_us=NOW_US), F.QUOTA_EXHAUSTED, status=429)


def test_openai_status_errors_by_status() -> None:
    """Auth, not-found, bad-request and server SDK errors map like their responses (I4)."""
    cases = [
        (openai.AuthenticationError, 401, F.AUTH_ERROR),
        (openai.PermissionDeniedError, 403, F.AUTH_ERROR),
        (openai.NotFoundError, 404, F.MODEL_NOT_FOUND),
        (openai.BadRequestError, 400, F.INVALID_REQUEST),
        (openai.InternalServerError, 500, F.PROVIDER_UNAVAILABLE),
    ]
    for cls, status, failure in cases:
        body = {"error": {"message": "nope", "type": "x"}}
        exc = cls(f"Error code: {status}", response=_sdk_response(status, body), body=body["error"])
        expect(observe_exception(exc, now_us=NOW_US), failure, status=status)


def test_openai_status_error_with_empty_response_uses_sdk_body() -> None:
    """When the response content is empty, the SDK's parsed body is classified instead (I1)."""
    exc = openai.BadRequestError(
        "Error code: 400",
        response=response(400, text=""),
        body={"message": "model is not supported", "type": "invalid_request_error"},
    )
    expect(observe_exception(exc, now_us=NOW_US), F.MODEL_NOT_SUPPORTED, status=400)
    bare = openai.BadRequestError(
        "Error code: 400 - plain words", response=response(400, text=""), body=None
    )
    observation = observe_exception(bare, now_us=NOW_US)
    expect(observation, F.INVALID_REQUEST, status=400)
    assert "plain words" in observation.detail


def test_openai_connection_and_timeout_errors() -> None:
    """APIConnectionError is CONNECT_ERROR, APITimeoutError TIMEOUT_BEFORE_RESPONSE (I4)."""
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    expect(
        observe_exception(openai.APIConnectionError(request=request), now_us=NOW_US),
        F.CONNECT_ERROR,
        status=None,
    )
    expect(
        observe_exception(openai.APITimeoutError(request=request), now_us=NOW_US),
        F.TIMEOUT_BEFORE_RESPONSE,
        status=None,
    )


def test_openai_connection_error_refined_by_cause() -> None:
    """An APIConnectionError caused by httpx.ReadTimeout is a timeout before response (I4)."""
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    exc = openai.APIConnectionError(request=request)
    exc.__cause__ = httpx.ReadTimeout("timed out", request=request)
    expect(observe_exception(exc, now_us=NOW_US), F.TIMEOUT_BEFORE_RESPONSE, status=None)


def test_openai_response_validation_and_content_filter_errors() -> None:
    """A response the SDK cannot validate is MALFORMED_RESPONSE; a content-filter finish is CONTENT_FILTERED."""
    exc = openai.APIResponseValidationError(response=_sdk_response(200, {"x": 1}), body={"x": 1})
    expect(observe_exception(exc, now_us=NOW_US), F.MALFORMED_RESPONSE, status=200)
    observation = observe_exception(openai.ContentFilterFinishReasonError(), now_us=NOW_US)
    expect(observation, F.CONTENT_FILTERED, status=None)
    assert observation.billed
