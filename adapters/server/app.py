"""``routeledger serve``: the reference gateway, an ASGI app on Starlette.

Endpoints (docs/server.md):

* ``POST /v1/chat/completions`` — OpenAI chat completions, streamed or not;
* ``POST /v1/messages`` — Anthropic messages (routes of Anthropic credentials);
* ``GET /v1/models`` — the routes the client's key may use, as OpenAI lists models;
* ``GET /healthz`` (the process answers), ``GET /readyz`` (config loaded, store reachable);
* ``GET /metrics`` — Prometheus text (``adapters/server/metrics.py``);
* ``GET /admin/status`` and ``GET /admin/budget`` — the CLI's ``status --json`` and
  ``budget --json``, behind the admin key; ``POST /admin/<command>`` — operator
  commands (``adapters/server/admin.py``).

Every answer carries ``x-request-id``; a chat answer's id is the engine's request
id, which ``routeledger audit <id>`` explains. A served non-streamed answer also
names the pair that served it (``x-routeledger-credential``,
``x-routeledger-model``). Errors are the dialect's own error shape (or RFC 9457
with ``Accept: application/problem+json``); nothing the gateway refuses before
the engine sees it (a bad key, a body too large, not JSON) is recorded.

Why Starlette on uvicorn: the smallest well-kept ASGI toolkit with streaming
responses that notice a client going away, on the server the tests already use;
FastAPI would add request models we do not need (the executor validates bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final

import anyio
import attrs
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import ClientSpec, ConfigError, EngineConfig, load_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.operator import OperatorRefused, UnknownTarget
from routeledger.adapters.engine.results import Served
from routeledger.adapters.http import ChatEvent, ChatRequestError, Completion, Executor
from routeledger.adapters.http.executor import problem_response, request_error_response
from routeledger.adapters.providers.problems import Problem, render_refusal, render_unknown_route
from routeledger.adapters.providers.scrub import DEFAULT_SCRUBBER
from routeledger.adapters.server import admin
from routeledger.adapters.server.clients import ClientKeys, key_digest, presented_key
from routeledger.adapters.server.logs import configure_logging
from routeledger.adapters.server.metrics import UNKNOWN_ROUTE_LABEL, ServerMetrics
from routeledger.adapters.store.canonical import context_hashes, state_hash
from routeledger.adapters.store.eventstore import StoreError
from routeledger.core.errors import UsageError

__all__ = ["Gateway", "app_from_environment"]

LOGGER: Final = logging.getLogger("routeledger.server")
_JSON: Final = "application/json"
#: Environment variables ``routeledger serve`` hands its worker processes.
ENV_CONFIG: Final = "ROUTELEDGER_SERVE_CONFIG"
ENV_STORE: Final = "ROUTELEDGER_SERVE_STORE"
#: ``<format>:<level>`` of the workers' logs (``text:info``).
ENV_LOG: Final = "ROUTELEDGER_SERVE_LOG"


@attrs.define
class _Call:
    """One chat request as it goes: for its answer's headers, its log line and metrics."""

    request_id: str
    dialect: str
    problem_json: bool
    began: float
    route: str = UNKNOWN_ROUTE_LABEL
    client: str = "-"
    stream: bool = False
    first_token_s: float | None = None


class Gateway:
    """The engine, executor, client keys and metrics behind one ASGI app (:attr:`app`)."""

    def __init__(
        self,
        config: EngineConfig,
        store_url: str | None,
        *,
        environ: Mapping[str, str] | None = None,
        engine: Engine | None = None,
        owns_process: bool = False,
    ) -> None:
        environ = os.environ if environ is None else environ
        #: A ``routeledger serve`` worker: its engine may tune the process (``gc_freeze``).
        self.owns_process = owns_process
        self.config = config
        self.store_url = store_url
        self.clients = ClientKeys.load(config.clients, environ)
        self._admin_digest = _admin_digest(config, environ)
        self._given_engine = engine
        self.engine: Engine | None = None
        self.executor: Executor | None = None
        self.metrics: ServerMetrics | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics_text, methods=["GET"]),
                Route("/admin/status", self.admin_status, methods=["GET"]),
                Route("/admin/budget", self.admin_budget, methods=["GET"]),
                Route("/admin/state", self.admin_state, methods=["GET"]),
                Route("/admin/{command}", self.admin_command, methods=["POST"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        engine = self._given_engine
        if engine is None:
            # The wall clock and the maintenance thread (expiry, retirement,
            # snapshots): a clock given to Engine.open turns the thread off by default.
            engine = await asyncio.to_thread(
                Engine.open, self.store_url, self.config, clock=SystemClock(), maintenance=True
            )
            engine.owns_process = self.owns_process
        self.engine = engine
        self.executor = Executor(engine)
        self.metrics = ServerMetrics(engine)
        LOGGER.info(
            "serving %d routes for %d clients on %s",
            len(self.config.policy.routes),
            len(self.config.clients),
            engine.store.url.masked,
        )
        try:
            yield
        finally:
            await self.executor.aclose()
            if self._given_engine is None:
                engine.close()

    def scrub(self, text: str) -> str:
        """``text`` without secrets: the engine's scrubber once it is open (logs use it)."""
        engine = self.engine
        return engine.scrubber(text) if engine is not None else DEFAULT_SCRUBBER(text)

    # --- chat -------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        """``POST /v1/chat/completions``."""
        return await self._chat(request, "openai")

    async def messages(self, request: Request) -> Response:
        """``POST /v1/messages``."""
        return await self._chat(request, "anthropic")

    async def _chat(self, request: Request, dialect: str) -> Response:
        call = self._call(request, dialect)
        admitted = await self._admitted(request, call)
        if isinstance(admitted, Response):
            return admitted
        client, parsed = admitted
        call.stream = parsed.get("stream") is True
        ask: dict[str, Any] = {
            "route": call.route,
            "caller_scope": client.caller_scope,
            "accounts": client.accounts,
            "backups": client.backups,
            "request_id": call.request_id,
        }
        if dialect == "anthropic":
            ask["headers"] = request.headers
        try:
            if call.stream:
                return await self._stream(call, parsed, ask)
            return self._completed(call, await self._complete(dialect, parsed, ask))
        except ChatRequestError as error:
            return self._invalid(call, error)
        except StoreError as error:
            return self._store_down(call, error)

    async def count_tokens(self, request: Request) -> Response:
        """``POST /v1/messages/count_tokens``: the provider of the pair the route would use
        counts; recorded as a count (G6), never billed, never a served request."""
        call = self._call(request, "anthropic")
        admitted = await self._admitted(request, call)
        if isinstance(admitted, Response):
            return admitted
        client, parsed = admitted
        executor = self.executor
        assert executor is not None
        try:
            answer = await executor.count_tokens(
                parsed,
                route=call.route,
                caller_scope=client.caller_scope,
                headers=request.headers,
                count_id=call.request_id,
            )
        except ChatRequestError as error:
            return self._invalid(call, error)
        except StoreError as error:
            return self._store_down(call, error)
        result = "counted" if answer.counted is not None else "count_failed"
        body = orjson.dumps(answer.body)
        return self._answer(call, result, answer.status, (("content-type", _JSON),), body)

    def _call(self, request: Request, dialect: str) -> _Call:
        return _Call(
            request_id="req_" + uuid.uuid4().hex,
            dialect=dialect,
            problem_json="application/problem+json" in request.headers.get("accept", ""),
            began=time.perf_counter(),
        )

    async def _admitted(
        self, request: Request, call: _Call
    ) -> tuple[ClientSpec, dict[str, Any]] | Response:
        """The client and its JSON body naming a route it may use, or the refusal to answer."""
        client = self.clients.authenticate(request.headers)
        if client is None:
            return self._refused(call, "unauthorized", _unauthorized(call.request_id))
        call.client = client.name
        try:
            body = await _read_body(request, self.config.server.body_bytes_max)
        except ClientDisconnect:
            return _client_gone()
        if body is None:
            limit = self.config.server.body_bytes_max
            problem = render_refusal(
                "request_too_large",
                413,
                "Request too large",
                f"The request body is larger than {limit} bytes (server.body_bytes_max).",
                request_id=call.request_id,
            )
            return self._refused(call, "too_large", problem)
        parsed = _json_object(body)
        route = parsed.get("model") if parsed is not None else None
        if parsed is None or not isinstance(route, str):
            param, reason = (
                ("body", "is not a JSON object")
                if parsed is None
                else ("model", "must be a string naming a route")
            )
            return self._invalid(call, ChatRequestError(param, reason))
        if route not in self.config.dialects or not client.may_use(route):
            # The same 404 for a route that does not exist and one this key may not use.
            return self._refused(
                call, "unknown_route", render_unknown_route(call.request_id, route)
            )
        call.route = route
        return client, parsed

    async def _complete(
        self, dialect: str, body: dict[str, Any], ask: dict[str, Any]
    ) -> Completion:
        executor = self.executor
        assert executor is not None
        if dialect == "anthropic":
            return await executor.messages(body, **ask)
        return await executor.chat(body, **ask)

    def _completed(self, call: _Call, completion: Completion) -> Response:
        if completion.problem is not None:
            status, headers, body = completion.error_response(problem_json=call.problem_json)
            return self._answer(call, _result_label(completion), status, headers, body, completion)
        headers = (("Content-Type", _JSON), *_served_headers(completion))
        body = orjson.dumps(completion.response)
        return self._answer(call, "served", 200, headers, body, completion)

    async def _stream(self, call: _Call, body: dict[str, Any], ask: dict[str, Any]) -> Response:
        executor = self.executor
        assert executor is not None
        if call.dialect == "anthropic":
            events = executor.stream_messages(body, **ask)
        else:
            events = executor.stream_chat(body, **ask)
        first = await anext(events)
        if first.kind == "error":  # nothing streamed yet: a plain HTTP error
            await events.aclose()
            assert first.completion is not None
            return self._completed(call, first.completion)
        call.first_token_s = time.perf_counter() - call.began
        headers = {"x-request-id": call.request_id, "Cache-Control": "no-cache"}
        if first.chunk is not None and isinstance(first.chunk.get("model"), str):
            headers["x-routeledger-model"] = first.chunk["model"]
        return StreamingResponse(
            self._relay(call, first, events), media_type="text/event-stream", headers=headers
        )

    async def _relay(
        self, call: _Call, first: ChatEvent, events: AsyncGenerator[ChatEvent, None]
    ) -> AsyncIterator[bytes]:
        """The stream's SSE bytes; however it ends, the run is closed and logged."""
        completion: Completion | None = None
        try:
            yield first.sse()
            async for event in events:
                if event.completion is not None:
                    completion = event.completion
                chunk = event.sse()
                if chunk:
                    yield chunk
        finally:
            with anyio.CancelScope(shield=True):  # a client gone: still record the end
                await events.aclose()
            result = _result_label(completion) if completion is not None else "client_gone"
            self._observe(call, result, 200, completion)

    # --- answers, logs and metrics ---------------------------------------------

    def _answer(
        self,
        call: _Call,
        result: str,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        completion: Completion | None = None,
    ) -> Response:
        response = Response(body, status_code=status, headers=dict(headers))
        response.headers["x-request-id"] = call.request_id
        self._observe(call, result, status, completion)
        return response

    def _refused(self, call: _Call, result: str, problem: Problem) -> Response:
        status, headers, body = problem_response(
            problem, problem_json=call.problem_json, dialect=call.dialect
        )
        return self._answer(call, result, status, headers, body)

    def _invalid(self, call: _Call, error: ChatRequestError) -> Response:
        status, headers, body = request_error_response(
            error, problem_json=call.problem_json, dialect=call.dialect
        )
        return self._answer(call, "invalid_request", status, headers, body)

    def _store_down(self, call: _Call, error: StoreError) -> Response:
        LOGGER.error("request %s: the store failed: %s", call.request_id, error)
        problem = render_refusal(
            "store_unavailable",
            503,
            "Store unavailable",
            "The gateway could not record the request; nothing of it was recorded.",
            request_id=call.request_id,
        )
        return self._refused(call, "store_unavailable", problem)

    def _observe(
        self, call: _Call, result: str, status: int, completion: Completion | None
    ) -> None:
        seconds = time.perf_counter() - call.began
        metrics = self.metrics
        if metrics is not None:
            metrics.requests.labels(call.route, result, str(status)).inc()
            metrics.duration.labels(call.route).observe(seconds)
            if call.first_token_s is not None:
                metrics.first_token.labels(call.route).observe(call.first_token_s)
        if LOGGER.isEnabledFor(logging.INFO):
            fields = _log_fields(call, result, status, seconds, completion)
            text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            LOGGER.info("request %s", text, extra={"routeledger": fields})

    # --- models, health, metrics, admin ---------------------------------------------

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: the routes this key may use."""
        client = self.clients.authenticate(request.headers)
        if client is None:
            return _plain_problem(_unauthorized(""), "openai")
        data = [
            {"id": alias, "object": "model", "created": 0, "owned_by": "routeledger"}
            for alias in self.config.dialects
            if client.may_use(alias)
        ]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``: the process answers."""
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def readyz(self, request: Request) -> Response:
        """``GET /readyz``: the configuration is loaded and the store answers."""
        engine = self.engine
        if engine is None:
            return Response(b'{"status":"starting"}', status_code=503, media_type=_JSON)
        try:
            position = await asyncio.to_thread(engine.store.max_position)
        except StoreError as error:
            body = {"status": "store_unavailable", "detail": engine.scrubber(str(error))}
            return Response(orjson.dumps(body), status_code=503, media_type=_JSON)
        return Response(orjson.dumps({"status": "ready", "position": position}), media_type=_JSON)

    async def metrics_text(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text (the log caught up first, off the event loop)."""
        metrics = self.metrics
        if metrics is None:
            return Response(b"", status_code=503)
        text = await asyncio.to_thread(generate_latest, metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def admin_status(self, request: Request) -> Response:
        """``GET /admin/status``: ``routeledger status --json``."""
        return await self._admin(request, "status")

    async def admin_budget(self, request: Request) -> Response:
        """``GET /admin/budget``: ``routeledger budget --json``."""
        return await self._admin(request, "budget")

    async def admin_state(self, request: Request) -> Response:
        """``GET /admin/state``: this worker's process id, log position and state hash.

        The worker first reads what others appended, so every worker of a
        fleet answers the same position and hash once traffic stops (the
        multi-worker tests compare them with the log's own fold).
        """
        refused = self._admin_refusal(request)
        if refused is not None:
            return refused
        engine = self.engine
        assert engine is not None

        def caught_up() -> dict[str, Any]:
            with engine.runtime.lock:
                engine.runtime.catch_up()
                state = engine.runtime.state
                return {
                    "pid": os.getpid(),
                    "position": state.position,
                    "state_hash": state_hash(state),
                    "contexts": context_hashes(state),
                }

        return Response(orjson.dumps(await asyncio.to_thread(caught_up)), media_type=_JSON)

    async def _admin(self, request: Request, board: str) -> Response:
        refused = self._admin_refusal(request)
        if refused is not None:
            return refused
        engine = self.engine
        assert engine is not None
        metrics = self.metrics
        assert metrics is not None
        document = await asyncio.to_thread(metrics.log.document, board, engine.clock.now_us())
        return Response(orjson.dumps(document), media_type=_JSON)

    async def admin_command(self, request: Request) -> Response:
        """``POST /admin/<command>``: an operator command (``adapters/server/admin.py``)."""
        refused = self._admin_refusal(request)
        if refused is not None:
            return refused
        engine = self.engine
        assert engine is not None
        name = request.path_params["command"]
        if name not in admin.COMMANDS:
            known = ", ".join(sorted(admin.COMMANDS))
            return _admin_problem("not_found", 404, f"No admin command {name!r} (known: {known}).")
        try:
            body = await _read_body(request, self.config.server.body_bytes_max)
        except ClientDisconnect:
            return _client_gone()
        parsed = _json_object(body) if body is not None else None
        if parsed is None:
            return _admin_problem("invalid_request", 400, "The body must be a JSON object.")
        try:
            act = admin.parse_command(name, parsed)
            result = await asyncio.to_thread(act, engine)
        except admin.AdminBodyError as error:
            return _admin_problem("invalid_request", 400, str(error), param=error.field)
        except UnknownTarget as error:
            return _admin_problem("not_found", 404, str(error))
        except OperatorRefused as error:
            return _admin_problem("conflict", 409, str(error))
        except UsageError as error:
            return _admin_problem("invalid_request", 400, str(error))
        except StoreError as error:
            return _admin_problem("store_unavailable", 503, self.scrub(str(error)))
        return Response(orjson.dumps(admin.result_document(result)), media_type=_JSON)

    def _admin_refusal(self, request: Request) -> Response | None:
        if self._admin_digest is None:
            problem = render_refusal(
                "not_found", 404, "Not found", "The admin API is off (server.admin_key_env)."
            )
            return _plain_problem(problem, "openai")
        key = presented_key(request.headers)
        if key is None or not hmac.compare_digest(key_digest(key), self._admin_digest):
            return _plain_problem(_unauthorized(""), "openai")
        return None


def _admin_problem(code: str, status: int, detail: str, *, param: str | None = None) -> Response:
    """An admin API error in the OpenAI error shape (its SDKs and curl users read it)."""
    error: dict[str, Any] = {"message": detail, "type": code, "code": code, "param": param}
    return Response(orjson.dumps({"error": error}), status_code=status, media_type=_JSON)


def _admin_digest(config: EngineConfig, environ: Mapping[str, str]) -> bytes | None:
    name = config.server.admin_key_env
    if not name:
        return None
    key = environ.get(name, "").strip()
    if not key:
        raise ConfigError(
            "<config>",
            "server.admin_key_env",
            f"the environment variable {name} is not set or empty",
            None,
        )
    return key_digest(key)


def _client_gone() -> Response:
    """The answer to a client that went away before its body arrived (it is never sent)."""
    LOGGER.info("a client went away before its request body arrived: nothing was recorded")
    return Response(status_code=400)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` once it is longer than ``limit`` bytes (the rest unread)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            return None
        parts.append(part)
    return b"".join(parts)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _unauthorized(request_id: str) -> Problem:
    return render_refusal(
        "invalid_api_key",
        401,
        "Invalid API key",
        "Missing or unknown API key: send one of the configured client keys as "
        "'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
        request_id=request_id,
    )


def _plain_problem(problem: Problem, dialect: str) -> Response:
    status, headers, body = problem_response(problem, dialect=dialect)
    return Response(body, status_code=status, headers=dict(headers))


def _served_headers(completion: Completion) -> tuple[tuple[str, str], ...]:
    if completion.credential_id is None or completion.model is None:
        return ()
    return (
        ("x-routeledger-credential", completion.credential_id),
        ("x-routeledger-model", completion.model),
        ("x-routeledger-attempts", str(completion.attempts)),
    )


def _result_label(completion: Completion) -> str:
    """A closed set: served, exhausted, budget_rejected, degraded, nothing_available, failed."""
    if isinstance(completion.result, Served):
        return "served"
    code = str(completion.problem.body.get("code", "")).lower() if completion.problem else ""
    return {
        "fallback_exhausted": "exhausted",
        "budget_exceeded": "budget_rejected",
        "credential_degraded": "degraded",
        "nothing_available": "nothing_available",
        "model_not_found": "unknown_route",
    }.get(code, "failed")


def _log_fields(
    call: _Call, result: str, status: int, seconds: float, completion: Completion | None
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": call.request_id,
        "client": call.client,
        "route": call.route,
        "dialect": call.dialect,
        "stream": call.stream,
        "result": result,
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "ttft_ms": round(call.first_token_s * 1000, 1) if call.first_token_s is not None else None,
    }
    if completion is not None:
        fields["attempts"] = completion.attempts
        served = completion.result
        if isinstance(served, Served):
            fields["served_by"] = f"{served.credential_id}/{served.upstream_model}"
            fields["input_tokens"] = served.input_tokens
            fields["output_tokens"] = served.output_tokens
            fields["cost_micros"] = served.cost_micros
    return fields


def app_from_environment() -> Starlette:
    """The app a ``routeledger serve`` worker runs (uvicorn's factory; see :data:`ENV_CONFIG`)."""
    log_format, _, level = os.environ.get(ENV_LOG, "text:info").partition(":")
    config = load_config(Path(os.environ[ENV_CONFIG]))
    try:
        gateway = Gateway(config, os.environ.get(ENV_STORE) or None, owns_process=True)
    except UsageError as error:
        LOGGER.error("%s", error)
        raise
    configure_logging(log_format, level or "info", gateway.scrub)
    return gateway.app
