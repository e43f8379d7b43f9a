"""The httpx executor for OpenAI-compatible and Anthropic upstreams, with the engine in charge.

``Executor.chat(body, route=..., ...)`` runs one chat completion through the
engine and returns a :class:`Completion` (the ``chat.completion`` object of the
model that served, or the problem to answer with);
``Executor.stream_chat`` yields the same run live, chunk by chunk, for callers
that stream to their own clients. The engine records the request and its
hold, decides each attempt (credential, upstream model), and the executor
performs it over HTTP, always streaming from the upstream so that it can tell
*how* an attempt failed:

* per attempt, deadlines in ``[timeouts]``: ``first_token_us`` covers connect,
  response headers and the first token; ``idle_us`` each gap between chunks
  after it; ``total_us`` the whole attempt. A free connection from the pool is
  awaited at most ``[http] pool_timeout_us``; running out is the gateway's own
  failure (``gateway_pool_exhausted``) and changes no availability;
* SSE is parsed once, by :class:`~.observe.StreamObserver`: an in-band error
  event in a 200 stream, a malformed chunk, a cut without ``[DONE]``, a stall
  all become classified failures; every chunk is passed on whole (content,
  tool calls, refusal, finish reason, logprobs, fields we do not know);
* the client's body passes through unchanged except ``model`` (and
  ``stream``/``stream_options``, which the executor needs to see usage);
* a failure after output started moves to the next target the core picks.
  Streamed live (:meth:`Executor.stream_chat`), text the client already has is
  never sent again: the next attempt *continues* it as an assistant prefix on
  a model with prefill, or, on a route with a ``continue_instruction``, on a
  model without prefill; otherwise the stream ends with the error event. Not
  streamed (:meth:`Executor.chat`), a model without prefill restarts cleanly;
* every attempt the provider billed is settled (the engine sums them: L11).

``Executor.messages`` / ``stream_messages`` do the same for the Anthropic
messages API (a route of ``anthropic`` credentials; docs/executor.md).

Errors: :meth:`Completion.error_response` and :meth:`ChatEvent.sse` render the
one mapping of a result to a status and body (``docs/errors.md``) in OpenAI's
``{"error": {...}}`` shape, or as ``application/problem+json`` when asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, Final, NamedTuple

import attrs
import httpx
import orjson

from routeledger.adapters.engine.config import mixed_dialects
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.lifecycle import Attempt, RequestHandle
from routeledger.adapters.engine.logs import LOGGER
from routeledger.adapters.engine.results import (
    BudgetRejected,
    Degradation,
    Exhausted,
    Result,
    Served,
)
from routeledger.adapters.http.chat import (
    Assembly,
    ChatRequestError,
    MessageAssembly,
    anthropic_payload,
    parse_chat_body,
    upstream_payload,
    wants_usage,
)
from routeledger.adapters.http.counting import CountAnswer, count_message_tokens
from routeledger.adapters.providers.models import HttpModelLister, ModelLister
from routeledger.adapters.providers.observe import (
    Observation,
    StreamObserver,
    observe_announced,
    observe_exception,
    observe_response,
)
from routeledger.adapters.providers.problems import (
    BudgetRejection,
    FailureProblem,
    Problem,
    anthropic_error_body,
    openai_error_body,
    render_budget_rejection,
    render_exhaustion,
    render_failure,
    render_invalid_request,
    render_nothing_available,
    render_unknown_route,
    stream_error_chunk,
)
from routeledger.adapters.providers.secrets import EnvironmentSecretReader
from routeledger.core.credentials.healing import ResolveModels
from routeledger.core.credentials.secrets import SecretReader
from routeledger.core.errors import UsageError
from routeledger.core.routing import FailureClass, Phase
from routeledger.core.time import US_PER_S
from routeledger.core.usability import UnusableReason

__all__ = [
    "ChatEvent",
    "ChatRequestError",
    "Completion",
    "Executor",
    "problem_response",
    "request_error_response",
    "result_problem",
]

#: Bytes of an upstream's error body read to classify it. Why 64 KiB: error
#: bodies are a few hundred bytes; a 10 MB one must not be buffered per attempt.
ERROR_BODY_BYTES_MAX: Final = 64 * 1024
_JSON: Final = (("Content-Type", "application/json"),)


@attrs.frozen(kw_only=True)
class Completion:
    """The outcome of one chat completion run through the engine."""

    request_id: str
    result: Result
    #: The first choice's full text when served; empty otherwise (never a truncated answer).
    content: str = ""
    #: The first choice's tool calls (OpenAI shape: id, type, function name and arguments).
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    finish_reason: str | None = None
    #: ``prompt_tokens``/``completion_tokens``/``total_tokens`` summed over the
    #: attempts whose usage was reported (a billed cut attempt included).
    usage: Mapping[str, int] | None = None
    #: The ``chat.completion`` object, with the model that actually served.
    response: Mapping[str, Any] | None = None
    #: The upstream model that actually served the answer.
    model: str | None = None
    credential_id: str | None = None
    #: Attempts made, and how many abandoned a partial answer to restart cleanly.
    attempts: int = 0
    restarts: int = 0
    #: The problem to return to the client when not served (RFC 9457).
    problem: Problem | None = None
    #: ``openai`` (chat completions) or ``anthropic`` (messages): the shape of errors.
    dialect: str = "openai"

    def error_response(
        self, *, problem_json: bool = False
    ) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        """Status, headers and body for a request that was not served (OpenAI's shape).

        ``problem_json``: the RFC 9457 body as ``application/problem+json``
        instead (for a client whose ``Accept`` asks for it).
        """
        if self.problem is None:
            raise UsageError(f"request {self.request_id} was served: there is no error to render")
        return _error_response(self.problem, problem_json=problem_json, dialect=self.dialect)


def _error_body(problem: Problem, dialect: str) -> dict[str, Any]:
    return anthropic_error_body(problem) if dialect == "anthropic" else openai_error_body(problem)


def _error_response(
    problem: Problem, *, problem_json: bool, dialect: str = "openai"
) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
    if problem_json:
        return problem.status, problem.headers, problem.to_json()
    headers = tuple(pair for pair in problem.headers if pair[0] != "Content-Type")
    return problem.status, (*_JSON, *headers), orjson.dumps(_error_body(problem, dialect))


def problem_response(
    problem: Problem, *, problem_json: bool = False, dialect: str = "openai"
) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
    """Status, headers and body for ``problem`` in ``dialect``'s error shape (or RFC 9457)."""
    return _error_response(problem, problem_json=problem_json, dialect=dialect)


def request_error_response(
    error: ChatRequestError, *, problem_json: bool = False, dialect: str = "openai"
) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
    """Status, headers and body for a client body the executor refused (400)."""
    problem = render_invalid_request(error.param, error.problem)
    return _error_response(problem, problem_json=problem_json, dialect=dialect)


class ChatEvent(NamedTuple):
    """One event of a streamed run: ``delta``, ``restart``, ``done`` or ``error``.

    ``delta`` carries one upstream ``chat.completion.chunk`` whole; ``restart``
    (only when not streamed live) says the partial answer so far is abandoned.
    A named tuple: one is made per chunk (a frozen attrs class costs ~3x more).
    """

    kind: str
    chunk: Mapping[str, Any] | None = None
    completion: Completion | None = None
    #: ``openai`` or ``anthropic``: how :meth:`sse` writes the event.
    dialect: str = "openai"

    @property
    def text(self) -> str:
        """The first choice's content delta in this chunk ("" for none)."""
        if self.dialect == "anthropic":
            delta = self.chunk.get("delta") if self.chunk is not None else None
            text = delta.get("text") if isinstance(delta, dict) else None
            return text if isinstance(text, str) else ""
        choices = self.chunk.get("choices") if self.chunk is not None else None
        if not choices or not isinstance(choices[0], dict):
            return ""
        delta = choices[0].get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        return content if isinstance(content, str) else ""

    def sse(self) -> bytes:
        """The event as the SSE bytes a client of OpenAI's API expects (``b""`` for a restart)."""
        anthropic = self.dialect == "anthropic"
        if self.kind == "delta" and self.chunk is not None:
            data = b"data: " + orjson.dumps(self.chunk) + b"\n\n"
            if anthropic:
                return b"event: " + str(self.chunk.get("type")).encode() + b"\n" + data
            return data
        if self.kind == "done":
            return b"" if anthropic else b"data: [DONE]\n\n"  # Anthropic's message_stop was sent
        if self.kind == "error" and self.completion is not None and self.completion.problem:
            if not anthropic:
                return stream_error_chunk(self.completion.problem)
            body = orjson.dumps(anthropic_error_body(self.completion.problem))
            return b"event: error\ndata: " + body + b"\n\n"
        return b""


class _Ask(NamedTuple):
    """Who asks for what: the engine's request parameters."""

    route: str
    caller_scope: str
    accounts: tuple[str, ...]
    request_id: str | None
    backups: tuple[str, ...]
    model_owner: str | None
    #: Client headers passed to the upstream (only :data:`FORWARDED_HEADERS`).
    headers: tuple[tuple[str, str], ...] = ()


#: The Anthropic API version sent when calling Anthropic credentials (unless
#: the client sends its own ``anthropic-version``).
ANTHROPIC_VERSION: Final = "2023-06-01"
#: Client headers an Anthropic-dialect request passes on to the upstream: the
#: API version and the beta features it asks for. Nothing else (a client's own
#: ``x-api-key`` or ``authorization`` never reaches a provider).
FORWARDED_HEADERS: Final = frozenset({"anthropic-version", "anthropic-beta"})
#: Longest forwarded header value (chars): a version or a list of beta names.
FORWARDED_HEADER_CHARS_MAX: Final = 1_024


def _forwarded(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """The client headers to pass on, lower-cased; a bad value is the caller's error."""
    if not headers:
        return ()
    kept = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered not in FORWARDED_HEADERS:
            continue
        if not isinstance(value, str) or not value.isprintable() or not value.strip():
            raise ChatRequestError(f"header {lowered}", "must be a non-empty printable string")
        if len(value) > FORWARDED_HEADER_CHARS_MAX:
            raise ChatRequestError(
                f"header {lowered}", f"is longer than {FORWARDED_HEADER_CHARS_MAX} characters"
            )
        kept.append((lowered, value.strip()))
    return tuple(kept)


@attrs.define
class _Run:
    """What one request's attempts have produced so far."""

    body: Mapping[str, Any]
    live: bool
    instruction: str
    forward_usage: bool
    dialect: str = "openai"
    headers: tuple[tuple[str, str], ...] = ()
    assembly: Assembly | MessageAssembly = attrs.Factory(Assembly)
    restarts: int = 0
    served: Attempt | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    usage_seen: bool = False

    def delivered(self) -> str:
        assembly = self.assembly
        if isinstance(assembly, MessageAssembly):
            return assembly.text()
        first = assembly.first()
        return "".join(first.parts) if first is not None else ""

    def absorb(self, observer: StreamObserver) -> None:
        if observer.usage_seen:
            self.usage_seen = True
            self.input_tokens += observer.input_tokens
            self.output_tokens += observer.output_tokens

    def usage(self) -> dict[str, int] | None:
        if not self.usage_seen:
            return None
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }


class Executor:
    """Runs chat completions against OpenAI-compatible upstreams through an engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        secrets: SecretReader | None = None,
        client: httpx.AsyncClient | None = None,
        models: ModelLister | None = None,
    ) -> None:
        mixed = mixed_dialects(engine.config)
        if mixed is not None:
            raise mixed
        self.engine = engine
        names = {
            cid: endpoint.secret_env
            for cid, endpoint in engine.config.endpoints.items()
            if endpoint.secret_env
        }
        self.secrets: SecretReader = secrets or EnvironmentSecretReader(names=names)
        engine.scrubber = engine.scrubber.with_secrets(self.secrets.secret_values())
        #: Credentials whose configuration names a key variable (``secret_env``).
        self._keyed = tuple(sorted(names))
        self.check_secrets()
        http, timeouts = engine.config.http, engine.config.timeouts
        limits = httpx.Limits(
            max_connections=http.max_connections,
            max_keepalive_connections=http.max_keepalive_connections,
        )
        self._client = client or httpx.AsyncClient(limits=limits)
        self._own_client = client is None
        #: Lists a key's models when the lifecycle decides *resolve* (``track_credentials``).
        self.models: ModelLister = models or HttpModelLister(self._client)
        #: One listing per credential at a time (concurrent requests wait for it).
        self._listing: dict[str, asyncio.Lock] = {}
        # The read timeout starts unset (the first-token deadline covers the
        # headers) and becomes ``idle_us`` once the headers are in (_open).
        self._timeout = httpx.Timeout(
            connect=timeouts.connect_us / US_PER_S,
            read=None,
            write=timeouts.connect_us / US_PER_S,
            pool=http.pool_timeout_us / US_PER_S,
        )

    def check_secrets(self) -> frozenset[str]:
        """Which configured keys are missing here; routing skips those credentials.

        A credential whose ``secret_env`` is set in the configuration but whose
        variable is unset or empty is not routed (``secret_missing`` in the
        decision's skips): a local mistake must not become a 401, a durable
        suspension, or the upstream's failure. Checked at start-up (a WARNING
        each) and before every request (an INFO line when a key appears).
        """
        missing = frozenset(cid for cid in self._keyed if not self.secrets.get(cid))
        before = self.engine.unusable_here
        if missing == before.keys():
            return missing
        endpoints = self.engine.config.endpoints
        for cid in sorted(missing - before.keys()):
            LOGGER.warning(
                "credential %s: its key variable %s is not set: not routed until it is",
                cid,
                endpoints[cid].secret_env,
            )
        for cid in sorted(before.keys() - missing):
            LOGGER.info("credential %s: its key is set: routed again", cid)
            self.engine.scrubber = self.engine.scrubber.with_secrets(self.secrets.secret_values())
        self.engine.unusable_here = dict.fromkeys(missing, UnusableReason.SECRET_MISSING)
        return missing

    async def heal(self, route: str, backups: Sequence[str] = ()) -> tuple[str, ...]:
        """Resolve the models of every credential of the route's chain whose lifecycle asks
        for it (I0), against its stored key; returns the credentials it listed.

        Called before each request when the engine tracks credential lifecycles:
        a credential whose listing failed at provisioning heals on its next use.
        The core decides when (``ResolveModels``; after failures a bounded
        backoff, ``WaitUntil``); a credential that is usable costs no call.
        """
        plan = self.engine.config.policy.chain(route, tuple(backups))
        if plan is None:
            return ()
        wanted = dict.fromkeys(m.credential for target in plan.targets for m in target.members)
        listed = []
        for credential_id in wanted:
            step = await asyncio.to_thread(self.engine.prepare_credential, credential_id)
            if not isinstance(step, ResolveModels):
                continue
            async with self._listing.setdefault(credential_id, asyncio.Lock()):
                # Another request may have listed it while this one waited.
                step = await asyncio.to_thread(self.engine.prepare_credential, credential_id)
                if isinstance(step, ResolveModels):
                    await self._resolve(credential_id)
                    listed.append(credential_id)
        return tuple(listed)

    async def _resolve(self, credential_id: str) -> None:
        """List one key's models and record the answer (names, a failure, or a rejected key)."""
        engine = self.engine
        endpoint = engine.endpoint(credential_id)
        key = self.secrets.get(credential_id)
        found = await self.models.list_models(endpoint.base_url, endpoint.dialect, key)
        if isinstance(found, frozenset):
            await asyncio.to_thread(engine.record_models, credential_id, found)
            LOGGER.info("credential %s: %d models resolved", credential_id, len(found))
        elif isinstance(found, int):
            await asyncio.to_thread(engine.record_key_rejected, credential_id, found)
            LOGGER.warning(
                "credential %s: the key was rejected (%d) listing models", credential_id, found
            )
        else:
            await asyncio.to_thread(engine.record_resolution_failed, credential_id, found)
            LOGGER.warning("credential %s: listing models failed (%s)", credential_id, found.value)

    async def aclose(self) -> None:
        """Close the HTTP client if the executor made it."""
        if self._own_client:
            await self._client.aclose()

    async def chat(
        self,
        body: object,
        *,
        route: str,
        caller_scope: str,
        accounts: Sequence[str] = (),
        request_id: str | None = None,
        backups: Sequence[str] = (),
        model_owner: str | None = None,
    ) -> Completion:
        """Run a chat completion; returns when it is served or cannot be.

        Raises :class:`ChatRequestError` (nothing recorded) for a body that
        cannot be sent; see :func:`request_error_response`.
        """
        ask = _Ask(route, caller_scope, tuple(accounts), request_id, tuple(backups), model_owner)
        return await self._complete(body, "openai", ask)

    @property
    def http_client(self) -> httpx.AsyncClient:
        """The executor's connection pool to the providers (its ``[http]`` limits apply)."""
        return self._client

    async def count_tokens(
        self,
        body: object,
        *,
        route: str,
        caller_scope: str,
        headers: Mapping[str, str] | None = None,
        count_id: str | None = None,
    ) -> CountAnswer:
        """Anthropic's ``count_tokens`` on the pair ``route`` would use now, recorded as a
        count, never an attempt (``adapters/http/counting.py``)."""
        return await count_message_tokens(
            self, body, route=route, caller_scope=caller_scope, headers=headers, count_id=count_id
        )

    async def messages(
        self,
        body: object,
        *,
        route: str,
        caller_scope: str,
        accounts: Sequence[str] = (),
        request_id: str | None = None,
        backups: Sequence[str] = (),
        model_owner: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Completion:
        """:meth:`chat` for the Anthropic messages API (a route of ``anthropic`` credentials).

        ``headers``: the client's request headers; ``anthropic-version`` and
        ``anthropic-beta`` among them are passed on (see ``FORWARDED_HEADERS``).
        """
        ask = _Ask(route, caller_scope, tuple(accounts), request_id, tuple(backups), model_owner)
        ask = ask._replace(headers=_forwarded(headers))
        return await self._complete(body, "anthropic", ask)

    def stream_chat(
        self,
        body: object,
        *,
        route: str,
        caller_scope: str,
        accounts: Sequence[str] = (),
        request_id: str | None = None,
        backups: Sequence[str] = (),
        model_owner: str | None = None,
        live: bool = True,
    ) -> AsyncGenerator[ChatEvent, None]:
        """Run a chat completion, yielding chunks as they arrive, then ``done`` or ``error``.

        ``live``: the chunks reach a client as they are yielded, so text it has
        is never taken back (see the module docstring); ``False`` for a caller
        that buffers them (``chat``).
        """
        ask = _Ask(route, caller_scope, tuple(accounts), request_id, tuple(backups), model_owner)
        return self._run(body, "openai", live, ask)

    def stream_messages(
        self,
        body: object,
        *,
        route: str,
        caller_scope: str,
        accounts: Sequence[str] = (),
        request_id: str | None = None,
        backups: Sequence[str] = (),
        model_owner: str | None = None,
        live: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        """:meth:`stream_chat` for the Anthropic messages API: its events, passed on whole.

        ``headers`` as for :meth:`messages`.
        """
        ask = _Ask(route, caller_scope, tuple(accounts), request_id, tuple(backups), model_owner)
        ask = ask._replace(headers=_forwarded(headers))
        return self._run(body, "anthropic", live, ask)

    async def _complete(self, body: object, dialect: str, ask: _Ask) -> Completion:
        completion: Completion | None = None
        async for item in self._run(body, dialect, False, ask):
            if item.completion is not None:
                completion = item.completion
        assert completion is not None  # a run always ends with done or error
        return completion

    async def _run(
        self, body: object, dialect: str, live: bool, ask: _Ask
    ) -> AsyncGenerator[ChatEvent, None]:
        """One request in ``dialect``: its attempts' chunks, then ``done`` or ``error``."""
        config = self.engine.config
        spoken = config.dialect(ask.route)
        if ask.route in config.dialects and spoken != dialect:  # an unknown route is a 404
            raise ChatRequestError(
                "model", f"route {ask.route!r} speaks the {spoken} dialect, not {dialect}"
            )
        payload, input_tokens, max_tokens = parse_chat_body(
            body, output_limit=self.engine.output_tokens_max(ask.route, ask.backups)
        )
        if self._keyed:
            self.check_secrets()
        if self.engine.track_credentials:
            await self.heal(ask.route, ask.backups)
        handle = self.engine.request(
            route=ask.route,
            caller_scope=ask.caller_scope,
            accounts=ask.accounts,
            input_tokens=input_tokens,
            max_output_tokens=max_tokens,
            stream=True,
            backups=ask.backups,
            model_owner=ask.model_owner,
            request_id=ask.request_id,
        )
        run = _Run(
            body=payload,
            live=live,
            instruction=self.engine.config.continuations.get(ask.route, ""),
            forward_usage=wants_usage(payload),
            dialect=dialect,
            headers=ask.headers,
            assembly=MessageAssembly() if dialect == "anthropic" else Assembly(),
        )
        async with handle:
            async for attempt in handle.attempts():
                if run.delivered() and not attempt.continues:
                    if live and not run.instruction:
                        _cannot_continue(attempt, len(run.delivered()))
                        continue
                    if not live:
                        run.assembly.restart()
                        run.restarts += 1
                        yield ChatEvent(kind="restart", dialect=dialect)
                async for event in self._attempt(attempt, run):
                    yield event
        yield self._final(handle, run, ask.route)

    async def _attempt(self, attempt: Attempt, run: _Run) -> AsyncIterator[ChatEvent]:
        """One HTTP attempt, its chunks yielded as they arrive; reports its observation."""
        delivered = run.delivered()
        instruction = run.instruction if delivered and not attempt.continues else ""
        build = anthropic_payload if run.dialect == "anthropic" else upstream_payload
        payload = build(
            run.body, attempt.upstream_model, delivered=delivered, instruction=instruction
        )
        chunks: list[dict[str, Any]] = []
        observer = StreamObserver(
            scrubber=self.engine.scrubber,
            classifier=self.engine.classifier,
            on_chunk=chunks.append,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()  # the monotonic clock: TTFT and duration are measured with it
        total_at = started + self.engine.config.timeouts.total_us / US_PER_S
        response, body, observation = await self._open(attempt, payload, observer, total_at, run)
        first = loop.time() if observer.first_token_us is not None else None
        try:
            for chunk in self._forward(chunks, run):
                yield chunk
            while observation is None and body is not None:
                observation = await self._read(body, observer, total_at)
                for chunk in self._forward(chunks, run):
                    yield chunk
        finally:
            if response is not None:
                await response.aclose()
        assert observation is not None
        run.absorb(observer)
        if response is not None and observation.announced is None:  # a 200 stream's headers
            announced = observe_announced(response, now_us=self.engine.clock.now_us())
            observation = attrs.evolve(observation, announced=announced)
        attempt.observed(
            observation,
            ttft_us=None if first is None else _elapsed_us(started, first),
            duration_us=_elapsed_us(started, loop.time()),
        )
        if observation.failure is None:
            run.served = attempt

    def _forward(self, chunks: list[dict[str, Any]], run: _Run) -> list[ChatEvent]:
        """The chunks parsed since the last call, merged into the answer, as events."""
        if not chunks:
            return []
        events = []
        openai = run.dialect == "openai"
        for chunk in chunks:
            run.assembly.add(chunk)
            if openai and not run.forward_usage and not chunk.get("choices") and "usage" in chunk:
                continue  # the usage chunk the executor asked for, not the client
            events.append(ChatEvent(kind="delta", chunk=chunk, dialect=run.dialect))
        chunks.clear()
        return events

    async def _open(
        self,
        attempt: Attempt,
        payload: Mapping[str, Any],
        observer: StreamObserver,
        total_at: float,
        run: _Run,
    ) -> tuple[httpx.Response | None, AsyncIterator[bytes] | None, Observation | None]:
        """Connect, send, and read up to the first token, all within ``first_token_us``."""
        engine = self.engine
        headers = {"Content-Type": "application/json"}
        key = self.secrets.get(attempt.credential_id)
        path = "/chat/completions"
        if run.dialect == "anthropic":
            path = "/messages"
            headers["anthropic-version"] = ANTHROPIC_VERSION
            headers.update(run.headers)
            if key:
                headers["x-api-key"] = key
        elif key:
            headers["Authorization"] = f"Bearer {key}"
        url = attempt.endpoint.base_url.rstrip("/") + path
        request = self._client.build_request(
            "POST", url, content=orjson.dumps(payload), headers=headers, timeout=self._timeout
        )
        loop = asyncio.get_running_loop()
        first_at = min(total_at, loop.time() + engine.config.timeouts.first_token_us / US_PER_S)
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout_at(first_at):
                response = await self._client.send(request, stream=True)
                if response.status_code != 200:
                    return response, None, await self._error(response)
                # httpcore reads the read timeout when the body is first read.
                request.extensions["timeout"]["read"] = engine.config.timeouts.idle_us / US_PER_S
                body = response.aiter_bytes()
                if self.engine.classifier.reads_headers:  # header rules of in-band errors
                    observer.headers = {k.lower(): v for k, v in response.headers.items()}
                while observer.first_token_us is None:
                    observation = await self._read(body, observer, total_at)
                    if observation is not None:
                        return response, None, observation
                return response, body, None
        except TimeoutError:
            if response is None:
                return None, None, _no_response(engine.clock.now_us(), "no response headers")
            return response, None, observer.timed_out(now_us=engine.clock.now_us())
        except httpx.HTTPError as error:
            return response, None, self._transport_failure(error, observer)

    async def _read(
        self, body: AsyncIterator[bytes], observer: StreamObserver, total_at: float
    ) -> Observation | None:
        """Feed the next chunk of bytes; an observation when the attempt ended."""
        now = self.engine.clock.now_us
        try:
            raw = await anext(body, None)
        except httpx.ReadTimeout:
            return observer.timed_out(now_us=now())
        except httpx.HTTPError as error:
            return self._transport_failure(error, observer)
        if raw is None:
            return observer.end(now_us=now())
        observed = observer.feed(raw, now_us=now())
        if observed is None and asyncio.get_running_loop().time() > total_at:
            return observer.timed_out(now_us=now())
        return observed

    def _transport_failure(self, error: httpx.HTTPError, observer: StreamObserver) -> Observation:
        now = self.engine.clock.now_us()
        if isinstance(error, httpx.ReadTimeout) and observer.first_byte_us is None:
            return observer.timed_out(now_us=now)  # headers in, no token: first-token timeout
        if observer.first_byte_us is not None:
            return observer.broken(error, now_us=now)
        return observe_exception(
            error, now_us=now, scrubber=self.engine.scrubber, classifier=self.engine.classifier
        )

    async def _error(self, response: httpx.Response) -> Observation:
        """Classify an error response from at most :data:`ERROR_BODY_BYTES_MAX` of its body."""
        data = bytearray()
        try:
            async for raw in response.aiter_bytes():
                data += raw
                if len(data) >= ERROR_BODY_BYTES_MAX:
                    break
        except httpx.HTTPError:
            pass  # classify what arrived
        bounded = httpx.Response(
            response.status_code,
            headers=response.headers,
            content=bytes(data[:ERROR_BODY_BYTES_MAX]),
            request=response.request,
        )
        return observe_response(
            bounded,
            now_us=self.engine.clock.now_us(),
            scrubber=self.engine.scrubber,
            classifier=self.engine.classifier,
        )

    def _final(self, handle: RequestHandle, run: _Run, route: str) -> ChatEvent:
        """``done`` with the answer, or ``error`` with the problem its result maps to."""
        result = handle.result
        assert result is not None
        served = run.served
        if isinstance(result, Served) and served is not None:
            usage = run.usage()
            content, calls, finish = _summary(run.assembly)
            completion = Completion(
                request_id=handle.request_id,
                result=result,
                content=content,
                tool_calls=calls,
                finish_reason=finish,
                usage=usage,
                response=run.assembly.completion(served.upstream_model, usage),
                model=served.upstream_model,
                credential_id=served.credential_id,
                attempts=result.attempts,
                restarts=run.restarts,
                dialect=run.dialect,
            )
            return ChatEvent(kind="done", completion=completion, dialect=run.dialect)
        completion = Completion(
            request_id=handle.request_id,
            result=result,
            attempts=getattr(result, "attempts", 0),
            restarts=run.restarts,
            problem=result_problem(self.engine, handle, result, route),
            dialect=run.dialect,
        )
        return ChatEvent(kind="error", completion=completion, dialect=run.dialect)


def _summary(
    assembly: Assembly | MessageAssembly,
) -> tuple[str, tuple[Mapping[str, Any], ...], str | None]:
    """The answer's text, tool calls and finish (stop) reason."""
    if isinstance(assembly, MessageAssembly):
        stop = assembly.stop.get("stop_reason")
        return assembly.text(), tuple(assembly.tool_calls()), str(stop) if stop else None
    first = assembly.first()
    if first is None:
        return "", (), None
    finish = str(first.finish_reason) if first.finish_reason else None
    return "".join(first.parts), tuple(first.tool_calls()), finish


def _cannot_continue(attempt: Attempt, chars: int) -> None:
    """A restart would re-send text a live client has: record why the attempt is not made."""
    attempt.failed(
        FailureClass.CALLER_CANCELLED,
        phase=Phase.MID_STREAM,
        detail=(
            f"not attempted: the client already has {chars} characters and "
            f"{attempt.upstream_model} cannot continue them (no prefill, and the route "
            f"has no continue_instruction)"
        ),
    )


def _elapsed_us(start: float, end: float) -> int:
    """Whole µs between two readings of the event loop's monotonic clock."""
    return max(0, round((end - start) * US_PER_S))


def _no_response(now_us: int, detail: str) -> Observation:
    return observe_exception(httpx.ReadTimeout(detail), now_us=now_us)


def result_problem(engine: Engine, handle: RequestHandle, result: Result, route: str) -> Problem:
    """The one mapping from a request's result to the problem a client gets (docs/errors.md)."""
    scrubber = engine.scrubber
    request_id = handle.request_id
    if isinstance(result, BudgetRejected):
        rejection = result.rejection
        account = engine.state.budget.accounts.get(rejection.account_id or "")
        limit = rejection.limit or 0
        remaining = max(0, limit - (rejection.spent or 0) - (rejection.reserved or 0))
        unit = account.unit.value if account is not None else "micros"
        return render_budget_rejection(
            BudgetRejection(
                request_id=request_id,
                scope=rejection.account_id or "?",
                limit=limit,
                remaining=remaining,
                unit=unit,
            ),
            scrubber=scrubber,
        )
    if isinstance(result, Degradation):
        if result.reason == "unknown_route":
            return render_unknown_route(request_id, route, scrubber=scrubber)
        return render_nothing_available(
            request_id,
            None,
            detail="Nothing usable is configured or resolved for this route.",
            scrubber=scrubber,
        )
    if not isinstance(result, Exhausted):  # pragma: no cover - Served is handled by the caller
        raise UsageError(f"request {request_id} was served: no problem to render")
    report = handle.exhaustion_report()
    if report is None or not report.attempts:
        retry = report.retry_after_us if report is not None else None
        return render_nothing_available(request_id, retry, scrubber=scrubber)
    last = report.attempts[-1]
    terminal = not engine.config.policy.rule(last.failure).fallback
    if terminal and last.failure is not FailureClass.CALLER_CANCELLED:
        problem = FailureProblem(
            request_id=request_id, attempt=last, retry_after_us=report.retry_after_us
        )
        return render_failure(problem, scrubber=scrubber)
    return render_exhaustion(report, scrubber=scrubber)
