"""SSE stream observer: first byte/token, chunks, stall, cut, in-band error, malformed chunk (I1, I4)."""

from __future__ import annotations

import json

import httpx
import orjson
import pytest

from routeledger.adapters.providers.observe import (
    SSE_LINE_CHARS_MAX,
    Provider,
    StreamObserver,
    StreamState,
)
from routeledger.core.errors import UsageError
from routeledger.core.routing.commands import Succeeded
from routeledger.core.routing.failures import FailureClass, Phase

from ._helpers import failed

F = FailureClass


def _openai_chunk(
    content: str | None = None, finish: str | None = None, usage: dict[str, int] | None = None
) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk: dict[str, object] = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _anthropic(event: str, data: dict[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def test_openai_stream_success_with_done() -> None:
    """A stream ending in [DONE] succeeds with its usage; first byte/token and chunks are recorded (I1.2)."""
    observer = StreamObserver()
    assert observer.feed(b": keep-alive\n\n", now_us=10) is None
    assert observer.feed(_openai_chunk(""), now_us=20) is None
    assert observer.feed(_openai_chunk("Hel"), now_us=30) is None
    assert observer.feed(_openai_chunk("lo", "stop"), now_us=40) is None
    assert (
        observer.feed(
            _openai_chunk(usage={"prompt_tokens": 5, "completion_tokens": 2}) + b"data: [DONE]\n\n",
            now_us=50,
        )
        is None
    )
    observation = observer.end(now_us=60)
    assert observation.outcome == Succeeded(input_tokens=5, output_tokens=2)
    assert observation.usage_reported
    assert (
        observer.first_byte_us,
        observer.first_token_us,
        observer.chunk_count,
        observer.delivered_chars,
    ) == (10, 30, 5, 5)
    assert observer.provider is Provider.OPENAI and observer.state is StreamState.ENDED


def test_a_stream_without_usage_says_none_was_reported() -> None:
    """A complete stream that never reported usage is a success marked as not reporting usage (L11)."""
    observer = StreamObserver()
    observer.feed(_openai_chunk("hi", "stop") + b"data: [DONE]\n\n", now_us=1)
    observation = observer.end(now_us=2)
    assert isinstance(observation.outcome, Succeeded) and not observation.usage_reported


def test_chunks_split_anywhere_reassemble() -> None:
    """Events split across chunk boundaries (even inside a UTF-8 character) parse the same (I4)."""
    data = _openai_chunk("héllo", "stop") + b"data: [DONE]\r\n\r\n"
    observer = StreamObserver()
    for i in range(len(data)):
        assert observer.feed(data[i : i + 1], now_us=i) is None
    assert isinstance(observer.end(now_us=999).outcome, Succeeded)
    assert observer.delivered_chars == 5


def test_missing_done_with_finish_reason_is_success() -> None:
    """A stream without [DONE] whose content finished (finish_reason) is a success (I4)."""
    observer = StreamObserver()
    observer.feed(_openai_chunk("Hi"), now_us=1)
    observer.feed(_openai_chunk(None, "stop"), now_us=2)
    assert isinstance(observer.end(now_us=3).outcome, Succeeded)


def test_final_event_without_blank_line_is_dispatched_at_end() -> None:
    """A last event without its terminating blank line is still read when the connection closes."""
    observer = StreamObserver()
    observer.feed(_openai_chunk("Hi") + b"data: [DONE]", now_us=1)
    assert isinstance(observer.end(now_us=2).outcome, Succeeded)


def test_cut_without_terminator_mid_stream() -> None:
    """A stream cut after output but before any finish is STREAM_INTERRUPTED mid-stream, billed (I1, I4)."""
    observer = StreamObserver()
    observer.feed(_openai_chunk("partial answer"), now_us=1)
    observation = observer.end(now_us=2)
    outcome = failed(observation)
    assert (outcome.failure, outcome.phase, outcome.delivered_chars) == (
        F.STREAM_INTERRUPTED,
        Phase.MID_STREAM,
        14,
    )
    assert observation.billed


def test_cut_before_first_token() -> None:
    """A stream closed before any token is STREAM_INTERRUPTED before the first token: rotation continues (I1)."""
    observer = StreamObserver()
    observer.feed(b": ping\n\n", now_us=1)
    outcome = failed(observer.end(now_us=2))
    assert (outcome.failure, outcome.phase, outcome.delivered_chars) == (
        F.STREAM_INTERRUPTED,
        Phase.BEFORE_FIRST_TOKEN,
        0,
    )


def test_timeouts_first_token_then_stall() -> None:
    """No token before the deadline is FIRST_TOKEN_TIMEOUT; silence after tokens is STREAM_STALLED (I4)."""
    waiting = StreamObserver()
    assert failed(waiting.timed_out(now_us=5)).failure is F.FIRST_TOKEN_TIMEOUT
    assert waiting.state is StreamState.ENDED
    talking = StreamObserver()
    talking.feed(_openai_chunk("a"), now_us=1)
    outcome = failed(talking.timed_out(now_us=5))
    assert (outcome.failure, outcome.phase) == (F.STREAM_STALLED, Phase.MID_STREAM)


def test_transport_break_mid_stream() -> None:
    """A transport error while streaming is STREAM_INTERRUPTED with the delivered count (I4)."""
    observer = StreamObserver()
    observer.feed(_openai_chunk("abc"), now_us=1)
    observation = observer.broken(httpx.RemoteProtocolError("peer closed connection"), now_us=2)
    assert (
        failed(observation).failure is F.STREAM_INTERRUPTED
        and failed(observation).delivered_chars == 3
    )
    assert "RemoteProtocolError" in observation.detail


def test_in_band_error_in_200_stream() -> None:
    """An error event inside a 200 stream is classified from its payload (I4)."""
    observer = StreamObserver()
    observer.feed(_openai_chunk("x"), now_us=1)
    error = {
        "error": {"message": "Rate limit reached for requests", "type": "requests", "code": 429}
    }
    observation = observer.feed(b"data: " + json.dumps(error).encode() + b"\n\n", now_us=2)
    assert observation is not None
    outcome = failed(observation)
    assert (outcome.failure, outcome.phase, observation.status) == (
        F.RATE_LIMITED,
        Phase.MID_STREAM,
        429,
    )


def test_anthropic_stream_success_and_overloaded_error() -> None:
    """Anthropic events: message_stop ends a success with usage; an error event is classified by type (I4)."""
    observer = StreamObserver()
    observer.feed(
        _anthropic(
            "message_start",
            {
                "type": "message_start",
                "message": {"usage": {"input_tokens": 11, "output_tokens": 1}},
            },
        ),
        now_us=1,
    )
    observer.feed(
        _anthropic(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        ),
        now_us=2,
    )
    observer.feed(
        _anthropic(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 7},
            },
        ),
        now_us=3,
    )
    observer.feed(_anthropic("message_stop", {"type": "message_stop"}), now_us=4)
    assert observer.end(now_us=5).outcome == Succeeded(input_tokens=11, output_tokens=7)
    assert observer.provider is Provider.ANTHROPIC
    failing = StreamObserver()
    observation = failing.feed(
        _anthropic(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
        now_us=1,
    )
    assert observation is not None and observation.failure is F.PROVIDER_UNAVAILABLE
    assert (
        failed(observation).phase is Phase.BEFORE_FIRST_TOKEN
        and observation.provider is Provider.ANTHROPIC
    )


def test_unrecognised_in_band_error_is_interrupted() -> None:
    """An in-band error the table does not know ends the stream as STREAM_INTERRUPTED (I4)."""
    observer = StreamObserver(provider=Provider.OPENAI)
    observation = observer.feed(b'event: error\ndata: {"message": "???"}\n\n', now_us=1)
    assert observation is not None and observation.failure is F.STREAM_INTERRUPTED
    coded = StreamObserver(provider=Provider.OPENAI)
    observation = coded.feed(b'data: {"error": {"message": "???", "code": 503}}\n\n', now_us=1)
    assert observation is not None and observation.failure is F.PROVIDER_UNAVAILABLE


def test_gemini_stream_without_terminator_and_safety() -> None:
    """Gemini streams end without a terminator: a finishReason means success; SAFETY means CONTENT_FILTERED."""
    chunk = {
        "candidates": [
            {"content": {"parts": [{"text": "Hi"}, "odd"]}, "finishReason": "STOP"},
            "odd",
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1},
    }
    observer = StreamObserver()
    observer.feed(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n", now_us=1)
    assert observer.end(now_us=2).outcome == Succeeded(input_tokens=3, output_tokens=1)
    assert observer.provider is Provider.GEMINI
    blocked = StreamObserver()
    blocked.feed(b'data: {"candidates": [{"finishReason": "SAFETY"}]}\n\n', now_us=1)
    assert blocked.end(now_us=2).failure is F.CONTENT_FILTERED


def test_malformed_chunk() -> None:
    """A data line that is not a JSON object is MALFORMED_RESPONSE (I4)."""
    observer = StreamObserver()
    observer.feed(_openai_chunk("ok"), now_us=1)
    observation = observer.feed(b"data: {not json\n\n", now_us=2)
    assert observation is not None and observation.failure is F.MALFORMED_RESPONSE
    assert failed(observation).phase is Phase.MID_STREAM


def test_over_long_line_is_malformed() -> None:
    """A line longer than the limit ends the stream as malformed instead of buffering forever."""
    observer = StreamObserver()
    observation = observer.feed("data: " + "x" * (SSE_LINE_CHARS_MAX + 1), now_us=1)
    assert observation is not None and observation.failure is F.MALFORMED_RESPONSE


def test_odd_choices_are_ignored() -> None:
    """Non-object choices and unknown fields are skipped, not fatal."""
    observer = StreamObserver()
    observer.feed(b'data: {"choices": ["x", {"delta": "y"}]}\nid: 7\n\n', now_us=1)
    observer.feed(b"\n\n", now_us=4)
    assert failed(observer.end(now_us=5)).failure is F.STREAM_INTERRUPTED
    anthropic = StreamObserver()
    anthropic.feed(b'data: {"type": "message_start", "message": {"usage": "n/a"}}\n\n', now_us=2)
    anthropic.feed(b'data: {"type": "message_delta", "delta": "n/a"}\n\n', now_us=3)
    assert failed(anthropic.end(now_us=5)).failure is F.STREAM_INTERRUPTED


def test_ended_observer_refuses_further_calls() -> None:
    """After its observation the observer raises UsageError naming the call and state (h11-style)."""
    observer = StreamObserver()
    observer.timed_out(now_us=1)
    for call in (
        lambda: observer.feed(b"data: x\n\n", now_us=2),
        lambda: observer.end(now_us=2),
        lambda: observer.timed_out(now_us=2),
        lambda: observer.broken(RuntimeError(), now_us=2),
    ):
        with pytest.raises(UsageError, match="illegal in state ended"):
            call()


def test_on_text_receives_every_delta_in_order() -> None:
    """The executor's callback sees each text delta in order, exactly as delivered."""
    from routeledger.adapters.providers.observe import StreamObserver

    texts: list[str] = []
    observer = StreamObserver(on_text=texts.append)
    for piece in ("Hel", "lo", " world"):
        chunk = orjson.dumps({"choices": [{"delta": {"content": piece}}]}).decode()
        assert observer.feed(f"data: {chunk}\n\n", now_us=1) is None
    observer.feed(
        'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n', now_us=2
    )
    assert texts == ["Hel", "lo", " world"]
    assert observer.end(now_us=3).failure is None


def test_a_stream_that_mixes_dialects_is_malformed() -> None:
    """An Anthropic event inside an OpenAI stream ends the attempt as malformed_response."""
    observer = StreamObserver()
    assert observer.feed(b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n', now_us=1) is None
    mixed = b'data: {"type": "content_block_delta", "delta": {"text": "x"}}\n\n'
    observed = observer.feed(mixed, now_us=2)
    assert observed is not None and observed.failure is FailureClass.MALFORMED_RESPONSE
    assert "content_block_delta" in observed.detail
