"""Snapshots taken from a replica of the fold, never from the state requests decide on.

Why a replica: any consistent view of the live state costs the request path
something. Pickling it under the runtime's lock is one C call that holds the
lock and the GIL for the whole state (190 ms for 6k requests, seconds at a
horizon of 100k: measured); a copy-on-write or immutable state makes every
fold slower. The :class:`Snapshotter` instead keeps its own :class:`Folded`,
folded from the store like any other reader of the log (it starts from the
newest good snapshot). Nothing else touches it, so it is consistent at its
position by construction, needs no lock, and is encoded in chunks that give
the GIL back between them (``snapshots.CHUNK_ENTRIES``). The cost is a second
fold of the log (a read and a decode per event, on the maintenance thread)
and a second copy of the live state in memory, both bounded by the retention
horizon.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Final

from routeledger.adapters.store import snapshots
from routeledger.adapters.store.canonical import state_hash
from routeledger.adapters.store.eventstore import Conflict, EventStore, StoredSnapshot
from routeledger.core.fold import Folded, fold_log

__all__ = ["Snapshotter"]

LOGGER: Final = logging.getLogger("routeledger.engine")
#: Most of the wall time saving snapshots may take. Why 5%: the replica's hash
#: and encoding compete with request threads for the GIL; after a snapshot
#: that took T seconds the next waits 19 T, so a large state is snapshotted
#: less often (a longer tail to fold at restore) instead of slowing requests.
SNAPSHOT_DUTY_MAX: Final = 0.05
#: Snapshots quicker than this (in s) are not rate-limited: they cost nothing to repeat.
SNAPSHOT_REST_MIN_S: Final = 0.05


def _yield_gil() -> None:
    time.sleep(0)


class Snapshotter:
    """Owns the replica and saves a snapshot of it every ``every_events`` events."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._replica: Folded | None = None
        #: The replica's event count at the last snapshot saved (or started from).
        self._saved_events = 0
        #: One step at a time (the maintenance thread, or a caller of ``maintain``).
        self._lock = threading.Lock()
        #: ``time.monotonic()`` before which no snapshot is saved (SNAPSHOT_DUTY_MAX).
        self._rest_until = 0.0

    def _started(self) -> Folded:
        if self._replica is None:
            start, _ = snapshots.newest_good_snapshot(self.store)
            self._replica = start or Folded()
            self._saved_events = self._replica.events
        return self._replica

    def step(self, every_events: int, kept: int) -> int | None:
        """Catch the replica up; save a snapshot if ``every_events`` were folded since the last.

        Returns the position saved, or ``None``; then keeps the newest ``kept``.
        """
        if every_events <= 0 or not self._lock.acquire(blocking=False):
            return None
        try:
            replica = self._started()
            with snapshots.gc_paused():
                fold_log(self.store.read_all(replica.position), replica)
            due = replica.events - self._saved_events >= every_events and replica.position
            if not due or time.monotonic() < self._rest_until:
                return None
            return self._save(replica, kept)
        finally:
            self._lock.release()

    def _save(self, replica: Folded, kept: int) -> int:
        began = time.perf_counter()
        replica.check_invariants()  # a state that breaks one is never stored
        payload = snapshots.encode_snapshot(replica, state_hash(replica), pause=_yield_gil)
        stored = StoredSnapshot(
            snapshots.SNAPSHOT_STREAM, replica.position, snapshots.SNAPSHOT_TOPIC, payload
        )
        try:
            self.store.save_snapshot(stored)
        except Conflict:  # another process saved its own bytes at that position
            LOGGER.info("snapshot at position %d: another process saved one", replica.position)
        self._saved_events = replica.events
        pruned = snapshots.prune_snapshots(self.store, kept)
        self.store.checkpoint()  # not in the next request's commit
        took_s = time.perf_counter() - began
        if took_s >= SNAPSHOT_REST_MIN_S:
            self._rest_until = time.monotonic() + took_s * (1 / SNAPSHOT_DUTY_MAX - 1)
        LOGGER.info(
            "snapshot saved at position %d (%d bytes, %.1f ms off the request path; "
            "%d older pruned)",
            replica.position,
            len(payload),
            took_s * 1000,
            len(pruned),
        )
        return replica.position
