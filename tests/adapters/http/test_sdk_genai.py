"""google-genai's own exceptions, raised by a real client over loopback, classified by behaviour.

Gemini's wire comes from a tiny scripted server on loopback; the OpenAI spare is
the repo's fake provider (``test_sdk_classification.py`` has the helpers).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from google import genai
from google.genai import types as genai_types

from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.routing import FailureClass

from .test_sdk_classification import (
    _CLIENTS,
    F,
    S,
    _close_clients,
    fake,
    first_failure,
    openai_call,
)

__all__ = ["_close_clients", "fake"]  # fixtures used by name


# --- google-genai: Gemini's wire from a tiny scripted loopback server ----------------

Answer = tuple[int, dict[str, str], dict[str, Any]]


@contextmanager
def scripted(answer: Answer) -> Iterator[str]:
    """A loopback server answering every POST with ``answer``; its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, headers, body = answer
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def gemini_error(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "status": status, "message": message, **extra}}


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}


@pytest.mark.parametrize(
    ("answer", "failure", "hint_us"),
    [
        (
            (
                429,
                {},
                gemini_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded for metric: generate_content_requests_per_minute",
                    details=[RETRY_INFO],
                ),
            ),
            F.RATE_LIMITED,
            13 * S,
        ),
        (
            (429, {"Retry-After": "4"}, gemini_error(429, "RESOURCE_EXHAUSTED", "slow down")),
            F.RATE_LIMITED,
            4 * S,
        ),
        (
            (
                404,
                {},
                gemini_error(
                    404,
                    "NOT_FOUND",
                    "models/gemini-9 is not found for API version "
                    "v1beta, or is not supported for generateContent.",
                ),
            ),
            F.MODEL_NOT_FOUND,
            None,
        ),
        (
            (
                400,
                {},
                gemini_error(
                    400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
                ),
            ),
            F.AUTH_ERROR,
            None,
        ),
        (
            (503, {}, gemini_error(503, "UNAVAILABLE", "The model is overloaded.")),
            F.PROVIDER_UNAVAILABLE,
            None,
        ),
    ],
    ids=["retry-delay", "retry-after", "not-found", "bad-key", "overloaded"],
)
def test_google_genai_errors_are_read_from_code_details_and_response(
    fake: FakeProvider, answer: Answer, failure: FailureClass, hint_us: int | None
) -> None:
    """google-genai's ClientError/ServerError (``code``, ``details``, an httpx2 response) classify."""
    fake.set_scripts({"spare-model": "ok"})
    with scripted(answer) as gemini_url:
        client = genai.Client(
            api_key="AIza-test", http_options=genai_types.HttpOptions(base_url=gemini_url)
        )
        spare = openai_call(fake.base_url)

        def call(model: str) -> object:
            if model == "spare-model":
                return spare(model)
            return client.models.generate_content(model=model, contents="Say something.")

        _CLIENTS.append(client)
        failed = first_failure(fake.base_url, call)
    assert (failed.failure, failed.status, failed.hint_us) == (failure, answer[0], hint_us)
