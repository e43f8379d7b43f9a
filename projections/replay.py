"""Verified replay: re-fold the whole log and check snapshots and projections against it.

:func:`verify_log` reads the log once, in pages, and in that single pass:

1. folds the decision state from scratch (:class:`~routeledger.adapters.runtime.Folded`);
2. for every stored snapshot (the latest :data:`SNAPSHOTS_VERIFIED_MAX`): when
   the pass reaches the snapshot's position it checks the snapshot decodes,
   that its state hash equals the hash of the fold at that position
   (``snapshot == fold(E[:k])``), and from there folds the tail into the
   snapshot's own state; at the end that state must hash like the full fold
   (``fold_from(snapshot, E[k:]) == fold(E)``, D2);
3. folds every projection twice: from scratch, and *resumed* — a copy
   restored (pickled and unpickled, as after a restart) at the half-way
   position, then caught up with the rest; both must be canonically equal;
4. cross-checks the projections against the decision state recomputed from
   the raw log (availability scopes against the routing state, account
   balances and open holds against the ledger).

A mismatch names the first divergent log position: for a snapshot whose
prefix hash differs, the snapshot's position; otherwise the first event after
which the two folds differ, found by re-reading and stepping both in lockstep
(only on the failure path).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

import attrs

from routeledger.adapters.runtime import Folded
from routeledger.adapters.snapshots import decode_snapshot, gc_paused, iter_snapshots
from routeledger.adapters.store import EventStore, Recorded, StoredSnapshot

from .availability import AvailabilityBoard
from .base import Projection
from .budget import BudgetBoard
from .canonical import canonical_bytes, digest, state_hash
from .metrics import Metrics
from .timeline import RequestTimeline

__all__ = [
    "PAGE_EVENTS",
    "SNAPSHOTS_VERIFIED_MAX",
    "Mismatch",
    "VerifyReport",
    "default_projections",
    "verify_log",
]

#: Events read per page. Why: the store's largest page; fewer round trips and
#: one progress update per page keep the pass at decode speed.
PAGE_EVENTS: Final = 10_000
#: Snapshots checked (the latest ones). Why: each checked snapshot folds the
#: tail after it; 32 bounds that work and memory on logs that kept every snapshot.
SNAPSHOTS_VERIFIED_MAX: Final = 32
#: Events stepped in lockstep to locate a divergence. Why: locating hashes both
#: states after every event (O(state) each); past this we name the range instead.
LOCKSTEP_EVENTS_MAX: Final = 100_000

ProjectionFactory = Callable[[], Projection]


#: ``replay --verify`` keeps the timelines of one request in this many. Why:
#: timelines of every request of a 1M-event log take ~1 GB twice over; a
#: deterministic 1/64 sample exercises every code path at 1/64 of the memory.
TIMELINE_SAMPLE: Final = 64


def default_projections() -> dict[str, ProjectionFactory]:
    """The projections ``replay --verify`` checks, by name.

    ``metrics`` holds the availability and budget boards (its gauges), so they
    are checked through it; the timeline is sampled (:data:`TIMELINE_SAMPLE`).
    """
    return {
        "metrics": Metrics,
        "timeline": lambda: RequestTimeline(sample=TIMELINE_SAMPLE),
    }


@attrs.frozen(kw_only=True)
class Mismatch:
    """One verification failure."""

    #: ``snapshot``, ``projection:<name>`` or ``cross-check:<name>``.
    subject: str
    #: The first log position where the two sides differ.
    position: int
    detail: str

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"subject": self.subject, "position": self.position, "detail": self.detail}


@attrs.frozen(kw_only=True)
class VerifyReport:
    """What :func:`verify_log` found."""

    events: int
    position: int
    state_hash: str
    snapshots_checked: int
    snapshots_ignored: int
    projections_checked: tuple[str, ...]
    resumed_at: int
    mismatches: tuple[Mismatch, ...]

    @property
    def ok(self) -> bool:
        """Whether nothing diverged."""
        return not self.mismatches

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "ok": self.ok,
            "events": self.events,
            "position": self.position,
            "state_hash": self.state_hash,
            "snapshots_checked": self.snapshots_checked,
            "snapshots_ignored": self.snapshots_ignored,
            "projections_checked": list(self.projections_checked),
            "resumed_at": self.resumed_at,
            "mismatches": [m.as_json() for m in self.mismatches],
        }


class _SnapshotCheck:
    """A stored snapshot being checked: decoded at its position, then fed the tail."""

    __slots__ = ("folded", "stored")

    def __init__(self, stored: StoredSnapshot, folded: Folded) -> None:
        self.stored = stored
        #: The snapshot's state, folded forward with every event after it.
        self.folded = folded


def _pages(store: EventStore, after: int) -> Iterator[list[Recorded]]:
    while True:
        page = store.read(after, limit=PAGE_EVENTS)
        if page:
            yield page
        if len(page) < PAGE_EVENTS:
            return
        after = page[-1].position


def _restored(projection: Projection) -> Projection:
    """A copy of ``projection`` as a restarted process would restore it."""
    copy: Projection = pickle.loads(pickle.dumps(projection, protocol=pickle.HIGHEST_PROTOCOL))
    return copy


def _lockstep(
    records: Iterable[Recorded],
    left: Callable[[Recorded], bytes],
    right: Callable[[Recorded], bytes],
) -> int | None:
    """The position of the first record after which ``left`` and ``right`` differ."""
    for count, recorded in enumerate(records):
        if left(recorded) != right(recorded):
            return recorded.position
        if count >= LOCKSTEP_EVENTS_MAX:
            return None
    return None


def _fold_to(store: EventStore, position: int) -> Folded:
    folded = Folded()
    for recorded in store.read_all(0, page=PAGE_EVENTS):
        if recorded.position > position:
            break
        folded.apply(recorded.event)
        folded.position = recorded.position
    return folded


def _locate_snapshot_divergence(store: EventStore, snap: Folded, start: int) -> int | None:
    full = _fold_to(store, start)
    restored: Folded = pickle.loads(pickle.dumps(snap, protocol=pickle.HIGHEST_PROTOCOL))

    def step(state: Folded) -> Callable[[Recorded], bytes]:
        def apply(recorded: Recorded) -> bytes:
            state.apply(recorded.event)
            state.position = recorded.position
            return canonical_bytes(state)

        return apply

    return _lockstep(store.read_all(start, page=PAGE_EVENTS), step(full), step(restored))


def _locate_projection_divergence(
    store: EventStore, factory: ProjectionFactory, resumed_at: int
) -> int | None:
    scratch = factory()
    for recorded in store.read_all(0, page=PAGE_EVENTS):
        if recorded.position > resumed_at:
            break
        scratch.apply(recorded)
    resumed = _restored(scratch)

    def step(projection: Projection) -> Callable[[Recorded], bytes]:
        def apply(recorded: Recorded) -> bytes:
            projection.apply(recorded)
            return canonical_bytes(projection)

        return apply

    return _lockstep(store.read_all(resumed_at, page=PAGE_EVENTS), step(scratch), step(resumed))


def _cross_check(folded: Folded, projections: Mapping[str, Projection]) -> list[Mismatch]:
    """Projections against the decision state recomputed from the raw log (D2)."""
    found: list[Mismatch] = []
    metrics = projections.get("metrics")
    board = (
        metrics.availability if isinstance(metrics, Metrics) else projections.get("availability")
    )
    if isinstance(board, AvailabilityBoard):
        for stream, record in board.scopes.items():
            table = folded.routing.pairs if stream.startswith("pair:") else folded.routing.creds
            scope = table.get(stream)
            expected = (
                (0, False, 0, False)
                if scope is None
                else (
                    scope.until_us,
                    scope.suspended,
                    scope.probe_until_us,
                    scope.needs_probe,
                )
            )
            actual = (record.until_us, record.suspended, record.probe_until_us, record.needs_probe)
            if actual != expected:
                found.append(
                    Mismatch(
                        subject="cross-check:availability",
                        position=record.since_position,
                        detail=f"{stream}: board {actual} != routing state {expected}",
                    )
                )
    budget = metrics.budget if isinstance(metrics, Metrics) else projections.get("budget")
    if isinstance(budget, BudgetBoard):
        for account_id, account in folded.budget.accounts.items():
            balances = budget.accounts.get(account_id)
            expected_b = (
                account.limit,
                account.spent,
                account.reserved,
                account.lifetime_spent,
                account.overage,
            )
            actual_b = (
                None
                if balances is None
                else (
                    balances.limit,
                    balances.spent,
                    balances.reserved,
                    balances.lifetime_spent,
                    balances.overage,
                )
            )
            if actual_b != expected_b:
                found.append(
                    Mismatch(
                        subject="cross-check:budget",
                        position=0 if balances is None else balances.since_position,
                        detail=f"account {account_id}: board {actual_b} != ledger {expected_b}",
                    )
                )
        if sorted(budget.holds) != sorted(folded.budget.open_holds):
            found.append(
                Mismatch(
                    subject="cross-check:budget",
                    position=folded.position,
                    detail="open holds on the board differ from the ledger's",
                )
            )
    return found


def verify_log(
    store: EventStore,
    *,
    progress: Callable[[int, int], None] | None = None,
    projections: Mapping[str, ProjectionFactory] | None = None,
) -> VerifyReport:
    """Re-fold the whole log and verify snapshots and projections (see the module docstring).

    ``progress(position, last_position)`` is called after every page.
    """
    with gc_paused():
        return _verify(store, progress, projections)


def _verify(
    store: EventStore,
    progress: Callable[[int, int], None] | None,
    projections: Mapping[str, ProjectionFactory] | None,
) -> VerifyReport:
    factories = dict(default_projections() if projections is None else projections)
    last = store.max_position()
    half = last // 2
    stored = list(iter_snapshots(store))
    ignored = max(0, len(stored) - SNAPSHOTS_VERIFIED_MAX)
    pending = sorted(stored[ignored:], key=lambda s: s.version)
    checks: list[_SnapshotCheck] = []
    mismatches: list[Mismatch] = []
    folded = Folded()
    scratch = {name: factory() for name, factory in factories.items()}
    resumed: dict[str, Projection] | None = None
    resumed_at = 0

    def reach(position: int) -> None:
        """Decode the snapshots at or before ``position`` (the fold stands at it)."""
        nonlocal ignored
        while pending and pending[0].version <= position:
            snap = pending.pop(0)
            loaded = decode_snapshot(snap)
            if loaded.problem is not None and loaded.recorded_hash is None:
                ignored += 1  # another format: a cache this code does not read
                continue
            if loaded.folded is None or snap.version != folded.position:
                mismatches.append(
                    Mismatch(
                        subject="snapshot",
                        position=snap.version,
                        detail=loaded.problem or "the snapshot's position is not an event's",
                    )
                )
                continue
            at_prefix = state_hash(folded)
            if loaded.recorded_hash != at_prefix:
                mismatches.append(
                    Mismatch(
                        subject="snapshot",
                        position=snap.version,
                        detail=f"snapshot hash {loaded.recorded_hash} != fold at that position {at_prefix}",
                    )
                )
                continue
            checks.append(_SnapshotCheck(snap, loaded.folded))

    reach(0)
    for page in _pages(store, 0):
        for recorded in page:
            if resumed is None and recorded.position > half:
                resumed = {name: _restored(p) for name, p in scratch.items()}
                resumed_at = folded.position
            evt = recorded.event
            folded.apply(evt)
            folded.position = recorded.position
            for projection in scratch.values():
                projection.apply(recorded)
            if resumed is not None:
                for projection in resumed.values():
                    projection.apply(recorded)
            for check in checks:
                check.folded.apply(evt)
                check.folded.position = recorded.position
            if pending and pending[0].version <= recorded.position:
                reach(recorded.position)
        if progress is not None:
            progress(page[-1].position, last)
    reach(folded.position)
    for snap in pending:  # pragma: no cover - defensive: a snapshot beyond the log's end
        mismatches.append(
            Mismatch(subject="snapshot", position=snap.version, detail="beyond the log's end")
        )
    if resumed is None:
        resumed = {name: _restored(p) for name, p in scratch.items()}
        resumed_at = folded.position

    final_hash = state_hash(folded)
    for check in checks:
        if state_hash(check.folded) != final_hash:
            mismatches.append(
                Mismatch(
                    subject="snapshot",
                    position=_locate_snapshot_tail(store, check.stored) or check.stored.version,
                    detail=f"snapshot at {check.stored.version} + tail != full fold",
                )
            )
    for name, projection in scratch.items():
        if digest(projection) != digest(resumed[name]):
            position = _locate_projection_divergence(store, factories[name], resumed_at)
            mismatches.append(
                Mismatch(
                    subject=f"projection:{name}",
                    position=position if position is not None else resumed_at,
                    detail=f"rebuilt from scratch != resumed from position {resumed_at}",
                )
            )
    mismatches.extend(_cross_check(folded, scratch))
    mismatches.sort(key=lambda m: (m.position, m.subject))
    return VerifyReport(
        events=folded.events,
        position=folded.position,
        state_hash=final_hash,
        snapshots_checked=len(checks),
        snapshots_ignored=ignored,
        projections_checked=tuple(scratch),
        resumed_at=resumed_at,
        mismatches=tuple(mismatches),
    )


def _locate_snapshot_tail(store: EventStore, stored: StoredSnapshot) -> int | None:
    loaded = decode_snapshot(stored)
    if loaded.folded is None:  # pragma: no cover - it decoded a moment ago
        return None
    return _locate_snapshot_divergence(store, loaded.folded, stored.version)
