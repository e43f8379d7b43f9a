"""The engine's log lines: one per availability change and per failed attempt it records.

Logger ``routeledger.engine``. A cooldown started or extended and a suspension
are WARNING (a pair or credential stopped serving); a cooldown cleared and a
probe allowed are INFO. A failed attempt is INFO (its consequence, if any, is
the cooldown line), except the gateway's own connection pool running out,
WARNING (nothing upstream is to blame: raise ``[http] max_connections``). Each
line carries the fields as ``extra`` (so a JSON formatter writes them as keys)
and reads on its own as text::

    cooldown started: openai-main/gpt-4.1 until 2026-12-03T08:41:02Z (rate_limited, level 1, hint 2 s) request req-1
    attempt failed: openai-main/gpt-4.1 rate_limited (status 429, before_response): Rate limit reached request req-1
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from routeledger.core.events import Event
from routeledger.core.routing import events as rev
from routeledger.core.routing.failures import FailureClass

__all__ = ["LOGGER", "log_availability"]

LOGGER: Final = logging.getLogger("routeledger.engine")

#: Event type -> (what happened, level).
_CHANGES: Final[dict[type[Event], tuple[str, int]]] = {
    rev.CooldownStarted: ("cooldown started", logging.WARNING),
    rev.CooldownExtended: ("cooldown extended", logging.WARNING),
    rev.PairSuspended: ("pair suspended", logging.WARNING),
    rev.CredentialSuspended: ("credential suspended", logging.WARNING),
    rev.CooldownCleared: ("cooldown cleared", logging.INFO),
    rev.ProbeAllowed: ("probe allowed", logging.INFO),
    rev.FailureTolerated: ("failure tolerated", logging.INFO),
    rev.ProbeReleased: ("probe released", logging.INFO),
    rev.ExhaustionPredicted: ("exhaustion predicted", logging.INFO),
    rev.PredictionCleared: ("prediction cleared", logging.INFO),
}


def _iso(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_availability(events: Sequence[Event]) -> None:
    """Log each availability change and failed attempt among ``events`` (``on_appended``)."""
    for evt in events:
        if isinstance(evt, rev.AttemptFailed):
            _log_failure(evt)
            continue
        change = _CHANGES.get(type(evt))
        if change is None or not isinstance(evt, rev.BlockEvent):
            continue
        what, level = change
        if not LOGGER.isEnabledFor(level):
            continue
        scope = evt.credential_id + (f"/{evt.upstream_model}" if evt.upstream_model else "")
        fields: dict[str, object] = {
            "event": type(evt).__name__,
            "credential": evt.credential_id,
            "model": evt.upstream_model,
            "request_id": evt.request_id,
        }
        text = f"{what}: {scope}"
        until = getattr(evt, "until_us", None)
        if until is not None:
            fields["until_us"] = until
            text += f" until {_iso(until)}"
        reason = getattr(evt, "reason", None)
        if reason is not None:
            fields["reason"] = reason.value
            detail = [reason.value]
            if isinstance(evt, rev.CooldownStarted | rev.CooldownExtended):
                fields["level"] = evt.level
                detail.append(f"level {evt.level}")
                if evt.hint_us is not None:
                    fields["hint_us"] = evt.hint_us
                    detail.append(f"hint {evt.hint_us / 1_000_000:g} s")
            elif isinstance(evt, rev.FailureTolerated):
                fields["strikes"] = evt.strikes
                detail.append(f"strike {evt.strikes}")
            text += f" ({', '.join(detail)})"
        LOGGER.log(level, "%s request %s", text, evt.request_id, extra={"routeledger": fields})


def _log_failure(evt: rev.AttemptFailed) -> None:
    own = evt.failure is FailureClass.GATEWAY_POOL_EXHAUSTED
    level = logging.WARNING if own else logging.INFO
    if not LOGGER.isEnabledFor(level):
        return
    fields: dict[str, object] = {
        "event": "AttemptFailed",
        "credential": evt.credential_id,
        "model": evt.upstream_model,
        "request_id": evt.request_id,
        "failure": evt.failure.value,
        "phase": evt.phase.value,
        "status": evt.status,
        "detail": evt.detail,
    }
    where = f"status {evt.status}, " if evt.status is not None else ""
    text = (
        f"{evt.credential_id}/{evt.upstream_model} {evt.failure.value} ({where}{evt.phase.value})"
    )
    if evt.detail:
        text += f": {evt.detail}"
    LOGGER.log(
        level, "attempt failed: %s request %s", text, evt.request_id, extra={"routeledger": fields}
    )
