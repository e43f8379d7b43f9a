"""The budget ledger: two-phase holds (reserve -> settle | refund | expire), scopes, periods.

Pure (standard library + attrs). See ``docs/budget.md`` for the model and a
worked example; :mod:`.ledger` for the rules and the hold state machine;
:mod:`.decide` for the request path's commands and deciders (accounts opened,
holds placed, settled, refunded, adjusted, expired); :mod:`.validate` for every check of a caller's mistake in a command;
:mod:`.admin` for the
operator's and the maintenance loop's (limits, spend corrections, period
rollover; parked until [G4] wires them); :mod:`.events` for the storage
contract; :mod:`.sinks` for the settlement sink port; :mod:`.leases` for
per-process sub-allocations of hot accounts.

Importing this package registers every ledger event in
``routeledger.core.events.REGISTRY`` (so the codec sees them).
"""

from . import events as events

__all__ = ["events"]
