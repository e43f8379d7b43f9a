"""Edge cases of the builders: odd bodies, hints and SDK shapes never raise (I4, A3)."""

from __future__ import annotations

import httpx
import openai

from routeledger.adapters.providers.observe import (
    Provider,
    StreamObserver,
    cap_detail,
    observe_exception,
    observe_response,
    parse_duration_us,
    parse_hint_us,
)
from routeledger.core.routing.commands import Succeeded
from routeledger.core.routing.failures import FailureClass

from ._helpers import NOW_US, expect, response

F = FailureClass


def test_status_defaults_without_a_matching_message() -> None:
    """With no table row matching, the status decides (402 quota, 413 invalid) (I4)."""
    expect(
        observe_response(response(402, {"error": {"message": "nope"}}), now_us=NOW_US),
        F.QUOTA_EXHAUSTED,
        status=402,
    )
    expect(
        observe_response(response(413, {"message": "too big"}), now_us=NOW_US),
        F.INVALID_REQUEST,
        status=413,
    )


def test_parse_duration_forms() -> None:
    """Go durations, plain seconds and garbage parse to µs or None (A3)."""
    assert parse_duration_us("6m0s") == 360_000_000
    assert parse_duration_us("1h2m3.5s") == 3_723_500_000
    assert parse_duration_us("250us") == 250 and parse_duration_us("1500ns") == 1
    assert parse_duration_us(" 2 ") == 2_000_000 and parse_duration_us("-3") == 0
    assert parse_duration_us("") is None and parse_duration_us("1s x") is None
    assert (
        parse_duration_us("x1s") is None
        and parse_duration_us("99999999999999h") == 365 * 24 * 3600 * 1_000_000
    )


def test_http_date_without_zone_is_utc() -> None:
    """An HTTP date with a -0000 zone (parsed naive) is read as UTC (A3)."""
    hint = parse_hint_us(
        {"retry-after": "Thu, 01 Jan 2026 00:00:10 -0000"}, None, status=503, now_us=NOW_US
    )
    assert hint == (10_000_000, "retry-after")


def test_cap_detail_scrubs_and_collapses() -> None:
    """cap_detail scrubs, puts the text on one line and caps it (I4, E1)."""
    assert cap_detail("a\n\n b  sk-abcdefghijklmnop") == "a b [REDACTED]"


def test_odd_usage_shapes_count_zero() -> None:
    """Usage fields that are not integers are ignored, never fatal."""
    odd = {
        "choices": [],
        "usage": {"prompt_tokens": "12"},
        "usageMetadata": {"promptTokenCount": None},
    }
    assert observe_response(response(200, odd), now_us=NOW_US).outcome == Succeeded()


def test_sdk_inner_error_object_is_wrapped() -> None:
    """An SDK body that is the inner error object (message + code) is read like a full error body (I1)."""
    exc = openai.UnprocessableEntityError(
        "Error code: 422",
        response=response(422, text=""),
        body={"message": "unsupported model", "code": "x"},
    )
    expect(observe_exception(exc, now_us=NOW_US), F.MODEL_NOT_SUPPORTED, status=422)


class _StatusErrorWithoutResponse(Exception):
    """Looks like an SDK status error but carries no httpx response."""


class APIStatusError(_StatusErrorWithoutResponse):
    """Duck-typed by name: the builder must not trust it has a response."""


def test_status_error_without_response_is_unknown() -> None:
    """A status-error look-alike without a response falls through to UNKNOWN instead of raising (I4)."""
    expect(observe_exception(APIStatusError("weird"), now_us=NOW_US), F.UNKNOWN, status=None)


def test_stream_last_event_error_at_end() -> None:
    """A malformed last event without its blank line is reported when the connection closes (I4)."""
    observer = StreamObserver()
    observer.feed(b"data: {broken", now_us=1)
    assert observer.end(now_us=2).failure is F.MALFORMED_RESPONSE


def test_stream_without_dialect_markers() -> None:
    """Chunks carrying only usage leave the dialect unknown and the stream unfinished."""
    observer = StreamObserver()
    observer.feed(b'data: {"usage": {"prompt_tokens": 1, "completion_tokens": 0}}\n\n', now_us=1)
    assert observer.provider is None
    observer.feed(b'data: {"candidates": [{"content": {"parts": [{"text": "a"}]}}]}\n\n', now_us=2)
    assert observer.provider is Provider.GEMINI and observer.finish_reason is None
    assert observer.end(now_us=3).failure is F.STREAM_INTERRUPTED


def test_proxy_html_error_page() -> None:
    """An HTML error page from a proxy is kept as scrubbed text with its status (I4)."""
    page = "<html><body>502 Bad Gateway: upstream https://user:pw@origin failed</body></html>"
    observation = observe_response(response(502, text=page), now_us=NOW_US)
    expect(observation, F.PROVIDER_UNAVAILABLE, status=502)
    assert "user:pw" not in observation.detail and "[REDACTED]@origin" in observation.detail


def test_transport_error_wrapped_in_runtime_error() -> None:
    """A transport error found in the cause chain decides the class (I4)."""
    exc = RuntimeError("request failed")
    exc.__context__ = httpx.ConnectError("refused")
    expect(observe_exception(exc, now_us=NOW_US), F.CONNECT_ERROR, status=None)


def test_unread_streamed_response_never_raises() -> None:
    """A streamed response whose body was not read is classified by status, not an exception (I4)."""
    request = httpx.Request("POST", "https://api.example.test/v1/chat/completions")
    unread = httpx.Response(503, request=request, stream=httpx.ByteStream(b"{}"))
    expect(observe_response(unread, now_us=NOW_US), F.PROVIDER_UNAVAILABLE, status=503)
