"""OpenTelemetry spans per request and per attempt, after the GenAI semantic conventions.

Off unless configured: ``[telemetry] otel = true`` in the gateway's TOML (the
global tracer provider), or ``Engine(tracer_provider=...)``. Only then is this
module imported, and with it ``opentelemetry-api`` (the ``otel`` extra); an
engine without telemetry makes no span and pays one ``None`` check per step.

Spans (attribute names from the OpenTelemetry semantic conventions for GenAI
client spans, v1.37+: ``gen_ai.provider.name`` replaced ``gen_ai.system``;
https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/):

* **The request** — ``chat {route}``, kind ``INTERNAL``, a child of whatever
  span is current when the request is entered (a server span, the caller's
  own). The conventions ask a GenAI span to "cover the duration of the logical
  operation with all retries": this one does, from entry to the settlement
  (for a streamed answer, until the stream ends). ``gen_ai.request.model`` is
  the route the caller named; when served, ``gen_ai.response.model``,
  ``gen_ai.provider.name`` and ``gen_ai.usage.*`` are the serving attempt's;
  otherwise ``error.type`` is how it ended (``exhausted``, ``degraded``,
  ``budget_rejected``) or the exception's class name.
* **Each attempt** — ``chat {upstream_model}``, kind ``CLIENT`` (one call to a
  provider), a child of the request span: ``gen_ai.provider.name`` (the
  credential's ``provider``), ``gen_ai.request.model``, ``server.address`` and
  ``server.port`` (the credential's ``base_url``); on success
  ``gen_ai.response.model`` and the usage the provider reported; on failure
  ``error.type`` is the failure class (``rate_limited``, ``timeout``…, the
  low-cardinality list in docs/errors.md) and ``http.response.status_code`` the
  status, if any.

Both carry ``routeledger.*`` attributes: the request id, route, and per
attempt the credential, attempt number and id, whether it is a probe, and the
members routing skipped to get there (``credential/model:reason``).

Spans are not made current (an attempt's span is not the parent of the HTTP
client's own spans): the request and attempt objects carry them across the
caller's awaits and threads, where a context token could not be detached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from routeledger.adapters.engine.results import (
    BudgetRejected,
    Degradation,
    Exhausted,
    Served,
)
from routeledger.core.routing import Failed, Succeeded
from routeledger.core.routing.events import AttemptRouted, Skipped

if TYPE_CHECKING:  # pragma: no cover
    from routeledger.adapters.engine.config import EngineConfig
    from routeledger.adapters.engine.lifecycle import RequestHandle

__all__ = ["OPERATION", "TRACER_NAME", "Telemetry"]

#: The tracer's instrumentation scope name.
TRACER_NAME: Final = "routeledger"
#: ``gen_ai.operation.name``: every request the engine routes is a chat completion
#: (OpenAI chat completions and Anthropic messages alike).
OPERATION: Final = "chat"
#: Skipped members listed on an attempt span. Why: AttemptRouted records at most
#: a handful (the rest are counted in ``skipped_more``); a span stays small.
SKIPPED_LISTED_MAX: Final = 16


class Telemetry:
    """Makes and ends the engine's spans (one instance per engine)."""

    def __init__(
        self, config_of: Callable[[], EngineConfig], tracer_provider: Any | None = None
    ) -> None:
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer = provider.get_tracer(TRACER_NAME)
        #: The engine's configuration now (it may be replaced while it runs).
        self._config_of = config_of

    def _provider(self, credential_id: str) -> str | None:
        """The credential's ``provider`` (``gen_ai.provider.name``), if configured."""
        try:
            return self._config_of().policy.credential(credential_id).provider
        except KeyError:
            return None

    def request_started(self, handle: RequestHandle) -> Span:
        """The request's span, from entry (a child of the current span, if any)."""
        start = handle.start
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.request.model": start.route,
            "routeledger.request_id": start.request_id,
            "routeledger.route": start.route,
            "routeledger.stream": start.stream,
        }
        if start.backups:
            attributes["routeledger.backups"] = start.backups
        if handle.accounts:
            attributes["routeledger.accounts"] = handle.accounts
        return self.tracer.start_span(
            f"{OPERATION} {start.route}", kind=SpanKind.INTERNAL, attributes=attributes
        )

    def attempt_started(self, request: Span, routed: AttemptRouted, base_url: str) -> Span:
        """An attempt's span, a child of its request's."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.request.model": routed.upstream_model,
            "routeledger.request_id": routed.request_id,
            "routeledger.attempt_id": routed.attempt_id,
            "routeledger.attempt": routed.attempt_no,
            "routeledger.credential_id": routed.credential_id,
            "routeledger.probe": routed.probe,
            "routeledger.continuation": routed.continuation.value,
        }
        provider = self._provider(routed.credential_id)
        if provider:
            attributes["gen_ai.provider.name"] = provider
        if base_url:
            _server(attributes, base_url)
        if routed.skipped:
            attributes["routeledger.skipped"] = _skipped(routed.skipped)
        if routed.skipped_more:
            attributes["routeledger.skipped_more"] = routed.skipped_more
        return self.tracer.start_span(
            f"{OPERATION} {routed.upstream_model}",
            context=trace.set_span_in_context(request),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )

    def attempt_ended(self, span: Span, model: str, outcome: Succeeded | Failed) -> None:
        """End an attempt's span with its outcome."""
        if isinstance(outcome, Succeeded):
            span.set_attribute("gen_ai.response.model", model)
            span.set_attribute("routeledger.evidence", outcome.evidence.value)
            if outcome.input_tokens or outcome.output_tokens:
                span.set_attribute("gen_ai.usage.input_tokens", outcome.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", outcome.output_tokens)
        else:
            failure = outcome.failure.value
            span.set_attribute("error.type", failure)
            span.set_attribute("routeledger.failure", failure)
            span.set_attribute("routeledger.failure_phase", outcome.phase.value)
            if outcome.status is not None:
                span.set_attribute("http.response.status_code", outcome.status)
            if outcome.hint_us is not None:
                span.set_attribute("routeledger.retry_after_us", outcome.hint_us)
            if outcome.billed:
                span.set_attribute("routeledger.billed", True)
            span.set_status(Status(StatusCode.ERROR, failure))
        span.end()

    def request_ended(self, span: Span, handle: RequestHandle, error: BaseException | None) -> None:
        """End the request's span with how the request ended."""
        result = handle.result
        failed: str | None = None
        if isinstance(result, Served):
            span.set_attribute("routeledger.result", "served")
            span.set_attribute("gen_ai.response.model", result.upstream_model)
            provider = self._provider(result.credential_id)
            if provider:
                span.set_attribute("gen_ai.provider.name", provider)
            span.set_attribute("gen_ai.usage.input_tokens", result.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", result.output_tokens)
            span.set_attribute("routeledger.credential_id", result.credential_id)
            span.set_attribute("routeledger.attempts", result.attempts)
            span.set_attribute("routeledger.cost_micros", result.cost_micros)
        elif isinstance(result, Exhausted):
            failed = "exhausted"
            span.set_attribute("routeledger.attempts", result.attempts)
            span.set_attribute("routeledger.failures", [f.value for f in result.failures])
            if result.retry_at_us is not None:
                span.set_attribute("routeledger.retry_at_us", result.retry_at_us)
        elif isinstance(result, Degradation):
            failed = "degraded"
            span.set_attribute("routeledger.degraded_reason", result.reason)
        elif isinstance(result, BudgetRejected):
            failed = "budget_rejected"
            span.set_attribute("routeledger.budget_rejection", result.rejection.reason.value)
        elif error is not None:
            failed = _error_type(error)
            if isinstance(error, Exception):
                span.record_exception(error)
        else:
            failed = "no_result"
        if failed is not None:
            span.set_attribute("error.type", failed)
            span.set_attribute("routeledger.result", failed)
            span.set_status(Status(StatusCode.ERROR, failed))
        span.end()


def _server(attributes: dict[str, Any], base_url: str) -> None:
    """``server.address`` and ``server.port`` of a credential's base URL."""
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError:
        return
    if parts.hostname:
        attributes["server.address"] = parts.hostname
        default = {"https": 443, "http": 80}.get(parts.scheme)
        if port is not None or default is not None:
            attributes["server.port"] = port if port is not None else default


def _skipped(skipped: Sequence[Skipped]) -> list[str]:
    """``credential/model:reason`` (or ``alias:reason``) per skipped member."""
    shown: list[str] = []
    for member in skipped[:SKIPPED_LISTED_MAX]:
        where = (
            f"{member.credential_id}/{member.upstream_model}"
            if member.credential_id
            else member.alias
        )
        shown.append(f"{where}:{member.reason.value}")
    return shown


def _error_type(error: BaseException) -> str:
    """``error.type`` of a request left by an exception: its class, ``cancelled`` for a cancel."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
