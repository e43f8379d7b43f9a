"""The availability board: every credential x model pair (and credential-wide scope) seen in the log.

For each scope (``pair:<c>:<m>``, or ``cred:<c>`` credential-wide) the board
keeps the values the routing fold keeps (until when it is blocked, whether
that is a suspension, the failure class and clamp behind it, whether a
half-open probe is needed and in flight), plus *since which event* (log
position and engine time) the scope has been in its current condition.
Pairs appear as soon as an attempt is routed to them, so healthy pairs are on
the board too.

:meth:`AvailabilityBoard.rows` computes each scope's status at ``now_us``
with the same rule as :func:`routeledger.core.routing.state.status_at`:
``available``, ``cooling``, ``suspended``, ``half_open`` (one probe
allowed) or ``probing`` (that probe is in flight).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from routeledger.core.events import Event
from routeledger.core.routing.events import (
    AttemptRouted,
    BlockImposed,
    BlockLifted,
    Clamp,
    CooldownCleared,
    CooldownExtended,
    CooldownStarted,
    CredentialSuspended,
    PairSuspended,
    ProbeAllowed,
    ProbeReleased,
    ScopeEvent,
)
from routeledger.core.routing.failures import FailureClass
from routeledger.core.routing.state import Status
from routeledger.core.streams import pair_stream
from routeledger.projections.base import Projection

__all__ = ["AvailabilityBoard", "AvailabilityRow", "ScopeRecord"]


class ScopeRecord:
    """What the board folded for one scope (read-only outside the fold)."""

    __slots__ = (
        "clamp",
        "credential_id",
        "level",
        "needs_probe",
        "probe_until_us",
        "reason",
        "since_at_us",
        "since_position",
        "suspended",
        "until_us",
        "upstream_model",
    )

    def __init__(self, credential_id: str, upstream_model: str | None) -> None:
        self.credential_id = credential_id
        #: ``None`` for the credential-wide scope.
        self.upstream_model = upstream_model
        self.until_us = 0
        self.suspended = False
        self.reason: FailureClass | None = None
        self.clamp: Clamp | None = None
        self.level = 0
        self.needs_probe = False
        self.probe_until_us = 0
        #: The event that put the scope in its current condition.
        self.since_position = 0
        self.since_at_us = 0

    def status_at(self, now_us: int) -> Status:
        """The scope's status at ``now_us`` (the routing state's rule)."""
        if self.until_us > now_us:
            return Status.SUSPENDED if self.suspended else Status.COOLING
        if not self.needs_probe:
            return Status.AVAILABLE
        if self.probe_until_us > now_us:
            return Status.PROBING
        return Status.HALF_OPEN


@attrs.frozen(kw_only=True)
class AvailabilityRow:
    """One line of the board at an instant."""

    credential_id: str
    #: ``None``: the credential-wide scope (all its models).
    upstream_model: str | None
    status: Status
    #: Blocked (or probing) until this engine time; ``None`` when available.
    until_us: int | None
    #: The failure class behind the block (kept while half-open; ``None`` for an operator's).
    reason: FailureClass | None
    #: What the hint clamp did (cooldowns only).
    clamp: Clamp | None
    level: int
    since_position: int
    since_at_us: int

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "credential_id": self.credential_id,
            "upstream_model": self.upstream_model,
            "status": self.status.value,
            "until_us": self.until_us,
            "reason": None if self.reason is None else self.reason.value,
            "clamp": None if self.clamp is None else self.clamp.value,
            "level": self.level,
            "since_position": self.since_position,
            "since_at_us": self.since_at_us,
        }


class AvailabilityBoard(Projection):
    """Every scope's availability, folded from routing events."""

    __slots__ = ("scopes",)

    def __init__(self) -> None:
        super().__init__()
        #: Stream id (``pair:<c>:<m>`` or ``cred:<c>``) -> record.
        self.scopes: dict[str, ScopeRecord] = {}

    def _scope(self, evt: ScopeEvent, position: int) -> ScopeRecord:
        record = self.scopes.get(evt.stream_id)
        if record is None:
            record = self.scopes[evt.stream_id] = ScopeRecord(evt.credential_id, evt.upstream_model)
        record.since_position = position
        record.since_at_us = evt.at_us
        return record

    def _on_routed(self, position: int, evt: AttemptRouted) -> None:
        stream = pair_stream(evt.credential_id, evt.upstream_model)
        if stream not in self.scopes:
            record = self.scopes[stream] = ScopeRecord(evt.credential_id, evt.upstream_model)
            record.since_position = position
            record.since_at_us = evt.at_us

    def _on_cooldown(self, position: int, evt: CooldownStarted | CooldownExtended) -> None:
        record = self._scope(evt, position)
        record.until_us = evt.until_us
        record.suspended = False
        record.reason = evt.reason
        record.clamp = evt.clamp
        record.level = evt.level
        record.needs_probe = True
        record.probe_until_us = 0

    def _on_suspended(self, position: int, evt: PairSuspended | CredentialSuspended) -> None:
        record = self._scope(evt, position)
        record.until_us = evt.until_us
        record.suspended = True
        record.reason = evt.reason
        record.clamp = None
        record.needs_probe = True
        record.probe_until_us = 0

    def _on_imposed(self, position: int, evt: BlockImposed) -> None:
        record = self._scope(evt, position)
        record.until_us = evt.until_us
        record.suspended = True
        record.reason = None
        record.clamp = None
        record.needs_probe = True
        record.probe_until_us = 0

    def _on_cleared(self, position: int, evt: CooldownCleared | BlockLifted) -> None:
        record = self._scope(evt, position)
        record.until_us = 0
        record.suspended = False
        record.reason = None
        record.clamp = None
        record.level = 0
        record.needs_probe = False
        record.probe_until_us = 0

    def _on_probe(self, position: int, evt: ProbeAllowed) -> None:
        self._scope(evt, position).probe_until_us = evt.until_us

    def _on_probe_released(self, position: int, evt: ProbeReleased) -> None:
        self._scope(evt, position).probe_until_us = 0

    _HANDLERS: ClassVar[dict[type[Event], Callable[[Any, int, Any], None]]] = {
        AttemptRouted: _on_routed,
        CooldownStarted: _on_cooldown,
        CooldownExtended: _on_cooldown,
        PairSuspended: _on_suspended,
        CredentialSuspended: _on_suspended,
        CooldownCleared: _on_cleared,
        ProbeAllowed: _on_probe,
        ProbeReleased: _on_probe_released,
        BlockLifted: _on_cleared,
        BlockImposed: _on_imposed,
    }

    def document(self, now_us: int) -> dict[str, object]:
        """The board at ``now_us`` as JSON-ready data (``routeledger status --json``)."""
        return {
            "at_us": now_us,
            "position": self.position,
            "scopes": [row.as_json() for row in self.rows(now_us)],
        }

    def rows(self, now_us: int) -> list[AvailabilityRow]:
        """Every scope at ``now_us``, sorted by credential then model (credential-wide first)."""
        rows = []
        for record in self.scopes.values():
            status = record.status_at(now_us)
            until: int | None = None
            if status in (Status.COOLING, Status.SUSPENDED):
                until = record.until_us
            elif status is Status.PROBING:
                until = record.probe_until_us
            rows.append(
                AvailabilityRow(
                    credential_id=record.credential_id,
                    upstream_model=record.upstream_model,
                    status=status,
                    until_us=until,
                    reason=record.reason,
                    clamp=record.clamp,
                    level=record.level,
                    since_position=record.since_position,
                    since_at_us=record.since_at_us,
                )
            )
        rows.sort(key=lambda row: (row.credential_id, row.upstream_model or ""))
        return rows

    def blocked_at(self, now_us: int) -> int:
        """How many scopes are cooling or suspended at ``now_us``."""
        return sum(1 for record in self.scopes.values() if record.until_us > now_us)
