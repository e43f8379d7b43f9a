"""httpx transport failures, pydantic-ai errors and nested fallback groups (I4, E1)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic_ai.exceptions import (
    ContentFilterError,
    FallbackExceptionGroup,
    ModelAPIError,
    ModelConnectionError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelRateLimitError,
    UnexpectedModelBehavior,
)

from routeledger.adapters.providers.observe import (
    GROUP_DEPTH_MAX,
    observe_exception,
    observe_exceptions,
)
from routeledger.adapters.providers.scrub import Scrubber
from routeledger.core.routing.failures import FailureClass, Phase

from ._helpers import NOW_US, expect, failed, response

F = FailureClass
S = 1_000_000
REQUEST = httpx.Request("POST", "https://api.example.test/v1/chat/completions")


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST), F.CONNECT_ERROR),
        (httpx.ConnectTimeout("timed out", request=REQUEST), F.CONNECT_ERROR),
        (httpx.ReadTimeout("timed out", request=REQUEST), F.TIMEOUT_BEFORE_RESPONSE),
        (httpx.PoolTimeout("no connection", request=REQUEST), F.GATEWAY_POOL_EXHAUSTED),
        (
            httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=REQUEST
            ),
            F.CONNECT_ERROR,
        ),
        (httpx.ReadError("Connection reset by peer", request=REQUEST), F.CONNECT_ERROR),
        (httpx.DecodingError("bad gzip", request=REQUEST), F.MALFORMED_RESPONSE),
        (httpx.UnsupportedProtocol("ftp", request=REQUEST), F.CONNECT_ERROR),
        (TimeoutError("deadline"), F.TIMEOUT_BEFORE_RESPONSE),
        (ConnectionResetError("reset"), F.CONNECT_ERROR),
        (asyncio.CancelledError(), F.CALLER_CANCELLED),
        (RuntimeError("boom"), F.UNKNOWN),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_transport_failures(exc: BaseException, failure: FailureClass) -> None:
    """Transport exceptions before any response map to their class with no status (I4)."""
    observation = observe_exception(exc, now_us=NOW_US)
    expect(observation, failure, status=None)
    assert failed(observation).phase is Phase.BEFORE_RESPONSE
    assert type(exc).__name__ in observation.detail


def test_httpx_status_error_reads_its_response() -> None:
    """raise_for_status()'s HTTPStatusError is classified from its response (I4)."""
    resp = response(429, {"error": {"message": "slow"}}, headers={"retry-after": "5"})
    exc = httpx.HTTPStatusError("429", request=resp.request, response=resp)
    expect(observe_exception(exc, now_us=NOW_US), F.RATE_LIMITED, status=429, hint_us=5 * S)


def test_streamed_response_not_read_is_unknown_content() -> None:
    """A status error whose streamed body was never read is classified by status alone (I4)."""
    resp = httpx.Response(404, request=REQUEST, stream=httpx.ByteStream(b'{"error": "x"}'))
    exc = httpx.HTTPStatusError("404", request=REQUEST, response=resp)
    expect(observe_exception(exc, now_us=NOW_US), F.MODEL_NOT_FOUND, status=404)


def test_pydantic_ai_http_errors() -> None:
    """pydantic-ai's ModelHTTPError carries status, body and headers; the table and hints apply (I4, I1, A3)."""
    exc = ModelHTTPError(
        429, "gpt-4o", {"error": {"message": "Rate limit reached"}}, headers={"Retry-After": "9"}
    )
    observation = observe_exception(exc, now_us=NOW_US)
    expect(observation, F.RATE_LIMITED, status=429, hint_us=9 * S)
    assert observation.model == "gpt-4o"
    unsupported = ModelHTTPError(400, "m", {"error": {"message": "model not supported"}})
    expect(observe_exception(unsupported, now_us=NOW_US), F.MODEL_NOT_SUPPORTED, status=400)
    bare = ModelHTTPError(500, "m")
    expect(observe_exception(bare, now_us=NOW_US), F.PROVIDER_UNAVAILABLE, status=500)
    categorised = ModelHTTPError.for_category(ModelNotFoundError, status_code=404, model_name="m")
    expect(observe_exception(categorised, now_us=NOW_US), F.MODEL_NOT_FOUND, status=404)


def test_pydantic_ai_in_stream_error_is_before_first_token() -> None:
    """An HTTP error reported inside an open stream is phased after the response started (I1)."""
    exc = ModelHTTPError(
        529,
        "claude",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        in_stream=True,
    )
    observation = observe_exception(exc, now_us=NOW_US)
    assert failed(observation).phase is Phase.BEFORE_FIRST_TOKEN
    assert observation.failure is F.PROVIDER_UNAVAILABLE


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (ModelRateLimitError("m", "slow down"), F.RATE_LIMITED),
        (ModelConnectionError("m", "refused"), F.CONNECT_ERROR),
        (ModelAPIError("m", "something"), F.UNKNOWN),
        (ContentFilterError("blocked"), F.CONTENT_FILTERED),
        (UnexpectedModelBehavior("Received empty model response"), F.MALFORMED_RESPONSE),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_pydantic_ai_categories(exc: BaseException, failure: FailureClass) -> None:
    """pydantic-ai error categories without an HTTP status map onto the taxonomy (I4)."""
    expect(observe_exception(exc, now_us=NOW_US), failure, status=None)


def _response_rejected() -> BaseException:
    from pydantic_ai._fallback import ResponseRejected  # private, but what FallbackModel raises

    return ResponseRejected(1)


def test_fallback_group_flattened_in_order_with_nested_groups() -> None:
    """A FallbackExceptionGroup with nested groups flattens depth-first, in order, one observation each (I4)."""
    key = "AIzaSyD-" + "k3y" * 10
    inner = FallbackExceptionGroup(
        "All models from FallbackModel failed",
        [
            ModelHTTPError(
                429,
                "google-gla:gemini-2.5-flash",
                {
                    "error": {
                        "code": 429,
                        "message": f"quota per minute, key={key}",
                        "status": "RESOURCE_EXHAUSTED",
                    }
                },
            ),
            RuntimeError("boom"),
        ],
    )
    outer = FallbackExceptionGroup(
        "All models from FallbackModel failed (2 sub-exceptions)",
        [
            ModelHTTPError(
                404, "google-gla:gemini-3-flash-preview", {"error": {"message": "not found"}}
            ),
            inner,
            _response_rejected(),
            ModelHTTPError(
                401, "openai:gpt-4o", {"error": {"message": f"Incorrect API key provided: {key}"}}
            ),
        ],
    )
    observations = observe_exceptions(outer, now_us=NOW_US, scrubber=Scrubber([key]))
    assert [o.failure for o in observations] == [
        F.MODEL_NOT_FOUND,
        F.QUOTA_EXHAUSTED,
        F.UNKNOWN,
        F.RESPONSE_REJECTED,
        F.AUTH_ERROR,
    ]
    assert [o.status for o in observations] == [404, 429, None, None, 401]
    assert observations[0].model == "google-gla:gemini-3-flash-preview"
    for observation in observations:
        assert key[8:16] not in observation.detail and "sub-exceptions" not in observation.detail


def test_single_exception_is_one_observation() -> None:
    """A bare exception (not a group) yields exactly one observation (I4)."""
    assert len(observe_exceptions(RuntimeError("x"), now_us=NOW_US)) == 1


def test_group_depth_is_bounded() -> None:
    """A pathologically deep group stops flattening at the limit instead of recursing forever."""
    group: BaseException = RuntimeError("leaf")
    for _ in range(GROUP_DEPTH_MAX + 5):
        group = ExceptionGroup("g", [group])
    observations = observe_exceptions(group, now_us=NOW_US)
    assert len(observations) == 1 and observations[0].failure is F.UNKNOWN


def test_cause_chain_cycle_terminates() -> None:
    """A cyclic __cause__/__context__ chain is walked once, never forever."""
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first
    assert observe_exception(first, now_us=NOW_US).failure is F.UNKNOWN


def test_empty_exception_message_uses_type_name() -> None:
    """An exception with no message is described by its type name."""
    assert observe_exception(RuntimeError(), now_us=NOW_US).detail == "RuntimeError"
