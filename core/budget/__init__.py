"""The budget ledger: two-phase holds (reserve -> settle | refund | expire), scopes, periods.

Pure (standard library + attrs). See ``docs/budget.md`` for the model and a
worked example; :mod:`.ledger` for the rules and the hold state machine;
:mod:`.decide` for commands and deciders; :mod:`.events` for the storage
contract; :mod:`.sinks` for the settlement sink port; :mod:`.leases` for
per-process sub-allocations of hot accounts.

Importing this package registers every ledger event in
``routeledger.core.events.REGISTRY`` (so the codec sees them).
"""

from . import events as events

__all__ = ["events"]
