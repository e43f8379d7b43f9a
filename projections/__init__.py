"""Read models folded from the log, kept apart from the decision state (STYLE item 15).

Each projection is a pure fold over recorded events (:mod:`.base`), rebuildable
from scratch and resumable from its tracked ``position``:

* :class:`~.availability.AvailabilityBoard` — every credential x model (and
  credential-wide scope): status, until when, why, since which event;
* :class:`~.budget.BudgetBoard` — per account: limit, spends, reserved, open
  holds and their age, overage;
* :class:`~.timeline.RequestTimeline` — every event of a request in order
  (holds are linked by ``hold_id == request_id``);
* :class:`~.metrics.Metrics` — the Prometheus text exposition format.

The canonical state hash (D1) is the store's
(``routeledger.adapters.store.canonical``); verified replay and what-if are
audit tools (``routeledger.adapters.audit``).
"""

from __future__ import annotations

from routeledger.projections.availability import AvailabilityBoard, AvailabilityRow
from routeledger.projections.base import Projection, rebuild
from routeledger.projections.budget import AccountRow, BudgetBoard, OpenHold
from routeledger.projections.metrics import Metrics
from routeledger.projections.timeline import Entry, RequestTimeline

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
    "rebuild",
]
