"""A minimal gateway a user would write over ``Executor``: raw ASGI on uvicorn, on loopback.

``POST /v1/chat/completions``: the client's ``model`` names the route; streamed
requests get the chunks as the executor yields them (``ChatEvent.sse``), the
others the ``chat.completion`` object; errors are ``Completion.error_response``
(``application/problem+json`` when the client's ``Accept`` asks for it).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import uvicorn

from routeledger.adapters.http import ChatRequestError, Executor, request_error_response

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _headers(pairs: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in pairs]


async def _respond(
    send: Send, status: int, headers: Sequence[tuple[str, str]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _headers(headers)})
    await send({"type": "http.response.body", "body": body})


class Gateway:
    """The ASGI app: one executor, every request billed to ``accounts``."""

    def __init__(self, make_executor: Callable[[], Executor], accounts: Sequence[str]) -> None:
        self._make = make_executor
        self.executor: Executor | None = None
        self.accounts = tuple(accounts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.executor = self._make()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.executor is not None:
                        await self.executor.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        accept = dict(scope["headers"]).get(b"accept", b"").decode()
        dialect = "anthropic" if scope["path"].rstrip("/") == "/v1/messages" else "openai"
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        await self._chat(body, "application/problem+json" in accept, dialect, headers, send)

    async def _chat(
        self, body: bytes, problem_json: bool, dialect: str, headers: dict[str, str], send: Send
    ) -> None:
        executor = self.executor
        assert executor is not None
        extra: dict[str, Any] = {"headers": headers} if dialect == "anthropic" else {}
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        route = parsed.get("model") if isinstance(parsed, dict) else None
        try:
            if isinstance(parsed, dict) and parsed.get("stream") is True:
                await self._stream(executor, body, str(route), problem_json, extra, send)
                return
            if dialect == "anthropic":
                completion = await executor.messages(
                    body,
                    route=str(route),
                    caller_scope="user:sdk",
                    accounts=self.accounts,
                    **extra,
                )
            else:
                completion = await executor.chat(
                    body, route=str(route), caller_scope="user:sdk", accounts=self.accounts
                )
        except ChatRequestError as error:
            refused = request_error_response(error, problem_json=problem_json, dialect=dialect)
            await _respond(send, *refused)
            return
        if completion.problem is not None:
            await _respond(send, *completion.error_response(problem_json=problem_json))
            return
        await _respond(
            send, 200, (("Content-Type", "application/json"),), orjson.dumps(completion.response)
        )

    async def _stream(
        self,
        executor: Executor,
        body: bytes,
        route: str,
        problem_json: bool,
        extra: dict[str, Any],
        send: Send,
    ) -> None:
        call = executor.stream_messages if extra else executor.stream_chat
        events = call(body, route=route, caller_scope="user:sdk", accounts=self.accounts, **extra)
        first = await anext(events)
        if first.kind == "error":  # nothing streamed yet: a plain HTTP error
            assert first.completion is not None
            await _respond(send, *first.completion.error_response(problem_json=problem_json))
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _headers((("Content-Type", "text/event-stream"),)),
            }
        )
        await send({"type": "http.response.body", "body": first.sse(), "more_body": True})
        async for event in events:
            await send({"type": "http.response.body", "body": event.sse(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(gateway: Gateway) -> Iterator[str]:
    """Run ``gateway`` on a loopback port in a thread; its ``/v1`` base URL."""
    port = _free_port()
    config = uvicorn.Config(
        gateway, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        asyncio.run(asyncio.sleep(0.01))
    assert server.started, "the test gateway did not start"
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
