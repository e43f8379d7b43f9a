"""An httpx transport that answers the openai and anthropic SDKs through an :class:`Executor`.

::

    executor = Executor(engine)
    client = openai.OpenAI(
        base_url="http://routeledger/v1",
        api_key="unused",
        http_client=httpx2.Client(transport=RouteLedgerTransport(executor)),
        max_retries=0,
    )
    client.chat.completions.create(model="chat", messages=[...])  # "chat" names a route

Nothing goes over the network to ``base_url``: the transport hands the SDK's
request body to the executor, which routes it (the body's ``model`` names a
route, or ``routes={"gpt-4o": "chat"}`` maps it to one), fails over and records
every attempt, and the executor's answer comes back as the transport's response:

* ``POST …/chat/completions`` runs :meth:`Executor.chat` (or
  :meth:`Executor.stream_chat` when the body says ``"stream": true``, its
  chunks passed on as they arrive); ``POST …/messages`` runs the Anthropic
  dialect's :meth:`Executor.messages` / :meth:`Executor.stream_messages`, with
  the SDK's ``anthropic-version`` and ``anthropic-beta`` headers passed on.
  Any other endpoint is a 404 ``unsupported_endpoint``, nothing recorded;
* a request that was not served is answered with the status and body
  RouteLedger chose (``docs/errors.md``) in the dialect's own error shape, so
  the SDK raises its own ``RateLimitError``, ``NotFoundError``,
  ``InternalServerError``…; a stream that fails before its first chunk is a
  plain HTTP error, one that fails later ends with the in-band error event;
* every answer carries ``x-request-id`` (the engine's request id, which
  ``routeledger audit <id>`` explains; the openai SDK exposes it as
  ``response._request_id`` and ``APIError.request_id``) and, for the Anthropic
  dialect, ``request-id`` (where the anthropic SDK reads it); a served answer
  names its pair (``x-routeledger-credential``, ``x-routeledger-model``,
  ``x-routeledger-attempts``), as ``routeledger serve`` does;
* every answer carries ``x-should-retry: false``: RouteLedger answers with a
  final outcome (it already retried, waited and fell back as the route says),
  so the SDK's own retries would only run the whole route again. The SDKs
  honour the header whatever their ``max_retries``.

Who asks: ``caller_scope`` (default ``"client:sdk"``; one request may name
another in the ``x-routeledger-caller-scope`` header, e.g. through the SDK's
``extra_headers``), ``accounts`` (the budget accounts every request holds on;
default none) and ``backups`` (fallback routes appended to every request).

Which httpx: the openai SDK 3.x and the anthropic SDK 2.x are built on
``httpx2`` (openai 3 also accepts a legacy ``httpx`` client; openai 1-2 and
anthropic 0.x use ``httpx``). The transports here are both: each class derives
from the transport base class of every installed flavour, and answers with a
response of the flavour of the request it was given. So
``httpx2.Client(transport=RouteLedgerTransport(executor))`` and
``httpx.Client(transport=...)`` both work; use the flavour your SDK's
``http_client=`` expects.

Sync and async: :class:`AsyncRouteLedgerTransport` runs the executor on the
caller's event loop (``AsyncOpenAI``, ``AsyncAnthropic``). The executor is
async, so :class:`RouteLedgerTransport` (``OpenAI``, ``Anthropic``) runs it on
an event-loop thread of its own: give it an executor no other loop uses (an
executor's HTTP pool belongs to one loop), and close the client (or the
transport) when done, which closes that executor's HTTP client on its loop.

The SDK's ``timeout`` is not applied: each attempt is bounded by the engine's
``[timeouts]`` and the whole request by its route's attempt and wait limits.
"""

from __future__ import annotations

import asyncio
import importlib
import queue
import sys
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson

from routeledger.adapters.http.chat import ChatRequestError
from routeledger.adapters.http.executor import (
    ChatEvent,
    Completion,
    Executor,
    problem_response,
    request_error_response,
)
from routeledger.adapters.providers.problems import render_refusal
from routeledger.adapters.store.eventstore import StoreError
from routeledger.core.errors import CommandError

__all__ = [
    "CALLER_SCOPE_HEADER",
    "DEFAULT_CALLER_SCOPE",
    "AsyncRouteLedgerTransport",
    "RouteLedgerTransport",
]

#: The request header that names the caller scope of one request (else the
#: transport's ``caller_scope``).
CALLER_SCOPE_HEADER: Final = "x-routeledger-caller-scope"
#: Whose requests these are in the log when the transport is not told.
DEFAULT_CALLER_SCOPE: Final = "client:sdk"
#: How long closing a sync transport waits for its loop thread to finish closing
#: the executor's HTTP client (s). Why 10 s: closing a pool is local work; a
#: longer wait means the loop is stuck, and the thread is a daemon anyway.
CLOSE_WAIT_S: Final = 10.0
_JSON: Final = ("Content-Type", "application/json")
_SSE: Final = ("Content-Type", "text/event-stream")


def _flavour_bases(name: str) -> tuple[type, type]:
    """``name`` (``BaseTransport``…) of httpx and of httpx2 (``object`` when not installed)."""
    found: list[type] = []
    for module_name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            found.append(object)
        else:
            found.append(getattr(module, name))
    return found[0], found[1]


if TYPE_CHECKING:
    from httpx import AsyncBaseTransport as _AsyncTransport1
    from httpx import AsyncByteStream as _AsyncStream1
    from httpx import BaseTransport as _Transport1
    from httpx import SyncByteStream as _SyncStream1
    from httpx2 import AsyncBaseTransport as _AsyncTransport2
    from httpx2 import AsyncByteStream as _AsyncStream2
    from httpx2 import BaseTransport as _Transport2
    from httpx2 import SyncByteStream as _SyncStream2
else:
    _Transport1, _Transport2 = _flavour_bases("BaseTransport")
    _AsyncTransport1, _AsyncTransport2 = _flavour_bases("AsyncBaseTransport")
    _SyncStream1, _SyncStream2 = _flavour_bases("SyncByteStream")
    _AsyncStream1, _AsyncStream2 = _flavour_bases("AsyncByteStream")


def _flavour(request: object) -> ModuleType:
    """The httpx-like package (``httpx``, ``httpx2``) the request belongs to."""
    return sys.modules[type(request).__module__.partition(".")[0]]


@attrs.frozen
class _Reply:
    """The transport's answer: a status, headers, and a body or a live stream of events."""

    status: int
    headers: tuple[tuple[str, str], ...]
    content: bytes = b""
    #: A live stream: its first event's bytes, then the rest of the executor's events.
    events: AsyncGenerator[ChatEvent, None] | None = None


class _Router:
    """What both transports share: an SDK request in, the executor's answer out."""

    def __init__(
        self,
        executor: Executor,
        *,
        caller_scope: str,
        accounts: Sequence[str],
        backups: Sequence[str],
        routes: Mapping[str, str] | None,
        request_ids: Callable[[], str] | None,
    ) -> None:
        self.executor = executor
        self.caller_scope = caller_scope
        self.accounts = tuple(accounts)
        self.backups = tuple(backups)
        self.routes = dict(routes or {})
        self.request_ids = request_ids or _request_id

    async def answer(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> _Reply:
        """The executor's answer to one SDK request (never raises for a caller's mistake)."""
        request_id = self.request_ids()
        path = path.rstrip("/")
        if method == "POST" and path.endswith("/chat/completions"):
            dialect = "openai"
        elif method == "POST" and path.endswith("/messages"):
            dialect = "anthropic"
        else:
            dialect = "anthropic" if "anthropic-version" in headers else "openai"
            return _unsupported(request_id, method, path, dialect)
        try:
            return await self._run(request_id, dialect, headers, body)
        except ChatRequestError as error:
            status, pairs, content = request_error_response(error, dialect=dialect)
        except CommandError as error:  # a bad caller scope or route name: the caller's
            refused = ChatRequestError(error.field, error.problem)
            status, pairs, content = request_error_response(refused, dialect=dialect)
        except StoreError:
            problem = render_refusal(
                "store_unavailable",
                503,
                "Store unavailable",
                "The gateway could not record the request; nothing of it was recorded.",
                request_id=request_id,
            )
            status, pairs, content = problem_response(problem, dialect=dialect)
        return _Reply(status, _with_ids(pairs, request_id, dialect), content)

    async def _run(
        self, request_id: str, dialect: str, headers: Mapping[str, str], body: bytes
    ) -> _Reply:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ChatRequestError("body", "is not a JSON object")
        model = parsed.get("model")
        if not isinstance(model, str):
            raise ChatRequestError("model", "must be a string naming a route")
        ask: dict[str, Any] = {
            "route": self.routes.get(model, model),
            "caller_scope": headers.get(CALLER_SCOPE_HEADER) or self.caller_scope,
            "accounts": self.accounts,
            "backups": self.backups,
            "request_id": request_id,
        }
        executor = self.executor
        anthropic = dialect == "anthropic"
        if anthropic:
            ask["headers"] = headers
        if parsed.get("stream") is True:
            call = executor.stream_messages if anthropic else executor.stream_chat
            events = call(parsed, **ask)
            first = await anext(events)
            if first.kind == "error":  # nothing streamed yet: a plain HTTP error
                await events.aclose()
                assert first.completion is not None
                return _completed(first.completion, request_id, dialect)
            pairs = _with_ids((_SSE, ("Cache-Control", "no-cache")), request_id, dialect)
            return _Reply(200, pairs, first.sse(), events)
        answer = executor.messages if anthropic else executor.chat
        return _completed(await answer(parsed, **ask), request_id, dialect)


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex


def _with_ids(
    headers: Sequence[tuple[str, str]], request_id: str, dialect: str
) -> tuple[tuple[str, str], ...]:
    ids = [("x-request-id", request_id), ("x-should-retry", "false")]
    if dialect == "anthropic":
        ids.append(("request-id", request_id))
    return (*headers, *ids)


def _completed(completion: Completion, request_id: str, dialect: str) -> _Reply:
    if completion.problem is not None:
        status, pairs, content = completion.error_response()
        return _Reply(status, _with_ids(pairs, request_id, dialect), content)
    served: tuple[tuple[str, str], ...] = ()
    if completion.credential_id is not None and completion.model is not None:
        served = (
            ("x-routeledger-credential", completion.credential_id),
            ("x-routeledger-model", completion.model),
            ("x-routeledger-attempts", str(completion.attempts)),
        )
    pairs = _with_ids((_JSON, *served), request_id, dialect)
    return _Reply(200, pairs, orjson.dumps(completion.response))


def _unsupported(request_id: str, method: str, path: str, dialect: str) -> _Reply:
    problem = render_refusal(
        "unsupported_endpoint",
        404,
        "Unsupported endpoint",
        f"{method} {path}: RouteLedger's SDK transport serves POST /chat/completions "
        "and POST /messages only.",
        request_id=request_id,
    )
    status, pairs, content = problem_response(problem, dialect=dialect)
    return _Reply(status, _with_ids(pairs, request_id, dialect), content)


def _text_headers(headers: Any) -> dict[str, str]:
    """An httpx-like request's headers, names lower-cased."""
    return {str(name).lower(): str(value) for name, value in headers.items()}


class _AsyncEvents(_AsyncStream1, _AsyncStream2):
    """A live stream's body for an async client: the executor's events as SSE bytes."""

    def __init__(self, first: bytes, events: AsyncGenerator[ChatEvent, None]) -> None:
        self._first = first
        self._events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._first
        async for event in self._events:
            chunk = event.sse()
            if chunk:
                yield chunk

    async def aclose(self) -> None:
        await self._events.aclose()  # a client that stops reading ends the run (recorded)


class AsyncRouteLedgerTransport(_AsyncTransport1, _AsyncTransport2):
    """An async httpx/httpx2 transport answering the SDKs through ``executor`` (module docs)."""

    def __init__(
        self,
        executor: Executor,
        *,
        caller_scope: str = DEFAULT_CALLER_SCOPE,
        accounts: Sequence[str] = (),
        backups: Sequence[str] = (),
        routes: Mapping[str, str] | None = None,
        request_ids: Callable[[], str] | None = None,
    ) -> None:
        self._router = _Router(
            executor,
            caller_scope=caller_scope,
            accounts=accounts,
            backups=backups,
            routes=routes,
            request_ids=request_ids,
        )

    async def handle_async_request(self, request: Any) -> Any:
        """Run the SDK's request through the executor; the response is the request's flavour."""
        body = await request.aread()
        reply = await self._router.answer(
            request.method, request.url.path, _text_headers(request.headers), body
        )
        response_class = _flavour(request).Response
        if reply.events is None:
            return response_class(reply.status, headers=list(reply.headers), content=reply.content)
        stream = _AsyncEvents(reply.content, reply.events)
        return response_class(reply.status, headers=list(reply.headers), stream=stream)

    async def aclose(self) -> None:
        """Nothing to close: the executor belongs to the caller (``await executor.aclose()``)."""


#: The end of a sync transport's queue of replies and chunks.
_END: Final = object()


async def _pump(router: _Router, call: tuple[str, str, dict[str, str], bytes], items: Any) -> None:
    """One request on the loop thread: its reply, then its stream's chunks, then :data:`_END`.

    The whole run is one task, so the executor's stream is never iterated from
    two tasks; the queue is unbounded (the run reads at the upstream's pace).
    """
    events: AsyncGenerator[ChatEvent, None] | None = None
    try:
        reply = await router.answer(*call)
        events = reply.events
        items.put(reply)
        if events is not None:
            async for event in events:
                chunk = event.sse()
                if chunk:
                    items.put(chunk)
    except Exception as error:  # handed to the SDK's thread, raised there
        items.put(error)
    finally:
        if events is not None:
            await events.aclose()  # cancelled (the client closed the stream): end the run
        items.put(_END)


class _SyncEvents(_SyncStream1, _SyncStream2):
    """A live stream's body for a sync client: chunks from the loop thread, in order."""

    def __init__(self, first: bytes, items: queue.Queue[object], run: Future[None]) -> None:
        self._first = first
        self._items = items
        self._run = run
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        yield self._first
        while (item := self._items.get()) is not _END:
            if isinstance(item, BaseException):
                self._done = True
                raise item
            assert isinstance(item, bytes)
            yield item
        self._done = True

    def close(self) -> None:
        """A client that stops reading ends the run (recorded as the caller's cancellation)."""
        if self._done:
            return
        self._done = True
        self._run.cancel()
        while self._items.get() is not _END:
            pass


class RouteLedgerTransport(_Transport1, _Transport2):
    """A sync httpx/httpx2 transport answering the SDKs through ``executor`` (module docs).

    The executor runs on an event-loop thread the transport starts on first use;
    :meth:`close` (the SDK client's ``close()``) closes the executor's HTTP
    client there and stops the thread.
    """

    def __init__(
        self,
        executor: Executor,
        *,
        caller_scope: str = DEFAULT_CALLER_SCOPE,
        accounts: Sequence[str] = (),
        backups: Sequence[str] = (),
        routes: Mapping[str, str] | None = None,
        request_ids: Callable[[], str] | None = None,
    ) -> None:
        self._router = _Router(
            executor,
            caller_scope=caller_scope,
            accounts=accounts,
            backups=backups,
            routes=routes,
            request_ids=request_ids,
        )
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def handle_request(self, request: Any) -> Any:
        """Run the SDK's request through the executor; the response is the request's flavour."""
        body = request.read()
        items: queue.Queue[object] = queue.Queue()
        call = (request.method, request.url.path, _text_headers(request.headers), body)
        run = asyncio.run_coroutine_threadsafe(_pump(self._router, call, items), self._running())
        head = items.get()
        if isinstance(head, BaseException):
            raise head
        assert isinstance(head, _Reply)
        response_class = _flavour(request).Response
        if head.events is None:
            while items.get() is not _END:
                pass
            return response_class(head.status, headers=list(head.headers), content=head.content)
        stream = _SyncEvents(head.content, items, run)
        return response_class(head.status, headers=list(head.headers), stream=stream)

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("this RouteLedgerTransport is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="routeledger-sdk-transport", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Close the executor's HTTP client on the loop thread, then stop the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._closed = True
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        shutdown = asyncio.run_coroutine_threadsafe(_shutdown(self._router.executor, loop), loop)
        try:
            shutdown.result(timeout=CLOSE_WAIT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=CLOSE_WAIT_S)
            if not thread.is_alive():
                loop.close()


async def _shutdown(executor: Executor, loop: asyncio.AbstractEventLoop) -> None:
    await executor.aclose()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
