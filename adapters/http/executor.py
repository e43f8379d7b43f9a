"""The httpx executor for OpenAI-compatible upstreams, with the engine in charge.

``Executor.chat(body, route=..., ...)`` runs one chat completion through the
engine: the engine records the request and its hold, decides each attempt
(credential, upstream model), and the executor performs it over HTTP,
streaming from the upstream so that it can tell *how* an attempt failed:

* per attempt: a connect timeout, a time-to-first-token deadline, a
  stream-idle timeout between chunks, and a total deadline (``[timeouts]``);
* SSE parsing through :class:`~.observe.StreamObserver`: an in-band error
  event in a 200 stream, a malformed chunk, a cut without ``[DONE]``, a stall
  all become classified failures; a complete answer without ``[DONE]`` is a
  success;
* a failure after output started moves to the next target the core picks,
  *continuing* the partial answer as an assistant prefix where that model
  supports prefill, or restarting cleanly where it does not;
* a truncated answer is never returned as complete: the result is
  :class:`~.engine.Served` only after an attempt finished, with the model that
  actually served it and its usage; otherwise the caller gets the engine's
  typed result (exhausted, degraded, budget rejected) and an RFC 9457 problem.

``Executor.stream_chat`` yields the same run as events for callers that stream
to their own clients: text deltas, a ``restart`` marker when a partial answer
is abandoned, and a final ``done`` or ``error`` event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import attrs
import httpx

from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.lifecycle import Attempt
from routeledger.adapters.engine.results import Result, Served
from routeledger.adapters.providers.observe import (
    Observation,
    StreamObserver,
    observe_exception,
    observe_response,
)
from routeledger.adapters.providers.problems import Problem, render_exhaustion
from routeledger.adapters.providers.secrets import EnvironmentSecretReader
from routeledger.core.credentials.secrets import SecretReader
from routeledger.core.time import US_PER_S

__all__ = ["ChatEvent", "Completion", "Executor"]

#: Characters of input assumed per token for the hold estimate. Why: ~4 chars
#: per token is the usual English average; the hold only needs an upper-ish bound.
CHARS_PER_TOKEN: Final = 4


@attrs.frozen(kw_only=True)
class Completion:
    """The outcome of one chat completion run through the engine."""

    request_id: str
    result: Result
    #: The full answer when served; empty otherwise (never a truncated answer).
    content: str = ""
    #: The upstream model that actually served the answer.
    model: str | None = None
    credential_id: str | None = None
    #: Attempts made, and how many abandoned a partial answer to restart cleanly.
    attempts: int = 0
    restarts: int = 0
    #: The problem to return to the client when not served (RFC 9457).
    problem: Problem | None = None


@attrs.frozen(kw_only=True)
class ChatEvent:
    """One event of a streamed run: ``delta``, ``restart``, ``done`` or ``error``."""

    kind: str
    text: str = ""
    completion: Completion | None = None


def _input_tokens(body: Mapping[str, Any]) -> int:
    messages = body.get("messages")
    chars = 0
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        chars += len(content) if isinstance(content, str) else 0
    return -(-chars // CHARS_PER_TOKEN)


class Executor:
    """Runs chat completions against OpenAI-compatible upstreams through an engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        secrets: SecretReader | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.engine = engine
        names = {
            cid: endpoint.secret_env
            for cid, endpoint in engine.config.endpoints.items()
            if endpoint.secret_env
        }
        self.secrets: SecretReader = secrets or EnvironmentSecretReader(names=names)
        engine.scrubber = engine.scrubber.with_secrets(self.secrets.secret_values())
        self._client = client or httpx.AsyncClient()
        self._own_client = client is None

    async def aclose(self) -> None:
        """Close the HTTP client if the executor made it."""
        if self._own_client:
            await self._client.aclose()

    async def chat(
        self,
        body: Mapping[str, Any],
        *,
        route: str,
        caller_scope: str,
        accounts: Sequence[str] = (),
        request_id: str | None = None,
        backups: Sequence[str] = (),
        model_owner: str | None = None,
    ) -> Completion:
        """Run a chat completion; returns when it is served or cannot be."""
        completion: Completion | None = None
        async for item in self.stream_chat(
            body,
            route=route,
            caller_scope=caller_scope,
            accounts=accounts,
            request_id=request_id,
            backups=backups,
            model_owner=model_owner,
        ):
            if item.completion is not None:
                completion = item.completion
        assert completion is not None  # stream_chat always ends with done or error
        return completion

    async def stream_chat(
        self,
        body: Mapping[str, Any],
        *,
        route: str,
        caller_scope: str,
        accounts: Sequence[str] = (),
        request_id: str | None = None,
        backups: Sequence[str] = (),
        model_owner: str | None = None,
    ) -> AsyncIterator[ChatEvent]:
        """Run a chat completion, yielding deltas as they arrive, then ``done`` or ``error``."""
        max_tokens = body.get("max_tokens")
        handle = self.engine.request(
            route=route,
            caller_scope=caller_scope,
            accounts=accounts,
            input_tokens=_input_tokens(body),
            max_output_tokens=max_tokens if isinstance(max_tokens, int) else None,
            stream=True,
            backups=backups,
            model_owner=model_owner,
            request_id=request_id,
        )
        delivered = ""
        restarts = 0
        served: Attempt | None = None
        async with handle:
            async for attempt in handle.attempts():
                if delivered and not attempt.continues:
                    delivered = ""
                    restarts += 1
                    yield ChatEvent(kind="restart")
                pieces: list[str] = []
                observation = await self._perform(attempt, body, delivered, pieces)
                for piece in pieces:
                    yield ChatEvent(kind="delta", text=piece)
                delivered += "".join(pieces)
                # A mid-stream failure is billed through the engine's sink (L11).
                attempt.observed(observation)
                if observation.failure is None:
                    served = attempt
        result = handle.result
        assert result is not None
        if isinstance(result, Served) and served is not None:
            completion = Completion(
                request_id=handle.request_id,
                result=result,
                content=delivered,
                model=served.upstream_model,
                credential_id=served.credential_id,
                attempts=result.attempts,
                restarts=restarts,
            )
            yield ChatEvent(kind="done", completion=completion)
            return
        problem = None
        report = handle.exhaustion_report()  # from the engine's state, not a store read
        if report is not None:
            problem = render_exhaustion(report, scrubber=self.engine.scrubber)
        yield ChatEvent(
            kind="error",
            completion=Completion(
                request_id=handle.request_id,
                result=result,
                attempts=getattr(result, "attempts", 0),
                restarts=restarts,
                problem=problem,
            ),
        )

    async def _perform(
        self, attempt: Attempt, body: Mapping[str, Any], delivered: str, pieces: list[str]
    ) -> Observation:
        """One HTTP attempt; never raises for what the upstream does."""
        timeouts = self.engine.config.timeouts
        endpoint = attempt.endpoint
        messages = list(body.get("messages") or [])
        if delivered and attempt.continues:
            messages.append({"role": "assistant", "content": delivered})
        payload = {
            **body,
            "model": attempt.upstream_model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {}
        key = self.secrets.get(attempt.credential_id)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = endpoint.base_url.rstrip("/") + "/chat/completions"
        timeout = httpx.Timeout(
            connect=timeouts.connect_us / US_PER_S,
            read=timeouts.idle_us / US_PER_S,
            write=timeouts.connect_us / US_PER_S,
            pool=timeouts.connect_us / US_PER_S,
        )
        observer = StreamObserver(scrubber=self.engine.scrubber, on_text=pieces.append)
        now = self.engine.clock.now_us
        started = time.monotonic()
        total_s = timeouts.total_us / US_PER_S
        try:
            async with asyncio.timeout(total_s):
                async with self._client.stream(
                    "POST", url, json=payload, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        return observe_response(
                            response, now_us=now(), scrubber=self.engine.scrubber
                        )
                    chunks = response.aiter_bytes()
                    while True:
                        if observer.first_token_us is None:
                            left = timeouts.first_token_us / US_PER_S - (time.monotonic() - started)
                        else:
                            left = timeouts.idle_us / US_PER_S
                        try:
                            chunk = await asyncio.wait_for(anext(chunks), max(left, 0.001))
                        except StopAsyncIteration:
                            return observer.end(now_us=now())
                        except TimeoutError:
                            return observer.timed_out(now_us=now())
                        observed = observer.feed(chunk, now_us=now())
                        if observed is not None:
                            return observed
        except TimeoutError:
            return observer.timed_out(now_us=now())
        except httpx.ReadTimeout:
            if observer.first_byte_us is None:
                return _timeout_before_response(now())
            return observer.timed_out(now_us=now())
        except httpx.HTTPError as error:
            if observer.first_byte_us is not None:
                return observer.broken(error, now_us=now())
            return observe_exception(error, now_us=now(), scrubber=self.engine.scrubber)


def _timeout_before_response(now_us: int) -> Observation:
    return observe_exception(httpx.ReadTimeout("no response before the deadline"), now_us=now_us)
