"""Verified replay: re-fold the whole log and check snapshots and projections against it.

:func:`verify_log` reads the log up to its head when the check began, in
pages, and:

1. folds the decision state from scratch (:class:`~routeledger.adapters.engine.runtime.Folded`);
2. for every stored snapshot (the latest :data:`SNAPSHOTS_VERIFIED_MAX`):
   checks it decodes, that its recorded state hash equals the hash of the
   fold at that position (``snapshot == fold(E[:k])``), and that the
   snapshot's own state with the tail folded into it hashes like the full
   fold (``fold_from(snapshot, E[k:]) == fold(E)``, D2). A helper process
   decodes the snapshots and folds the tails into them while the pass runs,
   and the fold's hash at a snapshot's position is taken by a fork at that
   moment (a copy-on-write view of the state, hashed on another core); see
   :data:`PARALLEL`;
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

import functools
import multiprocessing
import os
import pickle
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any, Final, Generic, Literal, TypeVar

import attrs

from routeledger.adapters.providers.scrub import DEFAULT_SCRUBBER
from routeledger.adapters.store.canonical import canonical_bytes, digest, state_hash
from routeledger.adapters.store.eventstore import EventStore, StoredSnapshot, open_store
from routeledger.adapters.store.snapshots import (
    SNAPSHOT_STREAM,
    SNAPSHOT_TOPIC,
    decode_snapshot,
    gc_paused,
    iter_snapshots,
)
from routeledger.core.fold import Folded, Recorded
from routeledger.core.streams import is_pair_stream
from routeledger.projections.availability import AvailabilityBoard
from routeledger.projections.base import Projection
from routeledger.projections.budget import BudgetBoard
from routeledger.projections.metrics import Metrics
from routeledger.projections.timeline import RequestTimeline

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
        "timeline": lambda: RequestTimeline(sample=TIMELINE_SAMPLE, scrub=DEFAULT_SCRUBBER),
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


def _pages(store: EventStore, after: int, last: int) -> Iterator[list[Recorded]]:
    """The log after ``after`` up to ``last`` (the head when the pass began), in pages."""
    while after < last:
        page = store.read(after, limit=PAGE_EVENTS)
        if not page:
            return
        if page[-1].position > last:
            page = [r for r in page if r.position <= last]
            if page:
                yield page
            return
        yield page
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
            table = folded.routing.pairs if is_pair_stream(stream) else folded.routing.creds
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
    url: str | None = None,
) -> VerifyReport:
    """Re-fold the whole log and verify snapshots and projections (see the module docstring).

    ``progress(position, last_position)`` is called after every page. ``url``
    is the store's URL: with it, the snapshot tails of a SQLite or PostgreSQL
    store are checked by a helper process that opens the store itself (it
    starts a fresh interpreter, so the caller's main module must be
    import-safe, as :mod:`multiprocessing` requires). Without it they are
    checked in this process, before the pass.
    """
    with gc_paused():
        return _verify(store, progress, projections, url)


#: Run the snapshot checks in helper processes, alongside the pass. Why: decoding
#: a snapshot of a 1M-event log, folding the tail into it and hashing it, and
#: hashing the fold at the snapshot's position, each take seconds; on another
#: core they overlap the pass. The fold's hash at a snapshot is taken by a fork
#: (it sees the state as it is, without copying or encoding it; it copies the
#: pages it walks, so memory holds up to two copies of the state meanwhile, as
#: keeping the decoded snapshot beside the fold did). The tails are checked by
#: a fork for a ``memory://`` store, and by a freshly started interpreter on a
#: connection of its own for SQLite and PostgreSQL (a database connection must
#: not cross a fork). Off (or one CPU, or other threads running, which are
#: unsafe to fork, or a short log): the same work runs in this process, in turn.
PARALLEL = True
#: Logs shorter than this are checked in this process. Why: starting a helper
#: interpreter takes ~0.5 s, longer than the whole check of a small log.
PARALLEL_EVENTS_MIN = 100_000

_T = TypeVar("_T")


def _reply(work: Callable[[], object], conn: Connection) -> None:
    """In a helper process: send back ``work()``'s value, or what it raised."""
    try:
        reply: tuple[bool, object] = (True, work())
    except BaseException as error:  # raised again in the parent
        reply = (False, error)
    try:
        conn.send(reply)
    except Exception as error:  # an exception that does not pickle
        conn.send((False, RuntimeError(repr(reply[1]) if reply[0] is False else repr(error))))
    conn.close()


class _Elsewhere(Generic[_T]):
    """``work()`` run in a helper process (or here, now); :meth:`result` waits for it.

    ``start``: ``"fork"`` (``work`` may use anything this process holds, but
    no database connection), ``"spawn"`` (``work`` must pickle) or ``None``
    (here).
    """

    __slots__ = ("_conn", "_done", "_process", "_value")

    def __init__(
        self, work: Callable[[], _T], *, start: Literal["fork", "spawn"] | None = "fork"
    ) -> None:
        self._done = False
        self._value: _T | None = None
        if (
            start is None
            or (os.cpu_count() or 1) < 2
            or start not in multiprocessing.get_all_start_methods()
            or (start == "fork" and threading.active_count() > 1)
        ):
            self._value, self._done = work(), True
            return
        context = (
            multiprocessing.get_context("fork")
            if start == "fork"
            else multiprocessing.get_context("spawn")
        )
        self._conn, child_end = context.Pipe(duplex=False)
        # Daemonic: a helper never outlives this process.
        self._process = context.Process(target=_reply, args=(work, child_end), daemon=True)
        self._process.start()
        child_end.close()

    def result(self) -> _T:
        """The value of ``work()`` (raises what it raised)."""
        if not self._done:
            self._done = True
            try:
                ok, value = self._conn.recv()
            except EOFError:
                raise RuntimeError(
                    f"a verification helper ended without an answer ({self._process.exitcode})"
                ) from None
            finally:
                self._conn.close()
                self._process.join()
            if not ok:
                raise value
            self._value = value
        return self._value  # type: ignore[return-value]

    def cancel(self) -> None:
        """Stop the helper if it still runs (after an error in the pass)."""
        if not self._done:
            self._done = True
            self._process.kill()
            self._process.join()
            self._conn.close()


#: A prefix hash computed at the end: the snapshot stands at the last position.
_FINAL: Final = "final"

#: Version -> (problem, recorded hash) as decoded; version -> hash of snapshot + tail.
_TailFindings = tuple[dict[int, tuple[str | None, str | None]], dict[int, str]]


def _fold_tails(store: EventStore, pending: deque[StoredSnapshot], last: int) -> _TailFindings:
    """Decode each snapshot, fold the log after it (up to ``last``) into it and hash that (D2).

    ``pending`` (oldest first) is consumed: a payload is dropped once decoded.
    One pass from the oldest snapshot on, every decoded state folded alongside.
    """
    decoded: dict[int, tuple[str | None, str | None]] = {}
    states: dict[int, Folded] = {}
    if not pending:
        return decoded, {}
    reached = -1  # no event read yet

    def reach_before(position: int) -> None:
        while pending and pending[0].version < position:
            stored = pending.popleft()
            loaded = decode_snapshot(stored)
            decoded[stored.version] = (loaded.problem, loaded.recorded_hash)
            if loaded.folded is not None and stored.version == reached:
                states[stored.version] = loaded.folded

    folding = states.values()
    for page in _pages(store, pending[0].version - 1, last):
        for recorded in page:
            if pending and pending[0].version < recorded.position:
                reach_before(recorded.position)
            evt = recorded.event
            for state in folding:
                state.apply(evt)
            reached = recorded.position
    reach_before(reached + 1)
    hashes = {}
    for version, state in states.items():
        state.position = reached
        hashes[version] = state_hash(state)
    return decoded, hashes


def _check_tails_at(url: str, versions: list[int], last: int) -> _TailFindings:
    """:func:`_fold_tails` in a started helper, on its own connection to the store at ``url``."""
    with open_store(url, create=False) as store, gc_paused():
        pending = deque(
            store.snapshots(SNAPSHOT_STREAM, after_version=version - 1, limit=1)[0]
            for version in versions
        )
        return _fold_tails(store, pending, last)


def _verify(
    store: EventStore,
    progress: Callable[[int, int], None] | None,
    projections: Mapping[str, ProjectionFactory] | None,
    url: str | None,
) -> VerifyReport:
    children: list[_Elsewhere[Any]] = []
    try:
        return _verify_pass(store, progress, projections, url, children)
    finally:
        for child in children:
            child.cancel()


def _verify_pass(
    store: EventStore,
    progress: Callable[[int, int], None] | None,
    projections: Mapping[str, ProjectionFactory] | None,
    url: str | None,
    children: list[_Elsewhere[Any]],
) -> VerifyReport:
    """One verifying pass over the log; the helpers it starts are added to ``children``."""
    factories = dict(default_projections() if projections is None else projections)
    last = store.max_position()
    pending, seen = _snapshots_to_check(store)
    versions = [snap.version for snap in pending]
    #: Snapshots of this code's format (the others are ignored; no need to hash for them).
    ours = {snap.version for snap in pending if snap.topic == SNAPSHOT_TOPIC}
    helpers = PARALLEL and last >= PARALLEL_EVENTS_MIN
    fork: Literal["fork"] | None = "fork" if helpers else None
    tails = _start_tails(store, pending, versions, ours, last, url, helpers)
    children.append(tails)
    pending.clear()  # decoded, or the helper's to read
    run = _Pass(factories, versions, ours, last, fork, children)
    run.fold_all(store, progress)
    final_hash = state_hash(run.folded)
    run.collect_prefix_hashes()
    decoded, tail_hashes = tails.result()
    mismatches, checked, ignored = run.snapshot_mismatches(
        store, versions, decoded, tail_hashes, final_hash
    )
    mismatches.extend(run.projection_mismatches(store, factories))
    mismatches.extend(_cross_check(run.folded, run.scratch))
    mismatches.sort(key=lambda m: (m.position, m.subject))
    return VerifyReport(
        events=run.folded.events,
        position=run.folded.position,
        state_hash=final_hash,
        snapshots_checked=checked,
        snapshots_ignored=ignored + seen - len(versions),
        projections_checked=tuple(run.scratch),
        resumed_at=run.resumed_at,
        mismatches=tuple(mismatches),
    )


def _snapshots_to_check(store: EventStore) -> tuple[deque[StoredSnapshot], int]:
    """The latest :data:`SNAPSHOTS_VERIFIED_MAX` snapshots (oldest first), and how many exist."""
    kept: deque[StoredSnapshot] = deque(maxlen=SNAPSHOTS_VERIFIED_MAX)
    seen = 0
    for snap in iter_snapshots(store):
        kept.append(snap)
        seen += 1
    pending = deque(sorted(kept, key=lambda snap: snap.version))
    kept.clear()
    return pending, seen


def _start_tails(
    store: EventStore,
    pending: deque[StoredSnapshot],
    versions: list[int],
    ours: set[int],
    last: int,
    url: str | None,
    helpers: bool,
) -> _Elsewhere[_TailFindings]:
    """Start checking the snapshots' tails: in a fork, a fresh interpreter on ``url``, or here."""
    if not ours:
        return _Elsewhere(lambda: ({}, {}), start=None)
    if store.backend == "memory":
        fold = functools.partial(_fold_tails, store, pending, last)
        return _Elsewhere(fold, start="fork" if helpers else None)
    if url is not None and helpers:
        return _Elsewhere(functools.partial(_check_tails_at, url, versions, last), start="spawn")
    return _Elsewhere(functools.partial(_fold_tails, store, pending, last), start=None)


class _Pass:
    """The pass's running state: the fold, the projections twice, the hashes and stops due."""

    __slots__ = (
        "appliers",
        "children",
        "folded",
        "fork",
        "half",
        "last",
        "ours",
        "prefix",
        "prefix_hashes",
        "resumed",
        "resumed_at",
        "scratch",
        "stops",
    )

    def __init__(
        self,
        factories: Mapping[str, ProjectionFactory],
        versions: list[int],
        ours: set[int],
        last: int,
        fork: Literal["fork"] | None,
        children: list[_Elsewhere[Any]],
    ) -> None:
        """A pass about to fold the log up to ``last``, hashing at the snapshots in ``ours``."""
        self.folded = Folded()
        self.scratch = {name: factory() for name, factory in factories.items()}
        self.resumed: dict[str, Projection] | None = None
        self.resumed_at = 0
        #: Version -> the fold's hash there (_FINAL: the last position), or None: no event
        #: ends there.
        self.prefix: dict[int, str | None] = {}
        self.prefix_hashes: list[tuple[int, _Elsewhere[str]]] = []
        self.appliers = [projection.apply for projection in self.scratch.values()]
        self.half = last // 2
        self.last = last
        self.ours = ours
        # Positions after which something happens: the resume point, each snapshot.
        self.stops = deque(sorted({self.half, *versions}))
        self.fork = fork
        self.children = children

    def fold_all(self, store: EventStore, progress: Callable[[int, int], None] | None) -> None:
        """Fold the log once into the state and every projection, stopping where work is due."""
        last = self.last
        stops = self.stops
        stop_before = self.stop_before
        appliers = self.appliers  # extended in place once resumed
        apply = self.folded.apply
        reached = 0
        next_stop = stops[0] if stops else last
        for page in _pages(store, 0, last):
            for recorded in page:
                position = recorded.position
                if position > next_stop:
                    stop_before(position, reached)
                    next_stop = stops[0] if stops else last
                apply(recorded.event)
                for fold in appliers:
                    fold(recorded)
                reached = position
            if progress is not None:
                progress(reached, last)
        stop_before(last + 1, reached)
        assert self.resumed is not None  # made once the pass is beyond half-way

    def stop_before(self, upcoming: int, reached: int) -> None:
        """What is due before folding the event at ``upcoming`` (the fold stands at ``reached``)."""
        self.folded.position = reached
        if self.resumed is None and upcoming > self.half:
            self.resumed = {name: _restored(p) for name, p in self.scratch.items()}
            self.resumed_at = reached
            self.appliers.extend(projection.apply for projection in self.resumed.values())
        stops = self.stops
        while stops and stops[0] < upcoming:
            version = stops.popleft()
            if version not in self.ours:
                continue  # the resume point, or a snapshot of another format
            if version != reached:
                self.prefix[version] = None
            elif upcoming > self.last:  # the end of the pass: the final hash will do
                self.prefix[version] = _FINAL
            else:
                self.hash_prefix(version)

    def hash_prefix(self, version: int) -> None:
        """Start hashing the fold as it stands at ``version``, once the previous hash is in."""
        if self.prefix_hashes:  # one child hashing a copy of the state at a time
            self.prefix[self.prefix_hashes[-1][0]] = self.prefix_hashes[-1][1].result()
        hashing = _Elsewhere(functools.partial(state_hash, self.folded), start=self.fork)
        self.prefix_hashes.append((version, hashing))
        self.children.append(hashing)

    def collect_prefix_hashes(self) -> None:
        """Wait for the prefix hashes still being taken."""
        for version, hashing in self.prefix_hashes:
            self.prefix[version] = hashing.result()

    def snapshot_mismatches(
        self,
        store: EventStore,
        versions: list[int],
        decoded: dict[int, tuple[str | None, str | None]],
        tail_hashes: dict[int, str],
        final_hash: str,
    ) -> tuple[list[Mismatch], int, int]:
        """Each snapshot against the fold at and after it: the mismatches, checked, ignored."""
        mismatches: list[Mismatch] = []
        checked = 0
        ignored = 0
        for version in versions:
            if version not in self.ours:
                ignored += 1  # another format: a cache this code does not read
                continue
            problem, recorded_hash = decoded.get(version, ("beyond the log's end", ""))
            at_prefix = self.prefix.get(version)
            if problem is not None or at_prefix is None:
                detail = problem or "the snapshot's position is not an event's"
                mismatches.append(Mismatch(subject="snapshot", position=version, detail=detail))
                continue
            at_prefix = final_hash if at_prefix == _FINAL else at_prefix
            if recorded_hash != at_prefix:
                mismatches.append(
                    Mismatch(
                        subject="snapshot",
                        position=version,
                        detail=f"snapshot hash {recorded_hash} != fold at that position {at_prefix}",
                    )
                )
                continue
            checked += 1
            if tail_hashes.get(version) != final_hash:
                mismatches.append(
                    Mismatch(
                        subject="snapshot",
                        position=_locate_snapshot_tail(store, version) or version,
                        detail=f"snapshot at {version} + tail != full fold",
                    )
                )
        return mismatches, checked, ignored

    def projection_mismatches(
        self, store: EventStore, factories: Mapping[str, ProjectionFactory]
    ) -> list[Mismatch]:
        """Each projection rebuilt from scratch against its copy resumed half-way."""
        assert self.resumed is not None  # made once the pass is beyond half-way
        resumed_at = self.resumed_at
        mismatches: list[Mismatch] = []
        for name, projection in self.scratch.items():
            if digest(projection) != digest(self.resumed[name]):
                located = _locate_projection_divergence(store, factories[name], resumed_at)
                mismatches.append(
                    Mismatch(
                        subject=f"projection:{name}",
                        position=located if located is not None else resumed_at,
                        detail=f"rebuilt from scratch != resumed from position {resumed_at}",
                    )
                )
        return mismatches


def _locate_snapshot_tail(store: EventStore, version: int) -> int | None:
    (stored,) = store.snapshots(SNAPSHOT_STREAM, after_version=version - 1, limit=1)
    loaded = decode_snapshot(stored)
    if loaded.folded is None:  # pragma: no cover - it decoded a moment ago
        return None
    return _locate_snapshot_divergence(store, loaded.folded, version)
