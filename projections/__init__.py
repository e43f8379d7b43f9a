"""Read models folded from the log, kept apart from the decision state (STYLE item 15).

Each projection is a pure fold over recorded events (:mod:`.base`), rebuildable
from scratch and resumable from its tracked ``position``:

* :class:`~.availability.AvailabilityBoard` — every credential x model (and
  credential-wide scope): status, until when, why, since which event;
* :class:`~.budget.BudgetBoard` — per account: limit, spends, reserved, open
  holds and their age, overage;
* :class:`~.timeline.RequestTimeline` — every event of a request in order
  (holds are linked by ``hold_id == request_id``);
* :class:`~.metrics.Metrics` — the Prometheus text exposition format;
* :mod:`.canonical` — canonical bytes and the state hash of a folded state (D1).
"""

from __future__ import annotations

from .availability import AvailabilityBoard, AvailabilityRow
from .base import Projection, rebuild
from .budget import AccountRow, BudgetBoard, OpenHold
from .canonical import canonical_bytes, state_hash
from .metrics import Metrics
from .timeline import Entry, RequestTimeline

__all__ = [
    "AccountRow",
    "AvailabilityBoard",
    "AvailabilityRow",
    "BudgetBoard",
    "Entry",
    "Metrics",
    "OpenHold",
    "Projection",
    "RequestTimeline",
    "canonical_bytes",
    "rebuild",
    "state_hash",
]
