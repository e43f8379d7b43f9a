"""The request timeline: every event of a request, in log order, as readable entries.

A request's entries come from:

* its ``request:<id>`` stream — received, each attempt routed (credential,
  upstream model, owner scope, chain position, target, probe) followed by the
  candidates skipped on the way and why, waits, successes, failures (class,
  phase, HTTP status, detail scrubbed again on the way out, billed), each
  outcome with its measured time to first token and duration and the rate
  limits the provider announced on it, and the end: fallback exhausted (with
  its retry time) or degraded;
* for each candidate skipped because it was blocked, the event that blocked
  it, whichever request caused it: the latest ``CooldownStarted`` /
  ``PairSuspended`` / ``CredentialSuspended`` (or operator ``BlockImposed``) of
  that scope before the skip (``blocked_by*`` details: the event, its log
  position, its class, the request that failed), the ``ExhaustionPredicted``
  of a pair predicted exhausted, the ``ProbeAllowed`` of a probe in flight.
  To know them the projection keeps, per pair and credential stream, its
  latest such event (bounded by the configured pairs; a clearing drops it);
* the availability decisions its outcomes caused on ``pair:`` / ``cred:``
  streams (cooldown started or extended, suspended, cleared, probe allowed,
  exhaustion predicted or cleared), which carry the request id;
* its budget hold. **Convention: a gateway places a request's hold with
  ``hold_id == request_id``** (one hold per request; ``docs/budget.md``), so
  ``hold:<request_id>`` events (placed, rejected, adjusted, settled, refunded,
  expired, late usage booked) and the per-account ``AmountPosted`` of that
  hold belong to the request's timeline. A hold under another id is not linked.

Each entry is a frozen value (position, engine time, kind, stream, a tuple of
(name, value) details), so timelines compare and hash canonically.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, ClassVar, TypeAlias

import attrs

from routeledger.core.budget import events as bev
from routeledger.core.events import Event
from routeledger.core.fold import Recorded
from routeledger.core.routing import events as rev
from routeledger.core.streams import credential_stream, pair_stream
from routeledger.projections.base import Projection

__all__ = ["Detail", "Entry", "RequestTimeline"]

#: A detail value: what events carry, flattened to scalars.
Scalar: TypeAlias = str | int | bool | None
Detail: TypeAlias = tuple[tuple[str, Scalar], ...]


@attrs.frozen(kw_only=True)
class Entry:
    """One line of a request's timeline."""

    position: int
    at_us: int
    #: ``received``, ``attempt``, ``skipped``, ``wait``, ``succeeded``, ``failed``,
    #: ``exhausted``, ``degraded``, ``cooldown``, ``suspended``, ``cleared``,
    #: ``probe``, ``predicted``, ``prediction_cleared``, ``hold_placed``, ``hold_rejected``, ``hold_adjusted``,
    #: ``hold_settled``, ``hold_refunded``, ``hold_expired``, ``late_usage``, ``posted``.
    kind: str
    stream_id: str
    details: Detail

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "position": self.position,
            "at_us": self.at_us,
            "kind": self.kind,
            "stream_id": self.stream_id,
            "details": dict(self.details),
        }


def _usage(usage: object) -> Detail:
    return (
        ("cost_micros", getattr(usage, "cost_micros", 0)),
        ("tokens", getattr(usage, "tokens", 0)),
        ("requests", getattr(usage, "requests", 0)),
    )


def _legs(legs: tuple[Any, ...]) -> str:
    return ", ".join(f"{leg.account_id}={leg.amount}" for leg in legs)


class RequestTimeline(Projection):
    """Timelines of every request, or of one (``request_id``), folded from the log."""

    __slots__ = ("blockers", "only", "sample", "scrub", "timelines")
    #: Not part of the projection's identity (its canonical digest).
    DERIVED_SLOTS: ClassVar[tuple[str, ...]] = ("scrub",)

    def __init__(
        self,
        request_id: str | None = None,
        *,
        sample: int = 1,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__()
        #: Scrubs failure details again on the way out (E1, defence in depth: the
        #: adapters scrub them before they are recorded). The audit tools pass
        #: ``routeledger.adapters.providers.scrub.DEFAULT_SCRUBBER``; ``None``
        #: shows details as recorded.
        self.scrub = scrub
        #: Keep only this request's timeline (``None``: every request).
        self.only = request_id
        #: Keep one request in ``sample`` (by CRC-32 of its id: the same ones in
        #: every process); 1 keeps them all. ``replay --verify`` samples to bound memory.
        self.sample = sample
        #: Request id -> entries in log order.
        self.timelines: dict[str, list[Entry]] = {}
        #: ``"<role> <scope stream>"`` -> the ``blocked_by*`` details of the event that
        #: blocks it now (roles ``block``, ``predicted``, ``probe``; see the module docstring).
        self.blockers: dict[str, Detail] = {}

    def _scrubbed(self, detail: str) -> str:
        if not detail:
            return ""
        return self.scrub(detail) if self.scrub is not None else detail

    def entries(self, request_id: str) -> list[Entry] | None:
        """The request's entries, or ``None`` when the log never mentions it."""
        return self.timelines.get(request_id)

    def apply(self, recorded: Recorded) -> None:
        """Fold one recorded event: only the kept requests' events get as far as their handler."""
        evt = recorded.event
        role = _BLOCKER_ROLES.get(type(evt))
        if role is not None:  # every request's: a skip of this request may name it
            self._note_blocker(recorded.position, evt, role)
        handler = self._HANDLERS.get(type(evt))
        if handler is not None:
            # Why here: building an entry's details costs more than the whole
            # test, and a sampled timeline drops most events.
            request_id: str = getattr(
                evt, "hold_id" if isinstance(evt, bev.BudgetEvent) else "request_id"
            )
            if (self.only is None or request_id == self.only) and (
                self.sample == 1 or not zlib.crc32(request_id.encode()) % self.sample
            ):
                handler(self, recorded.position, evt)
        self.position = recorded.position

    def _note_blocker(self, position: int, evt: Event, role: str) -> None:
        """Remember (or forget) the event that blocks a scope, for the skips that follow."""
        stream = evt.stream_id
        if role == "clear":
            self.blockers.pop(f"block {stream}", None)
            self.blockers.pop(f"probe {stream}", None)
            return
        if role == "unpredicted":
            self.blockers.pop(f"predicted {stream}", None)
            return
        reason = getattr(evt, "reason", None)
        details: Detail = (
            ("blocked_by", type(evt).TAG.removeprefix("routeledger.")),
            ("blocked_by_position", position),
            ("blocked_by_request", getattr(evt, "request_id", None)),
            ("blocked_by_reason", reason.value if reason is not None else None),
            ("blocked_by_command", getattr(evt, "command_id", None)),
        )
        if role == "extend":  # the failure that started the cooldown stays its cause
            self.blockers.setdefault(f"block {stream}", details)
            return
        self.blockers[f"{role} {stream}"] = details

    def _blocker(self, skip: rev.Skipped) -> Detail:
        """The ``blocked_by*`` details of a skipped candidate, if it was blocked."""
        credential, model = skip.credential_id, skip.upstream_model
        if credential is None:
            return ()
        pair = pair_stream(credential, model) if model is not None else ""
        key = {
            rev.SkipReason.COOLING_DOWN: f"block {pair}",
            rev.SkipReason.SUSPENDED: f"block {pair}",
            rev.SkipReason.CREDENTIAL_BLOCKED: f"block {credential_stream(credential)}",
            rev.SkipReason.PREDICTED_EXHAUSTED: f"predicted {pair}",
            rev.SkipReason.PROBE_IN_FLIGHT: f"probe {pair}",
        }.get(skip.reason)
        return self.blockers.get(key, ()) if key is not None else ()

    def _add(self, request_id: str, position: int, evt: Event, kind: str, details: Detail) -> None:
        self.timelines.setdefault(request_id, []).append(
            Entry(
                position=position,
                at_us=evt.at_us,
                kind=kind,
                stream_id=evt.stream_id,
                details=details,
            )
        )

    # --- request stream -----------------------------------------------------------

    def _on_received(self, position: int, evt: rev.RequestReceived) -> None:
        self._add(
            evt.request_id,
            position,
            evt,
            "received",
            (
                ("route", evt.route),
                ("backups", ",".join(evt.backups)),
                ("caller_scope", evt.caller_scope),
                ("model_owner", evt.model_owner),
                ("stream", evt.stream),
                ("input_tokens", evt.input_tokens),
                ("deadline_us", evt.deadline_us),
            ),
        )

    def _on_routed(self, position: int, evt: rev.AttemptRouted) -> None:
        self._add(
            evt.request_id,
            position,
            evt,
            "attempt",
            (
                ("attempt_id", evt.attempt_id),
                ("attempt_no", evt.attempt_no),
                ("credential_id", evt.credential_id),
                ("upstream_model", evt.upstream_model),
                ("owner_scope", evt.owner_scope),
                ("chain_position", evt.chain_position),
                ("target", evt.target_path),
                ("member_index", evt.member_index),
                ("probe", evt.probe),
                ("continuation", evt.continuation.value),
                ("skipped_more", evt.skipped_more),
            ),
        )
        self._skips(evt.request_id, position, evt, evt.skipped)

    def _skips(
        self, request_id: str, position: int, evt: Event, skipped: tuple[rev.Skipped, ...]
    ) -> None:
        for skip in skipped:
            self._add(
                request_id,
                position,
                evt,
                "skipped",
                (
                    ("alias", skip.alias),
                    ("chain_position", skip.chain_position),
                    ("credential_id", skip.credential_id),
                    ("upstream_model", skip.upstream_model),
                    ("reason", skip.reason.value),
                    ("recovers_at_us", skip.recovers_at_us),
                    *self._blocker(skip),
                ),
            )

    def _on_wait(self, position: int, evt: rev.WaitDecided) -> None:
        recovering = ", ".join(f"{p.credential_id}/{p.upstream_model}" for p in evt.recovering)
        self._add(
            evt.request_id,
            position,
            evt,
            "wait",
            (
                ("until_us", evt.until_us),
                ("recovering", recovering),
                ("waited_total_us", evt.waited_total_us),
            ),
        )

    def _on_succeeded(self, position: int, evt: rev.AttemptSucceeded) -> None:
        self._add(
            evt.request_id,
            position,
            evt,
            "succeeded",
            (
                ("attempt_id", evt.attempt_id),
                ("credential_id", evt.credential_id),
                ("upstream_model", evt.upstream_model),
                ("evidence", evt.evidence.value),
                ("input_tokens", evt.input_tokens),
                ("output_tokens", evt.output_tokens),
                *_measured(evt),
            ),
        )

    def _on_failed(self, position: int, evt: rev.AttemptFailed) -> None:
        self._add(
            evt.request_id,
            position,
            evt,
            "failed",
            (
                ("attempt_id", evt.attempt_id),
                ("credential_id", evt.credential_id),
                ("upstream_model", evt.upstream_model),
                ("failure", evt.failure.value),
                ("phase", evt.phase.value),
                ("status", evt.status),
                ("detail", self._scrubbed(evt.detail)),
                ("hint_us", evt.hint_us),
                ("billed", evt.billed),
                ("delivered_chars", evt.delivered_chars),
                *_measured(evt),
            ),
        )

    def _on_exhausted(self, position: int, evt: rev.FallbackExhausted) -> None:
        self._add(
            evt.request_id,
            position,
            evt,
            "exhausted",
            (
                ("reason", evt.reason.value),
                ("failures", len(evt.failures)),
                ("retry_at_us", evt.retry_at_us),
            ),
        )

    def _on_degraded(self, position: int, evt: rev.Degraded) -> None:
        self._add(
            evt.request_id,
            position,
            evt,
            "degraded",
            (("reason", evt.reason.value), ("skipped_more", evt.skipped_more)),
        )
        self._skips(evt.request_id, position, evt, evt.skipped)

    # --- availability decisions caused by the request -----------------------------------

    def _on_block(
        self,
        position: int,
        evt: rev.CooldownStarted
        | rev.CooldownExtended
        | rev.PairSuspended
        | rev.CredentialSuspended
        | rev.CooldownCleared
        | rev.ProbeAllowed
        | rev.ProbeReleased
        | rev.FailureTolerated
        | rev.ExhaustionPredicted
        | rev.PredictionCleared,
    ) -> None:
        kind = _BLOCK_KINDS[type(evt)]
        details: list[tuple[str, Scalar]] = [
            ("event", type(evt).TAG.removeprefix("routeledger.")),
            ("credential_id", evt.credential_id),
            ("upstream_model", evt.upstream_model),
            ("attempt_id", evt.attempt_id),
        ]
        until = getattr(evt, "until_us", None)
        if until is not None:
            details.append(("until_us", until))
        reason = getattr(evt, "reason", None)
        if reason is not None:
            details.append(("reason", reason.value))
        clamp = getattr(evt, "clamp", None)
        if clamp is not None:
            details.append(("clamp", clamp.value))
        strikes = getattr(evt, "strikes", None)
        if strikes is not None:
            details.append(("strikes", strikes))
        if isinstance(evt, rev.ExhaustionPredicted):
            details.append(("remaining_requests", evt.remaining_requests))
            details.append(("remaining_tokens", evt.remaining_tokens))
        self._add(evt.request_id, position, evt, kind, tuple(details))

    # --- the request's hold (hold_id == request_id) ---------------------------------------

    def _on_hold_placed(self, position: int, evt: bev.HoldPlaced) -> None:
        self._add(
            evt.hold_id,
            position,
            evt,
            "hold_placed",
            (
                ("legs", _legs(evt.legs)),
                *_usage(evt.estimate),
                ("expires_at_us", evt.expires_at_us),
            ),
        )

    def _on_hold_rejected(self, position: int, evt: bev.HoldRejected) -> None:
        self._add(
            evt.hold_id,
            position,
            evt,
            "hold_rejected",
            (
                ("accounts", ",".join(evt.account_ids)),
                ("rejection", evt.rejection.reason.value),
                ("rejected_by", evt.rejection.account_id),
                *_usage(evt.estimate),
            ),
        )

    def _on_hold_adjusted(self, position: int, evt: bev.HoldAdjusted) -> None:
        self._add(
            evt.hold_id,
            position,
            evt,
            "hold_adjusted",
            (("legs", _legs(evt.legs)), *_usage(evt.estimate)),
        )

    def _on_hold_settled(self, position: int, evt: bev.HoldSettled) -> None:
        self._add(
            evt.hold_id,
            position,
            evt,
            "hold_settled",
            (*_usage(evt.usage), ("overage", evt.overage)),
        )

    def _on_hold_refunded(self, position: int, evt: bev.HoldRefunded) -> None:
        self._add(evt.hold_id, position, evt, "hold_refunded", ())

    def _on_hold_expired(self, position: int, evt: bev.HoldExpired) -> None:
        self._add(
            evt.hold_id, position, evt, "hold_expired", (("expires_at_us", evt.expires_at_us),)
        )

    def _on_late(self, position: int, evt: bev.LateUsageBooked) -> None:
        self._add(evt.hold_id, position, evt, "late_usage", _usage(evt.usage))

    def _on_posted(self, position: int, evt: bev.AmountPosted) -> None:
        self._add(
            evt.hold_id,
            position,
            evt,
            "posted",
            (
                ("account_id", evt.account_id),
                ("held", evt.held),
                ("posted", evt.posted),
                ("overage", evt.overage),
                ("late", evt.late),
            ),
        )

    _HANDLERS: ClassVar[dict[type[Event], Callable[[Any, int, Any], None]]] = {
        rev.RequestReceived: _on_received,
        rev.AttemptRouted: _on_routed,
        rev.WaitDecided: _on_wait,
        rev.AttemptSucceeded: _on_succeeded,
        rev.AttemptFailed: _on_failed,
        rev.FallbackExhausted: _on_exhausted,
        rev.Degraded: _on_degraded,
        rev.CooldownStarted: _on_block,
        rev.CooldownExtended: _on_block,
        rev.PairSuspended: _on_block,
        rev.CredentialSuspended: _on_block,
        rev.CooldownCleared: _on_block,
        rev.ProbeAllowed: _on_block,
        rev.FailureTolerated: _on_block,
        rev.ProbeReleased: _on_block,
        rev.ExhaustionPredicted: _on_block,
        rev.PredictionCleared: _on_block,
        bev.HoldPlaced: _on_hold_placed,
        bev.HoldRejected: _on_hold_rejected,
        bev.HoldAdjusted: _on_hold_adjusted,
        bev.HoldSettled: _on_hold_settled,
        bev.HoldRefunded: _on_hold_refunded,
        bev.HoldExpired: _on_hold_expired,
        bev.LateUsageBooked: _on_late,
        bev.AmountPosted: _on_posted,
    }


_BLOCK_KINDS: dict[type[Event], str] = {
    rev.CooldownStarted: "cooldown",
    rev.CooldownExtended: "cooldown",
    rev.PairSuspended: "suspended",
    rev.CredentialSuspended: "suspended",
    rev.CooldownCleared: "cleared",
    rev.ProbeAllowed: "probe",
    rev.FailureTolerated: "tolerated",
    rev.ProbeReleased: "probe_released",
    rev.ExhaustionPredicted: "predicted",
    rev.PredictionCleared: "prediction_cleared",
}

#: Scope events -> how they change what blocks the scope (``RequestTimeline.blockers``).
_BLOCKER_ROLES: dict[type[Event], str] = {
    rev.CooldownStarted: "block",
    rev.PairSuspended: "block",
    rev.CredentialSuspended: "block",
    rev.BlockImposed: "block",
    rev.CooldownExtended: "extend",
    rev.CooldownCleared: "clear",
    rev.BlockLifted: "clear",
    rev.ProbeAllowed: "probe",
    rev.ExhaustionPredicted: "predicted",
    rev.PredictionCleared: "unpredicted",
}


def _measured(evt: rev.AttemptSucceeded | rev.AttemptFailed) -> Detail:
    """An outcome's measured times, then what the provider announced on it (if anything)."""
    measured: Detail = (("ttft_us", evt.ttft_us), ("duration_us", evt.duration_us))
    announced = evt.announced
    if announced is None:
        return measured
    return (
        *measured,
        ("remaining_requests", announced.remaining_requests),
        ("remaining_tokens", announced.remaining_tokens),
        ("requests_reset_us", announced.requests_reset_us),
        ("tokens_reset_us", announced.tokens_reset_us),
    )
