"""Errors read by behaviour (status, headers, body), whatever HTTP library built them.

httpx2's own exceptions and responses are the installed ones. mistralai and
litellm are not dependencies: their classes are mirrored here attribute for
attribute from their sources (mistralai 3.8 ``client/errors/mistralerror.py``,
litellm 1.110 ``litellm/exceptions.py``), on the real openai/httpx/httpx2 bases
they build on, so a drift in our reading — not in theirs — fails these tests.
"""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
import openai
import pytest
from pydantic_ai.exceptions import ModelHTTPError

from routeledger.adapters.providers.observe import observe_exception, observe_response
from routeledger.core.errors import UsageError
from routeledger.core.routing.failures import FailureClass

from ._helpers import NOW_US, expect

F = FailureClass
S = 1_000_000
URL = "https://api.example.test/v1/chat/completions"
REQUEST2 = httpx2.Request("POST", URL)


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (httpx2.ConnectError("[Errno 111] Connection refused", request=REQUEST2), F.CONNECT_ERROR),
        (httpx2.ConnectTimeout("timed out", request=REQUEST2), F.CONNECT_ERROR),
        (httpx2.ReadTimeout("timed out", request=REQUEST2), F.TIMEOUT_BEFORE_RESPONSE),
        (httpx2.WriteTimeout("timed out", request=REQUEST2), F.TIMEOUT_BEFORE_RESPONSE),
        (httpx2.PoolTimeout("no connection", request=REQUEST2), F.GATEWAY_POOL_EXHAUSTED),
        (httpx2.RemoteProtocolError("Server disconnected", request=REQUEST2), F.CONNECT_ERROR),
        (httpx2.ReadError("Connection reset by peer", request=REQUEST2), F.CONNECT_ERROR),
        (httpx2.DecodingError("bad gzip", request=REQUEST2), F.MALFORMED_RESPONSE),
        (httpx2.UnsupportedProtocol("ftp", request=REQUEST2), F.CONNECT_ERROR),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_httpx2_transport_failures(exc: BaseException, failure: FailureClass) -> None:
    """httpx2's transport errors classify as httpx's do (by name along the MRO, not identity)."""
    expect(observe_exception(exc, now_us=NOW_US), failure, status=None)


def test_httpx2_status_error_and_response() -> None:
    """An httpx2 response (raise_for_status' error, or given directly) is read like httpx's."""
    response = httpx2.Response(
        429,
        json={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
        headers={"retry-after-ms": "1500"},
        request=REQUEST2,
    )
    error = httpx2.HTTPStatusError("429", request=REQUEST2, response=response)
    expect(observe_exception(error, now_us=NOW_US), F.RATE_LIMITED, status=429, hint_us=1_500_000)
    expect(observe_response(response, now_us=NOW_US), F.RATE_LIMITED, status=429, hint_us=1_500_000)


class RequestsLikeResponse:
    """What a ``requests.Response`` offers: status_code, a headers mapping, text."""

    def __init__(self, status_code: int, headers: dict[str, str], text: str) -> None:
        self.status_code = status_code
        self.headers = headers
        self.text = text


def test_requests_like_response_and_an_exception_carrying_it() -> None:
    """Any object with status_code, headers and text is a response (names any case)."""
    body = '{"error": {"message": "The model `gpt-x` does not exist", "code": "model_not_found"}}'
    response = RequestsLikeResponse(404, {"Retry-After": "3"}, body)
    expect(observe_response(response, now_us=NOW_US), F.MODEL_NOT_FOUND, status=404, hint_us=3 * S)
    error = RuntimeError("HTTP 404")
    error.response = response  # type: ignore[attr-defined]  # what requests' HTTPError carries
    expect(observe_exception(error, now_us=NOW_US), F.MODEL_NOT_FOUND, status=404, hint_us=3 * S)


def test_observe_response_refuses_what_is_not_a_response() -> None:
    """Something without an HTTP status is a caller's mistake (UsageError), not a failure."""
    with pytest.raises(UsageError, match="needs an HTTP response"):
        observe_response(object(), now_us=NOW_US)


# --- mistralai 3.8: client/errors/mistralerror.py, on httpx2 ---------------------------


class MistralError(Exception):
    """Mirror of ``mistralai.client.errors.MistralError``'s constructor."""

    def __init__(self, message: str, raw_response: httpx2.Response, body: str | None = None):
        self.message = message
        self.status_code = raw_response.status_code
        self.body = body if body is not None else raw_response.text
        self.headers = raw_response.headers
        self.raw_response = raw_response
        super().__init__(message)


class NoResponseError(Exception):
    """Mirror of ``mistralai.client.errors.NoResponseError``."""


def test_mistral_errors() -> None:
    """mistralai's errors: status_code, a text body, httpx2 headers on raw_response."""
    response = httpx2.Response(
        429,
        json={"object": "error", "message": "Requests rate limit exceeded", "type": "rate_limited"},
        headers={"Retry-After": "2"},
        request=REQUEST2,
    )
    error = MistralError("API error occurred", response)
    expect(observe_exception(error, now_us=NOW_US), F.RATE_LIMITED, status=429, hint_us=2 * S)
    missing = NoResponseError("No response received")
    expect(observe_exception(missing, now_us=NOW_US), F.CONNECT_ERROR, status=None)


# --- litellm 1.110: litellm/exceptions.py, on openai's classes and httpx ----------------


class LiteLLMRateLimitError(openai.RateLimitError):
    """Mirror of ``litellm.RateLimitError``: a made-up response, the proxy's own headers."""

    def __init__(self, message: str, model: str, headers: dict[str, str] | None = None):
        self.status_code = 429
        self.message = f"litellm.RateLimitError: {message}"
        self.model = model
        self.litellm_debug_info = None
        self.headers = dict(headers) if headers else None
        self.response = httpx.Response(  # type: ignore[assignment]  # litellm's is httpx's
            429, stream=httpx.ByteStream(b""), request=httpx.Request("POST", "https://x.test")
        )
        self.response.read()
        super().__init__(self.message, response=self.response, body=None)  # type: ignore[arg-type]


class LiteLLMConnectionError(openai.APIConnectionError):
    """Mirror of ``litellm.APIConnectionError``: a status 500 that is no answer at all."""

    def __init__(self, message: str) -> None:
        self.message = f"litellm.APIConnectionError: {message}"
        self.status_code = 500
        super().__init__(message=self.message, request=httpx2.Request("POST", URL))


class LiteLLMTimeout(openai.APITimeoutError):
    """Mirror of ``litellm.Timeout``: status 408, no answer."""

    def __init__(self, message: str) -> None:
        super().__init__(request=httpx2.Request("POST", URL))
        self.status_code = 408
        self.message = f"litellm.Timeout: {message}"


class BudgetExceededError(Exception):
    """Mirror of ``litellm.BudgetExceededError``: a plain exception with a status_code."""

    def __init__(self, current_cost: float, max_budget: float) -> None:
        self.status_code = 422  # litellm.budget_exceeded_status_code
        self.message = (
            f"Budget has been exceeded! Current cost: {current_cost}, Max budget: {max_budget}"
        )
        super().__init__(self.message)


@pytest.mark.parametrize(
    ("exc", "failure", "status", "hint_us"),
    [
        (LiteLLMRateLimitError("slow", "gpt-4o", {"retry-after": "9"}), F.RATE_LIMITED, 429, 9 * S),
        (LiteLLMRateLimitError("slow", "gpt-4o"), F.RATE_LIMITED, 429, None),
        (LiteLLMConnectionError("refused"), F.CONNECT_ERROR, None, None),
        (LiteLLMTimeout("timed out"), F.TIMEOUT_BEFORE_RESPONSE, None, None),
        (BudgetExceededError(1.5, 1.0), F.QUOTA_EXHAUSTED, 422, None),
    ],
    ids=["rate-limit-headers", "rate-limit", "connection", "timeout", "budget"],
)
def test_litellm_errors(
    exc: BaseException, failure: FailureClass, status: int | None, hint_us: int | None
) -> None:
    """litellm's errors: status_code and message, its own headers over the empty response."""
    observation = observe_exception(exc, now_us=NOW_US)
    expect(observation, failure, status=status, hint_us=hint_us)


def test_litellm_model_is_kept() -> None:
    """litellm's ``model`` attribute names the upstream model of the observation."""
    observation = observe_exception(LiteLLMRateLimitError("slow", "gpt-4o"), now_us=NOW_US)
    assert observation.model == "gpt-4o"
    assert "litellm.RateLimitError: slow" in observation.detail


def test_pydantic_ai_retry_after_is_the_hint_without_a_header() -> None:
    """pydantic-ai's ``retry_after`` seconds are the hint when no header carries one."""
    body: dict[str, Any] = {"error": {"message": "slow down"}}
    error = ModelHTTPError(429, "gpt-4o", body, retry_after=2.5)
    observation = observe_exception(error, now_us=NOW_US)
    expect(observation, F.RATE_LIMITED, status=429, hint_us=2_500_000)
    assert observation.hint_source == "retry_after"
