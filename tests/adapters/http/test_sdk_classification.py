"""The installed SDKs' own exceptions, raised by real calls over loopback, classified by behaviour.

Each test makes the SDK (openai and anthropic, whichever major is installed: CI
runs this module with the newest, 3.x and 2.x on httpx2, and again with the
previous, 1.x and 0.x on httpx: ``make test-sdk-previous``) call the repo's fake
provider on loopback, catches what the SDK raises, and hands it to
``attempt.failed_from_exception`` inside an ``Engine`` request, as README's
"Embedding the engine" shows. The recorded ``AttemptFailed`` is the proof.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.results import Served
from routeledger.adapters.testing.clock import counter_ids
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.routing import FailureClass
from routeledger.core.routing.events import AttemptFailed

from .test_executor import KEYS, config_text

F = FailureClass
S = 1_000_000
PROMPT: list[Any] = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    with FakeProvider({}) as provider:
        yield provider


def first_failure(
    base_url: str, call: Callable[[str], object], *, served: bool | None = True
) -> AttemptFailed:
    """Run one request through an engine whose first member's call fails; its failure
    (and, unless ``served`` is ``None``, whether the spare then served)."""
    engine = Engine.open(
        "memory://",
        parse_config(config_text(base_url, "primary-model", "spare-model")),
        clock=SystemClock(),
        ids=counter_ids(),
    )
    with engine.request(
        route="chat", caller_scope="user:t", accounts=("team",), input_tokens=10
    ) as req:
        for attempt in req.sync_attempts():
            try:
                call(attempt.upstream_model)
            except Exception as error:
                attempt.failed_from_exception(error)  # classified, scrubbed, recorded
                continue
            attempt.succeeded(input_tokens=10, output_tokens=5)
    if served is not None:
        assert isinstance(req.result, Served) is served
    failed = [r.event for r in engine.store.read_all() if isinstance(r.event, AttemptFailed)]
    engine.close()
    return failed[0]


#: The SDK clients a test made, closed after it (a pooled connection left open
#: would be closed by a later test's garbage collection: a ResourceWarning there).
_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def openai_call(base_url: str, **options: Any) -> Callable[[str], object]:
    client = openai.OpenAI(base_url=base_url, api_key="sk-x", max_retries=0, **options)
    _CLIENTS.append(client)
    return lambda model: client.chat.completions.create(model=model, messages=PROMPT)


def anthropic_call(base_url: str, **options: Any) -> Callable[[str], object]:
    client = anthropic.Anthropic(
        base_url=base_url.removesuffix("/v1"), api_key="sk-x", max_retries=0, **options
    )
    _CLIENTS.append(client)
    return lambda model: client.messages.create(model=model, max_tokens=16, messages=PROMPT)


SDKS = {"openai": openai_call, "anthropic": anthropic_call}


@pytest.mark.parametrize("sdk", SDKS)
def test_a_429_of_the_newest_sdks_is_rate_limited_with_its_retry_after(
    fake: FakeProvider, sdk: str
) -> None:
    """The SDK's own RateLimitError (an httpx2 response inside) is rate_limited, 429, Retry-After."""
    fake.set_scripts({"primary-model": "rate_limited:7", "spare-model": "ok"})
    failed = first_failure(fake.base_url, SDKS[sdk](fake.base_url))
    assert (failed.failure, failed.status, failed.hint_us) == (F.RATE_LIMITED, 429, 7 * S)
    assert failed.upstream_model == "primary-model"


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize(
    ("script", "failure", "status"),
    [
        ("unauthorized", F.AUTH_ERROR, 401),
        ("server_error", F.PROVIDER_UNAVAILABLE, 500),
        ("error:529", F.PROVIDER_UNAVAILABLE, 529),
        ("model_not_supported", F.MODEL_NOT_SUPPORTED, 400),
        ("context_length", F.CONTEXT_LENGTH_EXCEEDED, 400),
    ],
)
def test_sdk_status_errors_keep_status_and_class(
    fake: FakeProvider, sdk: str, script: str, failure: FailureClass, status: int
) -> None:
    """401, 500, 529 (overloaded) and 400s raised by the SDK keep their status and class."""
    fake.set_scripts({"primary-model": script, "spare-model": "ok"})
    failed = first_failure(fake.base_url, SDKS[sdk](fake.base_url), served=None)
    assert (failed.failure, failed.status) == (failure, status)


@pytest.mark.parametrize("sdk", SDKS)
def test_an_unknown_model_is_model_not_found(fake: FakeProvider, sdk: str) -> None:
    """The SDK's 404 NotFoundError for a model the upstream lacks is model_not_found."""
    fake.set_scripts({"spare-model": "ok"})  # primary-model unscripted: a 404
    failed = first_failure(fake.base_url, SDKS[sdk](fake.base_url))
    assert (failed.failure, failed.status) == (F.MODEL_NOT_FOUND, 404)
    assert "does not exist" in failed.detail


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("sdk", SDKS)
def test_connection_refused_is_a_connect_error(fake: FakeProvider, sdk: str) -> None:
    """The SDK's APIConnectionError (an httpx2.ConnectError inside) is connect_error, no status."""
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    calls = {"primary-model": SDKS[sdk](dead), "spare-model": SDKS[sdk](fake.base_url)}
    fake.set_scripts({"spare-model": "ok"})
    failed = first_failure(fake.base_url, lambda model: calls[model](model))
    assert (failed.failure, failed.status) == (F.CONNECT_ERROR, None)


@pytest.mark.parametrize("sdk", SDKS)
def test_an_sdk_timeout_is_timeout_before_response(fake: FakeProvider, sdk: str) -> None:
    """The SDK's APITimeoutError (no answer within its timeout) is timeout_before_response."""
    fake.set_scripts({"primary-model": "no_response:5", "spare-model": "ok"})
    failed = first_failure(fake.base_url, SDKS[sdk](fake.base_url, timeout=0.3))
    assert (failed.failure, failed.status) == (F.TIMEOUT_BEFORE_RESPONSE, None)
