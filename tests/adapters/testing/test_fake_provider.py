"""The fault-injecting fake provider, exercised over real HTTP on loopback with httpx.

Every scripted behaviour is checked from the client's side (status, body, SSE
chunks, the httpx exception of a reset/cut/stall) and from the fake's attempt log
(what it received and did, with timings). Delays are tens to hundreds of ms.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from routeledger.adapters.providers.observe import observe_response
from routeledger.adapters.testing.fake_provider import (
    DEFAULT_API_KEY,
    DEFAULT_SCRIPTS,
    KINDS,
    Behaviour,
    FakeProvider,
    FakeProviderError,
    Script,
    key_id,
    parse_script,
    parse_scripts,
    serve,
)
from routeledger.core.routing.failures import FailureClass

USER = [{"role": "user", "content": "Say something."}]
TIMEOUT = httpx.Timeout(2.0)


def body(model: str, *, stream: bool = False, usage: bool = False, **extra: Any) -> dict[str, Any]:
    """A chat-completion request body."""
    value: dict[str, Any] = {"model": model, "messages": extra.pop("messages", USER)}
    if stream:
        value["stream"] = True
        if usage:
            value["stream_options"] = {"include_usage": True}
    return value | extra


def post(
    fake: FakeProvider, model: str, *, client: httpx.Client | None = None, **kwargs: Any
) -> httpx.Response:
    """One non-streaming chat completion, on ``client`` or a fresh one."""
    headers = kwargs.pop("headers", None)
    timeout = kwargs.pop("timeout", TIMEOUT)
    url = f"{fake.base_url}/chat/completions"
    if client is not None:
        return client.post(url, json=body(model, **kwargs), headers=headers)
    with httpx.Client(timeout=timeout) as fresh:
        return fresh.post(url, json=body(model, **kwargs), headers=headers)


def stream_lines(
    fake: FakeProvider, model: str, *, timeout: httpx.Timeout = TIMEOUT, **kwargs: Any
) -> tuple[httpx.Response, list[str]]:
    """A streamed chat completion: the response and its non-empty lines (raises on a
    broken stream; the lines read so far are in the exception's ``lines`` note)."""
    lines: list[str] = []
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream(
            "POST",
            f"{fake.base_url}/chat/completions",
            json=body(model, stream=True, **kwargs),
        ) as response,
    ):
        try:
            lines.extend(line for line in response.iter_lines() if line)
        except httpx.HTTPError as error:
            error.add_note(json.dumps(lines))
            raise
    return response, lines


def partial_lines(error: BaseException) -> list[str]:
    """The lines :func:`stream_lines` read before ``error``."""
    return list(json.loads(error.__notes__[-1]))


def events(lines: list[str]) -> list[Any]:
    """The JSON payloads of ``data:`` lines (``[DONE]`` kept as the string)."""
    out: list[Any] = []
    for line in lines:
        assert line.startswith("data: "), line
        data = line.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def content(chunks: list[Any]) -> str:
    """The text carried by chat.completion.chunk payloads."""
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        if isinstance(chunk, dict)
        for choice in chunk.get("choices", [])
    )


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    """The fake with the default catalogue."""
    with FakeProvider() as provider:
        yield provider


# --- success ------------------------------------------------------------------------


def test_success_returns_an_openai_chat_completion_with_usage(fake: FakeProvider) -> None:
    """A success is a chat.completion with the scripted content, finish reason and usage."""
    response = post(fake, "ok-model")
    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "chat.completion"
    assert payload["model"] == "ok-model"
    (choice,) = payload["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": "The quick brown fox jumps over the lazy dog.",
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"
    assert payload["usage"] == {"prompt_tokens": 10, "completion_tokens": 9, "total_tokens": 19}


def test_content_and_usage_are_configurable() -> None:
    """A behaviour's content and token counts are what the client receives."""
    script = Behaviour(content="Hi there", prompt_tokens=5, completion_tokens=7)
    with FakeProvider({"m": script}) as fake:
        payload = post(fake, "m").json()
    assert payload["choices"][0]["message"]["content"] == "Hi there"
    assert payload["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


def test_stream_sends_chunks_then_finish_usage_and_done(fake: FakeProvider) -> None:
    """A stream is role chunk, one chunk per word, a finish chunk, a usage chunk, [DONE]."""
    response, lines = stream_lines(fake, "ok-model", usage=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = events(lines)
    assert chunks[-1] == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert content(chunks) == "The quick brown fox jumps over the lazy dog."
    finish, final = chunks[-3], chunks[-2]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert final["choices"] == []
    assert final["usage"] == {"prompt_tokens": 10, "completion_tokens": 9, "total_tokens": 19}
    assert all(c["usage"] is None for c in chunks[:-2])
    fake.wait_idle()
    (attempt,) = fake.attempts()
    assert (attempt.stream, attempt.tokens_sent, attempt.chunks_sent) == (True, 9, 13)
    assert attempt.outcome == "completed"


def test_stream_without_include_usage_sends_no_usage(fake: FakeProvider) -> None:
    """Without stream_options.include_usage no chunk carries a usage field."""
    _, lines = stream_lines(fake, "ok-model")
    chunks = events(lines)
    assert chunks[-1] == "[DONE]"
    assert all("usage" not in c for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


# --- error statuses -----------------------------------------------------------------


def test_rate_limited_with_retry_after(fake: FakeProvider) -> None:
    """429 carries Retry-After in seconds and OpenAI's rate_limit_exceeded body."""
    response = post(fake, "rate-limited")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "Rate limit reached" in error["message"]


def test_rate_limited_without_retry_after(fake: FakeProvider) -> None:
    """A 429 scripted without a hint sends no Retry-After header."""
    response = post(fake, "rate-limited-no-retry-after")
    assert response.status_code == 429
    assert "retry-after" not in response.headers


def test_server_error_once_then_healthy(fake: FakeProvider) -> None:
    """The 500-once script fails the first attempt and serves every later one."""
    statuses = [post(fake, "server-error-once").status_code for _ in range(3)]
    assert statuses == [500, 200, 200]
    assert [a.step for a in fake.attempts()] == [0, 1, 1]


def test_overloaded_is_persistent(fake: FakeProvider) -> None:
    """503 keeps coming: the last step of a script repeats."""
    assert {post(fake, "overloaded").status_code for _ in range(3)} == {503}


def test_sequence_fails_twice_then_succeeds_and_logs_gaps() -> None:
    """A sequence plays one step per attempt; the log shows counts and the gaps between them."""
    with FakeProvider({"m": ["overloaded:1", "overloaded", "ok"]}) as fake:
        first = post(fake, "m")
        time.sleep(0.15)
        statuses = [first.status_code] + [post(fake, "m").status_code for _ in range(2)]
        fake.wait_idle()
        attempts = fake.attempts("m")
    assert statuses == [503, 503, 200]
    assert first.headers["retry-after"] == "1"
    assert [a.behaviour for a in attempts] == ["overloaded", "overloaded", "ok"]
    assert [a.seq for a in attempts] == [0, 1, 2]
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.15 and all(gap >= 0 for gap in gaps)
    for attempt in attempts:
        assert attempt.first_byte_at is not None and attempt.finished_at is not None
        assert attempt.received_at <= attempt.first_byte_at <= attempt.finished_at
        assert attempt.bytes_sent > 0 and attempt.last_role == "user"


def test_generic_error_status_and_message() -> None:
    """The generic error kind answers any status with an OpenAI-shaped body."""
    with FakeProvider({"m": Behaviour(kind="error", status=502, message="bad gateway")}) as fake:
        response = post(fake, "m")
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "bad gateway"


def test_context_length_error_has_openai_shape(fake: FakeProvider) -> None:
    """400 context length uses OpenAI's message, param and code."""
    response = post(fake, "context-length")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith("This model's maximum context length is ")
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    )


def test_content_filter_error(fake: FakeProvider) -> None:
    """400 content filter carries the content_filter code and the policy message."""
    response = post(fake, "content-filter")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "content_filter"
    assert "content management policy" in error["message"]


def test_model_not_supported_error_names_the_model(fake: FakeProvider) -> None:
    """400 model not supported says "The model `x` is not supported ..."."""
    response = post(fake, "model-not-supported")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("The model `model-not-supported` is not supported")


def test_invalid_key_answers_401(fake: FakeProvider) -> None:
    """401 carries OpenAI's invalid_api_key body."""
    response = post(fake, "invalid-key")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_unknown_model_answers_404(fake: FakeProvider) -> None:
    """A model without a script is OpenAI's 404 model_not_found, and is logged as such."""
    response = post(fake, "nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert fake.attempts()[0].behaviour == "unknown_model"


@pytest.mark.parametrize(
    ("model", "failure"),
    [
        ("rate-limited", FailureClass.RATE_LIMITED),
        ("server-error-once", FailureClass.PROVIDER_UNAVAILABLE),
        ("overloaded", FailureClass.PROVIDER_UNAVAILABLE),
        ("context-length", FailureClass.CONTEXT_LENGTH_EXCEEDED),
        ("content-filter", FailureClass.CONTENT_FILTERED),
        ("model-not-supported", FailureClass.MODEL_NOT_SUPPORTED),
        ("invalid-key", FailureClass.AUTH_ERROR),
        ("nope", FailureClass.MODEL_NOT_FOUND),
    ],
)
def test_error_bodies_classify_as_intended(
    fake: FakeProvider, model: str, failure: FailureClass
) -> None:
    """The [F5] classifier reads each scripted error response as the fault it imitates."""
    observation = observe_response(post(fake, model), now_us=1_767_225_600_000_000)
    assert observation.failure is failure


# --- connection faults ---------------------------------------------------------------


def test_reset_before_headers(fake: FakeProvider) -> None:
    """A reset closes the socket with RST before any byte: the client gets a read error."""
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        post(fake, "reset-before-headers")
    fake.wait_idle()
    (attempt,) = fake.attempts()
    assert (attempt.status, attempt.bytes_sent, attempt.outcome) == (None, 0, "reset")


def test_no_response_until_the_client_gives_up(fake: FakeProvider) -> None:
    """No response: the client's read timeout fires and the fake notices it left."""
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        post(fake, "no-response", timeout=httpx.Timeout(2.0, read=0.2))
    assert 0.15 <= time.monotonic() - started < 1.5
    assert fake.wait_idle(2.0)
    (attempt,) = fake.attempts()
    assert (attempt.status, attempt.outcome) == (None, "client_gone")
    assert attempt.finished_at is not None and attempt.finished_at - attempt.received_at < 1.5


def test_no_response_is_bounded_by_the_server_max_hold() -> None:
    """The server gives up holding after max_hold and closes without a response."""
    with FakeProvider({"m": "no_response"}, max_hold=0.2) as fake:
        with pytest.raises(httpx.RemoteProtocolError):
            post(fake, "m", timeout=httpx.Timeout(3.0))
        fake.wait_idle()
        (attempt,) = fake.attempts()
    assert attempt.outcome == "held" and attempt.finished_at is not None
    assert 0.15 <= attempt.finished_at - attempt.received_at < 1.0


def test_slow_first_token_delays_the_first_chunk() -> None:
    """Headers come at once, the first chunk only after the scripted delay."""
    with FakeProvider({"m": "slow_first_token:0.3"}) as fake:
        started = time.monotonic()
        _, lines = stream_lines(fake, "m")
        elapsed = time.monotonic() - started
        fake.wait_idle()
        (attempt,) = fake.attempts()
    assert events(lines)[-1] == "[DONE]"
    assert elapsed >= 0.3
    assert attempt.first_byte_at is not None and attempt.first_chunk_at is not None
    assert attempt.first_chunk_at - attempt.first_byte_at >= 0.29


def test_slow_first_token_trips_a_short_read_timeout() -> None:
    """A client whose first-token timeout is shorter than the delay times out."""
    with FakeProvider({"m": "slow_first_token:0.5"}) as fake:
        with pytest.raises(httpx.ReadTimeout):
            stream_lines(fake, "m", timeout=httpx.Timeout(2.0, read=0.1))
        assert fake.wait_idle(2.0)
        assert fake.attempts()[0].outcome == "client_gone"


def test_slow_non_streaming_response() -> None:
    """Without streaming the delay comes before the whole response."""
    with FakeProvider({"m": "slow_first_token:0.2"}) as fake:
        started = time.monotonic()
        assert post(fake, "m").status_code == 200
    assert time.monotonic() - started >= 0.2


def test_stream_cut_after_k_tokens(fake: FakeProvider) -> None:
    """The stream is closed after k content chunks: incomplete chunked body, no [DONE]."""
    with pytest.raises(httpx.RemoteProtocolError) as caught:
        stream_lines(fake, "cut-after-3")
    chunks = events(partial_lines(caught.value))
    assert content(chunks) == "The quick brown"
    assert "[DONE]" not in chunks
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    fake.wait_idle()
    (attempt,) = fake.attempts()
    assert (attempt.tokens_sent, attempt.outcome) == (3, "cut")


def test_non_streaming_cut_truncates_the_body() -> None:
    """A non-streamed cut sends half the declared body, then closes."""
    with FakeProvider({"m": "cut"}) as fake, pytest.raises(httpx.RemoteProtocolError):
        post(fake, "m")


def test_stall_keeps_the_connection_open_without_data() -> None:
    """A stall sends k chunks then nothing: the client's idle timeout fires."""
    with FakeProvider({"m": "stall:2"}) as fake:
        with pytest.raises(httpx.ReadTimeout) as caught:
            stream_lines(fake, "m", timeout=httpx.Timeout(2.0, read=0.2))
        assert content(events(partial_lines(caught.value))) == "The quick"
        assert fake.wait_idle(2.0)
        (attempt,) = fake.attempts()
    assert (attempt.tokens_sent, attempt.outcome) == (2, "client_gone")


def test_stall_ends_after_its_hold() -> None:
    """A stall with a hold closes the connection after it: the stream ends incomplete."""
    with FakeProvider({"m": Behaviour(kind="stall", after_tokens=1, hold=0.2)}) as fake:
        started = time.monotonic()
        with pytest.raises(httpx.RemoteProtocolError):
            stream_lines(fake, "m")
        assert time.monotonic() - started >= 0.2
        fake.wait_idle()
        assert fake.attempts()[0].outcome == "stalled"


def test_malformed_chunk_then_the_stream_continues(fake: FakeProvider) -> None:
    """One data line is not JSON; the chunks after it and [DONE] still arrive."""
    _, lines = stream_lines(fake, "malformed-chunk")
    bad = [line for line in lines if not _is_json_event(line)]
    assert len(bad) == 1 and bad[0].startswith("data: {")
    good = events([line for line in lines if _is_json_event(line)])
    assert good[-1] == "[DONE]"
    assert content(good) == "The quick brown fox jumps over the lazy dog."


def _is_json_event(line: str) -> bool:
    data = line.removeprefix("data: ")
    if data == "[DONE]":
        return True
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def test_malformed_non_streaming_body(fake: FakeProvider) -> None:
    """Without streaming, a malformed answer is a 200 whose body is not JSON."""
    response = post(fake, "malformed-chunk")
    assert response.status_code == 200
    with pytest.raises(ValueError, match=r"Expecting|Unterminated"):
        response.json()


def test_no_done_completes_without_the_terminator(fake: FakeProvider) -> None:
    """All content and the finish reason arrive, the HTTP body ends cleanly, no [DONE]."""
    _, lines = stream_lines(fake, "no-done")
    chunks = events(lines)
    assert "[DONE]" not in chunks
    assert content(chunks) == "The quick brown fox jumps over the lazy dog."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_error_event_in_a_200_stream(fake: FakeProvider) -> None:
    """A 200 stream carries k chunks, then an in-band error event, and no [DONE]."""
    response, lines = stream_lines(fake, "error-event")
    assert response.status_code == 200
    chunks = events(lines)
    assert content(chunks[:-1]) == "The quick"
    assert set(chunks[-1]) == {"error"}
    assert chunks[-1]["error"]["type"] == "server_error"


def test_error_event_non_streaming(fake: FakeProvider) -> None:
    """Without streaming, the in-band error is a 200 whose body is an error object."""
    response = post(fake, "error-event")
    assert response.status_code == 200
    assert "error" in response.json()


# --- guards: auth, prefill, flapping ----------------------------------------------------


def test_api_key_is_checked_and_logged_by_id_only(fake: FakeProvider) -> None:
    """A keyed model answers 401 to a wrong or missing key; the log holds a key id, never the key."""
    wrong = post(fake, "needs-key", headers={"Authorization": "Bearer sk-wrong"})
    missing = post(fake, "needs-key")
    right = post(fake, "needs-key", headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"})
    assert [wrong.status_code, missing.status_code, right.status_code] == [401, 401, 200]
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    attempts = fake.attempts()
    assert [a.key_id for a in attempts] == [key_id("sk-wrong"), None, key_id(DEFAULT_API_KEY)]
    assert [a.behaviour for a in attempts] == ["unauthorized", "unauthorized", "ok"]
    with httpx.Client() as client:
        log = client.get(f"{fake.url}/_fake/attempts").text
    assert DEFAULT_API_KEY not in log and "sk-wrong" not in log


def test_auth_failures_do_not_advance_the_sequence() -> None:
    """Only attempts that pass the guards consume a step of the sequence."""
    with FakeProvider({"m": {"steps": ["overloaded", "ok"], "api_key": "k1"}}) as fake:
        assert post(fake, "m").status_code == 401
        ok = {"Authorization": "Bearer k1"}
        assert [post(fake, "m", headers=ok).status_code for _ in range(2)] == [503, 200]


def test_prefill_is_rejected_on_targets_without_continuation(fake: FakeProvider) -> None:
    """A last message with role assistant gets 400 "prefill not supported"; others are served."""
    prefill = [*USER, {"role": "assistant", "content": "The quick"}]
    rejected = post(fake, "no-prefill", messages=prefill)
    assert rejected.status_code == 400
    assert "prefill not supported" in rejected.json()["error"]["message"]
    assert post(fake, "no-prefill").status_code == 200
    assert post(fake, "ok-model", messages=prefill).status_code == 200
    assert [(a.last_role, a.behaviour) for a in fake.attempts()] == [
        ("assistant", "prefill_rejected"),
        ("user", "ok"),
        ("assistant", "ok"),
    ]


def test_flapping_fails_during_its_window_then_recovers() -> None:
    """Inside the down window the model answers 503, after it 200; a reset restarts the window."""
    scripts = {"m": {"steps": ["ok"], "down": [0, 0.5]}}
    with httpx.Client(timeout=TIMEOUT) as client, FakeProvider(scripts) as fake:
        assert post(fake, "m", client=client).status_code == 503
        time.sleep(max(0.0, 0.55 - fake.attempts()[0].since_start))
        assert post(fake, "m", client=client).status_code == 200
        fake.reset()
        assert post(fake, "m", client=client).status_code == 503
        (attempt,) = fake.attempts()
    assert attempt.since_start < 0.5 and attempt.step is None


def test_flapping_window_can_start_later() -> None:
    """A window that opens later leaves the model healthy until then."""
    scripts = {"m": {"down": [0.5, 10], "down_behaviour": "server_error"}}
    with httpx.Client(timeout=TIMEOUT) as client, FakeProvider(scripts) as fake:
        assert post(fake, "m", client=client).status_code == 200
        time.sleep(max(0.0, 0.55 - fake.attempts()[0].since_start))
        assert post(fake, "m", client=client).status_code == 500


# --- control endpoints and API ----------------------------------------------------------


def test_models_endpoint_lists_the_scripted_models(fake: FakeProvider) -> None:
    """GET /v1/models lists every scripted model name in OpenAI's list shape."""
    with httpx.Client() as client:
        payload = client.get(f"{fake.base_url}/models").json()
    assert payload["object"] == "list"
    assert sorted(m["id"] for m in payload["data"]) == sorted(DEFAULT_SCRIPTS)
    assert fake.models() == sorted(DEFAULT_SCRIPTS)


def test_control_endpoints_read_reset_and_replace() -> None:
    """/_fake/attempts lists the log, /_fake/reset clears it, /_fake/script replaces scripts."""
    with FakeProvider({"a": "ok"}) as fake, httpx.Client() as client:
        post(fake, "a")
        fake.wait_idle()
        log = client.get(f"{fake.url}/_fake/attempts").json()["attempts"]
        assert [(a["model"], a["status"], a["outcome"]) for a in log] == [("a", 200, "completed")]
        assert client.post(f"{fake.url}/_fake/reset").json() == {"ok": True}
        assert client.get(f"{fake.url}/_fake/attempts").json() == {"attempts": []}
        replaced = client.post(f"{fake.url}/_fake/script", json={"b": ["overloaded", "ok"]})
        assert replaced.json() == {"ok": True, "models": ["b"]}
        assert [post(fake, "b").status_code for _ in range(2)] == [503, 200]
        assert post(fake, "a").status_code == 404
        bad = client.post(f"{fake.url}/_fake/script", json={"b": "explode"})
        assert bad.status_code == 400 and "explode" in bad.json()["error"]["message"]
        assert client.get(f"{fake.url}/nowhere").status_code == 404


def test_set_scripts_restarts_sequences() -> None:
    """set_scripts replaces the scripts and plays sequences from their first step again."""
    with FakeProvider({"m": ["server_error", "ok"]}) as fake:
        assert post(fake, "m").status_code == 500
        fake.set_scripts({"m": ["server_error", "ok"]})
        assert post(fake, "m").status_code == 500
        assert len(fake.attempts()) == 2


def test_bad_request_body_is_logged() -> None:
    """A body without a model is a 400 and still an attempt in the log."""
    with FakeProvider({"m": "ok"}) as fake, httpx.Client() as client:
        response = client.post(f"{fake.base_url}/chat/completions", content=b"not json")
        assert response.status_code == 400
        assert fake.attempts()[0].behaviour == "bad_request"


def test_keep_alive_connection_serves_many_attempts() -> None:
    """One client connection carries successive attempts, each logged."""
    with FakeProvider({"m": "ok"}) as fake, httpx.Client() as client:
        for _ in range(5):
            response = client.post(f"{fake.base_url}/chat/completions", json=body("m"))
            assert response.status_code == 200
        assert [a.seq for a in fake.attempts()] == [0, 1, 2, 3, 4]


def test_concurrent_connections_are_served_while_one_is_held() -> None:
    """A held connection does not block others, and answers overlap in time (not in series)."""
    scripts = {"hold": "no_response", "m": "slow_first_token:0.4"}
    with FakeProvider(scripts, max_hold=5) as fake, httpx.Client(timeout=TIMEOUT) as client:
        results: list[int] = []
        errors: list[BaseException] = []

        def held() -> None:
            try:
                post(fake, "hold", timeout=httpx.Timeout(5.0, read=1.0))
            except httpx.ReadTimeout as error:
                errors.append(error)

        def served() -> None:
            url = f"{fake.base_url}/chat/completions"
            results.append(client.post(url, json=body("m")).status_code)

        threads = [threading.Thread(target=held)] + [
            threading.Thread(target=served) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert fake.wait_idle()
        answered = fake.attempts("m")
    assert results == [200] * 8
    assert len(errors) == 1
    busy = sum(a.finished_at - a.received_at for a in answered if a.finished_at is not None)
    span = max(a.finished_at or 0.0 for a in answered) - min(a.received_at for a in answered)
    assert busy >= 8 * 0.4 and span < busy / 2


def test_stop_ends_lingering_connections_quickly() -> None:
    """Leaving the context ends held and stalled connections at once, not after max_hold."""
    failures: list[BaseException] = []

    def client(fake: FakeProvider, model: str) -> None:
        try:
            if model == "stall":
                stream_lines(fake, model, timeout=httpx.Timeout(10.0))
            else:
                post(fake, model, timeout=httpx.Timeout(10.0))
        except httpx.HTTPError as error:
            failures.append(error)

    fake = FakeProvider({"hold": "no_response", "stall": "stall:1"}, max_hold=30)
    with fake:
        threads = [threading.Thread(target=client, args=(fake, m)) for m in ("hold", "stall")]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 2
        while len(fake.attempts()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        started = time.monotonic()
    stopped_in = time.monotonic() - started
    for thread in threads:
        thread.join(2)
    assert stopped_in < 1.0
    assert len(failures) == 2
    assert {a.outcome for a in fake.attempts()} == {"stopped"}


def test_serve_runs_in_the_foreground_until_interrupted() -> None:
    """serve() announces its URL, answers with the default catalogue, and exits on Ctrl-C."""
    code = "from routeledger.adapters.testing.fake_provider import serve; serve(port=0)"
    with subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stderr is not None
        banner = process.stderr.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", banner)
        assert match, banner
        with httpx.Client(timeout=TIMEOUT) as client:
            url = f"{match.group(1)}/chat/completions"
            assert client.post(url, json=body("ok-model")).status_code == 200
            assert client.post(url, json=body("overloaded")).status_code == 503
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=5)
    assert process.returncode == 0
    assert "ok-model" in banner and "overloaded" in rest


def test_loopback_only() -> None:
    """Any host but 127.0.0.1, ::1 or localhost is refused with a clear error."""
    for host in ("0.0.0.0", "192.168.1.10", "example.com", ""):
        with pytest.raises(FakeProviderError, match="loopback only"):
            FakeProvider({}, host=host)
        with pytest.raises(FakeProviderError, match="loopback only"):
            serve(host=host, port=0)


def test_busy_port_is_a_clear_error() -> None:
    """Starting on a port already in use raises FakeProviderError naming the address."""
    with FakeProvider({}) as fake:
        other = FakeProvider({}, port=fake.port)
        with pytest.raises(FakeProviderError, match=f"cannot listen on 127.0.0.1:{fake.port}"):
            other.start()


def test_ipv6_loopback() -> None:
    """The fake also listens on ::1 when the machine has IPv6 loopback."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        fake = FakeProvider({"m": "ok"}, host="::1").start()
    except OSError:
        pytest.skip("no IPv6 loopback")
    with fake:
        assert fake.url.startswith("http://[::1]:")
        assert post(fake, "m").status_code == 200


def test_script_forms_parse_to_the_same_value() -> None:
    """Shorthand strings, mappings and sequences read as the Script they name."""
    assert parse_script("rate_limited:2") == Script(
        steps=(Behaviour(kind="rate_limited", retry_after=2.0),)
    )
    assert parse_script({"kind": "cut", "after_tokens": 4}) == parse_script("cut:4")
    assert parse_script(["overloaded", {"kind": "ok"}]).steps == (
        Behaviour(kind="overloaded"),
        Behaviour(),
    )
    keyed = parse_script({"steps": "ok", "api_key": "k", "reject_prefill": True, "down": [1, 2]})
    assert (keyed.api_key, keyed.reject_prefill, keyed.down) == ("k", True, (1.0, 2.0))
    assert set(parse_scripts(DEFAULT_SCRIPTS)) == set(DEFAULT_SCRIPTS)
    used = {b.kind for s in parse_scripts(DEFAULT_SCRIPTS).values() for b in s.steps}
    assert used | {"error"} == set(KINDS)


@pytest.mark.parametrize(
    "value",
    [
        "explode",
        "reset:1",
        "cut:x",
        {"kind": "ok", "colour": "red"},
        {"steps": []},
        {"steps": ["ok"], "down": [2, 1]},
        {"steps": ["ok"], "extra": 1},
        {"kind": "error"},
        42,
    ],
)
def test_invalid_scripts_are_refused(value: Any) -> None:
    """A script that cannot be read raises FakeProviderError naming the problem."""
    with pytest.raises(FakeProviderError):
        parse_scripts({"m": value})


# --- key scripts, continuations, the Anthropic non-streamed answer, load --------------


def test_a_key_script_answers_its_key_whatever_the_model() -> None:
    """A request bearing a key with a script is answered by it; other keys by the model's."""
    with FakeProvider({"m": "ok"}, key_scripts={"sk-bad": "rate_limited"}) as fake:
        bad = post(fake, "m", headers={"Authorization": "Bearer sk-bad"})
        good = post(fake, "m", headers={"Authorization": "Bearer sk-good"})
        assert (bad.status_code, good.status_code) == (429, 200)
        assert [call.scripted_by for call in fake.attempts()] == ["key", "model"]
        fake.set_key_scripts({})
        assert post(fake, "m", headers={"Authorization": "Bearer sk-bad"}).status_code == 200


def test_key_script_errors_name_the_key_id_never_the_key() -> None:
    """A malformed key script is refused with the key's id, and the key is not echoed."""
    with pytest.raises(FakeProviderError) as raised:
        FakeProvider(key_scripts={"sk-secret-key-123": "no_such_kind"})
    assert key_id("sk-secret-key-123") in str(raised.value)
    assert "sk-secret-key-123" not in str(raised.value)


def test_an_assistant_prefix_is_continued_with_the_rest_of_the_text() -> None:
    """The last assistant message's text is not sent again: prefix + answer is the script."""
    with FakeProvider({"m": Behaviour(kind="ok", content="The quick brown fox")}) as fake:
        prefix = [*USER, {"role": "assistant", "content": "The quick"}]
        answer = post(fake, "m", messages=prefix).json()
        assert answer["choices"][0]["message"]["content"] == " brown fox"
        assert fake.attempts()[-1].continued_chars == len("The quick")
        unrelated = [*USER, {"role": "assistant", "content": "Nothing alike"}]
        whole = post(fake, "m", messages=unrelated).json()
        assert whole["choices"][0]["message"]["content"] == "The quick brown fox"


def test_the_anthropic_dialect_answers_a_non_streamed_message() -> None:
    """POST /v1/messages without ``stream`` gets one Anthropic ``message`` with usage."""
    with FakeProvider({"c": Behaviour(kind="ok", content="Bonjour à tous")}) as fake:
        request = {"model": "c", "max_tokens": 32, "messages": USER}
        answer = httpx.post(f"{fake.base_url}/messages", json=request, timeout=TIMEOUT).json()
    assert answer["type"] == "message" and answer["stop_reason"] == "end_turn"
    assert answer["content"] == [{"type": "text", "text": "Bonjour à tous"}]
    assert answer["usage"]["output_tokens"] == 3


def test_hundreds_of_clients_connecting_at_once_are_all_answered() -> None:
    """300 connections opened together are all accepted and answered (no backlog drop)."""
    clients = 300
    with FakeProvider({"m": Behaviour(kind="ok", first_token_delay=0.2)}) as fake:
        barrier = threading.Barrier(clients)

        def one(_: int) -> int:
            with httpx.Client(timeout=httpx.Timeout(20.0)) as client:
                barrier.wait()
                return post(fake, "m", client=client).status_code

        with ThreadPoolExecutor(clients) as pool:
            statuses = list(pool.map(one, range(clients)))
        assert statuses == [200] * clients
        assert len(fake.attempts()) == clients


# --- extra response headers ---------------------------------------------------------


def test_a_behaviours_headers_go_out_with_its_answer_and_only_its_answer() -> None:
    """Scripted headers reach the client on a streamed 200 and on an error, not on the next step."""
    limits = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    script = [
        {"kind": "ok", "headers": limits},
        {"kind": "rate_limited", "headers": {"retry-after-ms": "250"}},
        "ok",
    ]
    with FakeProvider({"m": script}) as fake:
        streamed, _ = stream_lines(fake, "m")
        limited = post(fake, "m")
        plain = post(fake, "m")
    assert streamed.status_code == 200
    assert streamed.headers["x-ratelimit-remaining-requests"] == "0"
    assert streamed.headers["x-ratelimit-reset-requests"] == "2s"
    assert limited.status_code == 429 and limited.headers["retry-after-ms"] == "250"
    assert "x-ratelimit-remaining-requests" not in limited.headers
    assert "retry-after-ms" not in plain.headers


@pytest.mark.parametrize("headers", [{"x-a": 1}, {"x-a": "one\r\nx-b: two"}, ["x-a"]])
def test_headers_that_are_not_one_line_strings_are_refused(headers: object) -> None:
    """A header that is not a one-line string (or not a name/value pair) is a FakeProviderError."""
    with pytest.raises(FakeProviderError, match="headers"):
        parse_script({"kind": "ok", "headers": headers})
