"""A LiteLLM ``Router`` that picks deployments with RouteLedger and reports outcomes to it.

::

    routing = RouteLedgerRouting.for_router(router, router_settings={"cooldown_time": 30})
    response = await router.acompletion(model="gpt-4o", messages=[...])
    routing.close()

``for_router`` converts the router's deployments with the importer
(``litellm_config``), opens an engine on them and attaches itself: a custom
routing strategy (``Router.register_plugin``) that asks the engine which
deployment serves each attempt, and a ``CustomLogger`` (``litellm.callbacks``)
that reports each attempt's success (with its usage) or failure (classified from
LiteLLM's exception: status, headers, Retry-After) to the engine.

**Who decides what.** LiteLLM keeps its retry loop: whether a failed call is
tried again (``num_retries``, its retry policy) and its model-group fallbacks.
Every attempt of that loop asks the strategy, so RouteLedger decides *which*
deployment each one uses — from its log: cooldowns with backoff and provider
hints, suspensions, half-open probes, tolerated failures (``allowed_fails``),
credential lifecycle, route fallbacks — and records the attempt and its outcome.
Each attempt is one RouteLedger request with one attempt; the per-request
parts of RouteLedger's policy (``retry_same``, ``attempts_max``, waits across
attempts, an exhaustion report for the whole call) are LiteLLM's loop instead.
Why not one RouteLedger request per LiteLLM call: LiteLLM tells a callback
about every attempt but not that a failed call has ended (it raises to its
caller), so such a request would stay open — its budget hold held — whenever
LiteLLM stops retrying first (docs/integrations.md has the evidence).

Only ``Router.acompletion`` (and the other async endpoints) are supported: the
engine's attempts are async here; ``Router.completion`` gets a ``UsageError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

import attrs

from routeledger.adapters.engine import Engine, RequestHandle
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.lifecycle import Attempt
from routeledger.adapters.integrations.litellm_config import convert_litellm_config
from routeledger.core.errors import RouteLedgerError, UsageError
from routeledger.core.routing import FailureClass

__all__ = ["NoDeployment", "RouteLedgerRouting"]

#: How long a pick waits for the outcome of the same call's previous attempt, in
#: seconds. Why: LiteLLM dispatches an attempt's failure callbacks as a task as
#: the attempt fails, so they run within a few loop turns; 5 s means they were lost.
OUTCOME_WAIT_S: Final = 5.0
#: Most attempts awaiting their outcome at once. Why: one per call in flight; a
#: caller that cancels a call mid-attempt leaves one behind, and 10,000 bounds
#: that leak while far above any one process's concurrency.
SESSIONS_MAX: Final = 10_000

_CustomRoutingStrategyBase: Any = importlib.import_module(
    "litellm.types.router"
).CustomRoutingStrategyBase
_CustomLogger: Any = importlib.import_module("litellm.integrations.custom_logger").CustomLogger


class NoDeployment(RouteLedgerError):
    """RouteLedger has no usable deployment for the route now (raised to LiteLLM's pick)."""


@attrs.define
class _Session:
    """One attempt handed to LiteLLM, until its outcome is reported."""

    handle: RequestHandle
    attempts: AsyncIterator[Attempt]
    attempt: Attempt
    done: asyncio.Event = attrs.field(factory=asyncio.Event)


class RouteLedgerRouting:
    """RouteLedger as a LiteLLM Router's deployment picker and outcome sink.

    ``deployments`` maps each of the engine's (credential, model) pairs to the
    ``model_info.id`` of the router deployments it stands for.
    """

    def __init__(
        self,
        engine: Engine,
        router: Any,
        deployments: Mapping[tuple[str, str], Sequence[str]],
        *,
        caller_scope: str = "litellm",
        owns_engine: bool = False,
    ) -> None:
        self.engine = engine
        self.router = router
        self.caller_scope = caller_scope
        self._pairs = {pair: tuple(ids) for pair, ids in deployments.items()}
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._owns_engine = owns_engine
        self.strategy = _Strategy(self)
        self.callbacks = _Callbacks(self)

    @classmethod
    def for_router(
        cls,
        router: Any,
        *,
        router_settings: Mapping[str, Any] | None = None,
        extra_toml: str = "",
        store_url: str = "memory://",
        caller_scope: str = "litellm",
    ) -> RouteLedgerRouting:
        """Convert ``router``'s deployments (and ``router_settings``, LiteLLM's names) into an
        engine on ``store_url``, then :meth:`attach` to ``router``.

        ``extra_toml`` is appended to the converted configuration: the sections a
        LiteLLM config has no equivalent for (``[limits]``, ``[hints]``, ``[engine]``,
        ``[[classification.rules]]``).
        """
        entries = [dict(entry) for entry in router.registry().all()]
        conversion = convert_litellm_config(
            {"model_list": entries, "router_settings": dict(router_settings or {})}
        )
        text = f"{conversion.toml}\n{extra_toml}"
        engine = Engine.open(store_url, parse_config(text, source="<litellm router>"))
        deployments = {
            pair: [str(entries[index]["model_info"]["id"]) for index in indexes]
            for pair, indexes in conversion.members.items()
        }
        routing = cls(engine, router, deployments, caller_scope=caller_scope, owns_engine=True)
        return routing.attach()

    def attach(self) -> RouteLedgerRouting:
        """Register the strategy on the router and the callbacks with litellm."""
        self.router.register_plugin(self.strategy)
        # In place, through LiteLLM's manager: its router holds the lists themselves.
        importlib.import_module("litellm").logging_callback_manager.add_litellm_callback(
            self.callbacks
        )
        return self

    def close(self) -> None:
        """Detach the callbacks; the engine too when :meth:`for_router` opened it. Attempts
        still awaiting an outcome are left as the caller's (nothing is blamed)."""
        manager = importlib.import_module("litellm").logging_callback_manager
        manager.remove_callback_from_all_lists(self.callbacks)
        self._sessions.clear()
        if self._owns_engine:
            self.engine.close()

    @property
    def awaiting(self) -> int:
        """Attempts handed to LiteLLM whose outcome has not been reported yet."""
        return len(self._sessions)

    # -- the pick --

    async def pick(self, model: str, request: Mapping[str, Any]) -> Any:
        """The deployment RouteLedger routes this attempt of a call of ``model`` to."""
        trace = str(request.get("litellm_trace_id") or "")
        await self._settle_previous(trace)
        if len(self._sessions) >= SESSIONS_MAX:
            raise UsageError(f"more than {SESSIONS_MAX} LiteLLM attempts await their outcome")
        handle = self.engine.request(route=model, caller_scope=self.caller_scope)
        await handle.__aenter__()
        attempts = handle.attempts()
        try:
            attempt = await anext(attempts)
        except StopAsyncIteration:
            await handle.__aexit__(None, None, None)
            raise NoDeployment(f"route {model!r}: {handle.result}") from None
        deployment = self._deployment(attempt.credential_id, attempt.upstream_model)
        if deployment is None:
            error = UsageError(
                f"RouteLedger routed {model!r} to {attempt.credential_id}/"
                f"{attempt.upstream_model}, which is no deployment of this router"
            )
            await self._leave(_Session(handle, attempts, attempt), error)
            raise error
        self._sessions[(trace, str(deployment["model_info"]["id"]))] = _Session(
            handle, attempts, attempt
        )
        return deployment

    def _deployment(self, credential: str, model: str) -> Any:
        """The first router deployment (its document, as the registry lists it) of the pair."""
        ids = self._pairs.get((credential, model), ())
        for entry in self.router.registry().all():
            if str(entry["model_info"]["id"]) in ids:
                return entry
        return None

    async def _settle_previous(self, trace: str) -> None:
        """Wait for the outcome of this call's attempt still in flight, if any (bounded)."""
        for key, session in list(self._sessions.items()):
            if key[0] != trace:
                continue
            try:
                await asyncio.wait_for(session.done.wait(), OUTCOME_WAIT_S)
            except TimeoutError:
                if self._sessions.pop(key, None) is session:
                    session.attempt.failed(
                        FailureClass.UNKNOWN,
                        detail="LiteLLM asked for another deployment before this attempt's outcome",
                    )
                    await self._leave(session, None)

    # -- outcomes --

    def _session(self, kwargs: Mapping[str, Any]) -> _Session | None:
        params = kwargs.get("litellm_params") or {}
        info = params.get("model_info") or {}
        key = (str(kwargs.get("litellm_trace_id") or ""), str(info.get("id")))
        return self._sessions.pop(key, None)

    async def succeeded(self, kwargs: Mapping[str, Any], response: Any) -> None:
        """LiteLLM's success event: the attempt served (with the usage it reported)."""
        session = self._session(kwargs)
        if session is None:
            return
        usage = getattr(response, "usage", None)
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
        session.attempt.succeeded(
            input_tokens=prompt if isinstance(prompt, int) else None,
            output_tokens=completion if isinstance(completion, int) else None,
        )
        await self._leave(session, None)

    async def failed(self, kwargs: Mapping[str, Any]) -> None:
        """LiteLLM's failure event: classify its exception and record it on the attempt."""
        session = self._session(kwargs)
        if session is None:
            return  # a refused pick, or an attempt already settled
        error = kwargs.get("exception")
        if isinstance(error, BaseException):
            session.attempt.failed_from_exception(error)
        else:
            session.attempt.failed(FailureClass.UNKNOWN, detail="LiteLLM reported no exception")
        await self._leave(session, None)

    async def _leave(self, session: _Session, error: BaseException | None) -> None:
        try:
            with contextlib.suppress(RuntimeError):  # already closed
                await session.attempts.aclose()  # type: ignore[attr-defined]
            await session.handle.__aexit__(
                type(error) if error else None, error, error.__traceback__ if error else None
            )
        finally:
            session.done.set()


class _Strategy(_CustomRoutingStrategyBase):  # type: ignore[misc]
    """LiteLLM's custom routing strategy: every pick is RouteLedger's."""

    def __init__(self, routing: RouteLedgerRouting) -> None:
        self._routing = routing

    async def async_get_available_deployment(
        self,
        model: str,
        messages: list[dict[str, str]] | None = None,
        input: str | list[object] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, object] | None = None,
    ) -> Any:
        return await self._routing.pick(model, request_kwargs or {})

    def get_available_deployment(self, *args: object, **kwargs: object) -> Any:
        raise UsageError(
            "RouteLedger's LiteLLM strategy serves the async endpoints (Router.acompletion)"
        )


class _Callbacks(_CustomLogger):  # type: ignore[misc]
    """LiteLLM's per-attempt success and failure events, reported to RouteLedger."""

    def __init__(self, routing: RouteLedgerRouting) -> None:
        super().__init__()
        self._routing = routing

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await self._routing.succeeded(kwargs, response_obj)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await self._routing.failed(kwargs)
