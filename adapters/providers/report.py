"""Failure reports built from the log (I4): every failed attempt is already an event.

``exhaustion_report(events)`` reads one request's events (its ``request:<id>``
stream, in order) and returns the :class:`~.problems.ExhaustionReport` the
renderers turn into problem+json or a stream error chunk: the ordered failed
attempts with their class, HTTP status, scrubbed detail and billing, and the
Retry-After the core decided. Nothing is re-classified here and nothing secret
can appear: details were scrubbed before they were recorded, and are scrubbed
again by the renderers.
"""

from __future__ import annotations

from collections.abc import Iterable

from routeledger.adapters.providers.problems import ExhaustionReport, FailedAttempt
from routeledger.core.events import Event
from routeledger.core.routing.events import AttemptFailed, FallbackExhausted

__all__ = ["exhaustion_report", "failed_attempts"]


def failed_attempts(events: Iterable[Event]) -> tuple[FailedAttempt, ...]:
    """The request's failed attempts, in the order they happened."""
    return tuple(
        FailedAttempt(
            credential_id=evt.credential_id,
            upstream_model=evt.upstream_model,
            failure=evt.failure,
            status=evt.status,
            detail=evt.detail,
            billed=evt.billed,
        )
        for evt in events
        if isinstance(evt, AttemptFailed)
    )


def exhaustion_report(request_id: str, events: Iterable[Event]) -> ExhaustionReport | None:
    """The exhaustion report of ``request_id``, or ``None`` if it was not exhausted."""
    ordered = [e for e in events if getattr(e, "request_id", None) == request_id]
    exhausted = next((e for e in ordered if isinstance(e, FallbackExhausted)), None)
    if exhausted is None:
        return None
    retry_after_us = None
    if exhausted.retry_at_us is not None:
        retry_after_us = max(0, exhausted.retry_at_us - exhausted.at_us)
    return ExhaustionReport(
        request_id=request_id,
        attempts=failed_attempts(ordered),
        retry_after_us=retry_after_us,
    )
