"""The fold of the log: an event of no context still counts and moves engine time."""

from __future__ import annotations

import attrs

from routeledger.core.events import Event, EventRegistry, Origin, event
from routeledger.core.fold import Recorded, fold_log


def test_an_event_of_no_context_goes_through_every_context_unchanged() -> None:
    """An event no context owns is offered to every context, counted, and moves engine time."""

    @event("routeledger.ProbeNoticed", 1, Origin.OBSERVED, registry=EventRegistry())
    @attrs.frozen(kw_only=True)
    class ProbeNoticed(Event):
        pass

    evt = ProbeNoticed(stream_id="probe:1", version=1, at_us=5)
    folded = fold_log([Recorded(7, evt)])
    assert (folded.events, folded.position, folded.at_us_max) == (1, 7, 5)
