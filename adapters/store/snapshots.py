"""Snapshots of the whole folded state, stored beside the log (a cache; the log is the truth).

``save_snapshot(store, folded)`` stores :class:`~.runtime.Folded` under the
stream :data:`SNAPSHOT_STREAM` with ``version = folded.position`` (the log
position it covers) and ``topic = routeledger.snapshot/<FORMAT_TAG>``;
``load_snapshot(store)`` returns the latest usable one, or ``None``. A process
restarting from a snapshot folds only the tail: ``store.read_all(folded.position)``.
D2 says the result equals folding the whole log; ``routeledger replay
--verify`` checks it against every stored snapshot.

Payload. States are private mutable ``__slots__`` accumulators, so the payload
is pickles (one pickler: the state without the maps that grow with traffic,
then those maps in chunks of :data:`CHUNK_ENTRIES`, so encoding never holds
the GIL for long), preceded by a header line carrying the canonical state hash
(:func:`routeledger.adapters.store.canonical.state_hash`) of the pickled state
and the SHA-256 of the pickle bytes::

    RLSNAP <format tag> <state hash> <pickle sha256>\\n<pickle bytes>

Loading checks the pickle digest (cheap: damaged bytes are ignored, the state
is folded from the log instead); ``decode_snapshot(..., check_state=True)``
also recomputes the state hash of the unpickled state, and ``replay --verify``
compares the recorded state hash with the fold of the log at that position.

Format tag. :data:`FORMAT_TAG` is derived from the code: :data:`SNAPSHOT_FORMAT`
(bump it by hand when the meaning of a state field changes), every registered
event tag and schema version, and the field/slot names of every state class.
A snapshot written by other code has another tag and is ignored: the state is
then folded from the log.

Trust boundary. Unpickling runs code named by the payload. Snapshots are read
only from our own store (the same database the log lives in, written only by
RouteLedger processes holding its credentials); anyone who can write that
table can already rewrite the log. Never load snapshots from another source.
"""

from __future__ import annotations

import collections
import copy
import gc
import hashlib
import io
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

import attrs

from routeledger.adapters.store.eventstore import EventStore, StoredSnapshot
from routeledger.core import catalog
from routeledger.core.budget import ledger
from routeledger.core.credentials import lifecycle
from routeledger.core.errors import RouteLedgerError, UsageError
from routeledger.core.fold import Folded
from routeledger.core.retention import RetentionState
from routeledger.core.routing import state as routing

__all__ = [
    "CHUNK_ENTRIES",
    "FORMAT_TAG",
    "RESTORE_TRIES_MAX",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_STREAM",
    "SNAPSHOT_TOPIC",
    "LoadedSnapshot",
    "check_snapshot",
    "decode_snapshot",
    "drop_snapshot",
    "encode_snapshot",
    "gc_paused",
    "iter_snapshots",
    "load_snapshot",
    "newest_good_snapshot",
    "prune_snapshots",
    "save_snapshot",
    "snapshot_versions",
]

#: The stream id snapshots of the whole engine state are stored under.
SNAPSHOT_STREAM: Final = "engine:state"
#: Bump when the meaning (not just the names) of a state field changes.
#: 2: the body is a sequence of pickle frames (``_pickled``), not one pickle.
SNAPSHOT_FORMAT: Final = 2
#: Snapshots listed per page when iterating them all.
_PAGE: Final = 100
_MAGIC: Final = b"RLSNAP"

_STATE_CLASSES: Final = (
    Folded,
    routing.RoutingState,
    routing.ScopeState,
    routing.RequestState,
    routing.AttemptRecord,
    ledger.LedgerState,
    ledger.AccountState,
    ledger.HoldState,
    lifecycle.CredentialsState,
    lifecycle.Credential,
    lifecycle.Installation,
    RetentionState,
)


def _shape(cls: type) -> str:
    if attrs.has(cls):
        names = sorted(f.name for f in attrs.fields(cls))
    else:
        names = sorted(getattr(cls, "__slots__", ()))
    return f"{cls.__module__}.{cls.__qualname__}({','.join(names)})"


def _format_tag() -> str:
    parts = [f"format={SNAPSHOT_FORMAT}"]
    # Only RouteLedger's own events: a caller (or a test) registering more must
    # not change the format of the engine's state.
    parts += sorted(
        cls.topic() for cls in catalog.REGISTRY if cls.__module__.startswith("routeledger.core.")
    )
    parts += [_shape(cls) for cls in _STATE_CLASSES]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"{SNAPSHOT_FORMAT}.{digest}"


#: This code's snapshot format (see the module docstring).
FORMAT_TAG: Final = _format_tag()
#: The topic this code writes and accepts.
SNAPSHOT_TOPIC: Final = f"routeledger.snapshot/{FORMAT_TAG}"


@attrs.frozen
class LoadedSnapshot:
    """A stored snapshot, decoded: the state (if usable) and why not (if not)."""

    #: The log position the snapshot covers.
    position: int
    folded: Folded | None
    #: The hash recorded in the payload (``None`` when the header is unreadable).
    recorded_hash: str | None
    #: Why it cannot be used (``None`` when usable).
    problem: str | None


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of acyclic objects.

    Why: unpickling or folding a large state allocates millions of small
    objects, and each allocation threshold triggers a collection that walks
    them all; the states hold no reference cycles, so nothing is lost by
    pausing it (measured: unpickling 7 MB of state 0.55 s -> 0.22 s).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def encode_snapshot(
    folded: Folded,
    state_hash_hex: str | None = None,
    *,
    pause: Callable[[], None] | None = None,
) -> bytes:
    """The payload for ``folded`` (the hash is computed unless given).

    ``pause`` is called between chunks (``time.sleep(0)``: a background
    thread gives the GIL back to request threads that often).
    """
    from routeledger.adapters.store.canonical import state_hash

    digest = state_hash_hex or state_hash(folded)
    return _payload(_pickled(folded, pause), digest)


#: Entries per pickled chunk of a map that grows with traffic. Why: one pickle
#: call is one C call that holds the GIL throughout (190 ms for a state of 6k
#: requests, measured); a chunk of 100 requests takes about 2 ms, so a thread
#: encoding a state of any size gives the GIL back that often.
CHUNK_ENTRIES: Final = 100
#: The maps that grow with traffic, pickled in chunks after the rest of the state.
_CHUNKED_MAPS: Final = (
    ("routing", "requests"),
    ("budget", "holds"),
    ("budget", "open_holds"),
    ("budget", "commands"),
)


def _pickled(folded: Folded, pause: Callable[[], None] | None) -> bytes:
    """One pickler, many frames: the state without its big maps, then their chunks, then None.

    The pickler's memo spans the frames, so an object met twice (an open hold
    is in ``holds`` and ``open_holds``) is one object again when loaded.
    """
    skeleton = copy.copy(folded)
    skeleton.routing = copy.copy(folded.routing)
    skeleton.budget = copy.copy(folded.budget)
    for context, name in _CHUNKED_MAPS:
        setattr(getattr(skeleton, context), name, {})
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dump(skeleton)
    for index, (context, name) in enumerate(_CHUNKED_MAPS):
        items = list(getattr(getattr(folded, context), name).items())
        for start in range(0, len(items), CHUNK_ENTRIES):
            pickler.dump((index, items[start : start + CHUNK_ENTRIES]))
            if pause is not None:
                pause()
    pickler.dump(None)
    return buffer.getvalue()


def _unpickled(body: bytes) -> object:
    """The state :func:`_pickled` wrote (anything else loads as whatever it is)."""
    unpickler = pickle.Unpickler(io.BytesIO(body))
    folded = unpickler.load()
    if type(folded) is not Folded:
        return folded
    maps = [getattr(getattr(folded, context), name) for context, name in _CHUNKED_MAPS]
    while (frame := unpickler.load()) is not None:
        index, items = frame
        maps[index].update(items)
    return folded


def _payload(body: bytes, digest: str) -> bytes:
    header = b"%s %s %s %s\n" % (
        _MAGIC,
        FORMAT_TAG.encode(),
        digest.encode(),
        hashlib.sha256(body).hexdigest().encode(),
    )
    return header + body


def save_snapshot(store: EventStore, folded: Folded) -> StoredSnapshot:
    """Store ``folded`` as the snapshot at ``folded.position`` (>= 1); return what was stored.

    Saving the same state at the same position again is a no-op (the store
    compares bytes); another state at that position is a ``Conflict``.
    """
    snapshot = StoredSnapshot(
        SNAPSHOT_STREAM, folded.position, SNAPSHOT_TOPIC, encode_snapshot(folded)
    )
    store.save_snapshot(snapshot)
    return snapshot


def decode_snapshot(stored: StoredSnapshot, *, check_state: bool = False) -> LoadedSnapshot:
    """Decode a stored snapshot; a foreign format or damaged payload comes back with a ``problem``.

    ``check_state`` also recomputes the canonical state hash of the unpickled
    state (O(state); the pickle digest is always checked).
    """
    from routeledger.adapters.store.canonical import state_hash

    if stored.topic != SNAPSHOT_TOPIC:
        return LoadedSnapshot(
            stored.version,
            None,
            None,
            f"format {stored.topic!r} is not this code's {SNAPSHOT_TOPIC!r}",
        )
    header, _, body = stored.payload.partition(b"\n")
    fields = header.split(b" ")
    if len(fields) != 4 or fields[0] != _MAGIC or fields[1] != FORMAT_TAG.encode():
        return LoadedSnapshot(stored.version, None, None, "the payload header is damaged")
    recorded = fields[2].decode("ascii", "replace")
    if hashlib.sha256(body).hexdigest().encode() != fields[3]:
        return LoadedSnapshot(stored.version, None, recorded, "the payload bytes are damaged")
    try:
        with gc_paused():
            folded = _unpickled(body)  # trusted: our own store (module docstring)
    except Exception as error:  # any damage in the bytes surfaces as some exception
        return LoadedSnapshot(stored.version, None, recorded, f"the payload does not load: {error}")
    if type(folded) is not Folded or folded.position != stored.version:
        return LoadedSnapshot(stored.version, None, recorded, "the payload is not a Folded state")
    actual = state_hash(folded) if check_state else recorded
    if actual != recorded:
        return LoadedSnapshot(
            stored.version,
            None,
            recorded,
            f"the state hash {actual} differs from the recorded {recorded}",
        )
    return LoadedSnapshot(stored.version, folded, recorded, None)


#: Snapshots tried at restore, newest first, before folding the whole log. Why:
#: more than the default kept (3) means a run of bad snapshots is a bug to
#: report, not something to search through.
RESTORE_TRIES_MAX: Final = 8


def load_snapshot(store: EventStore) -> Folded | None:
    """The latest snapshot's state, or ``None`` (none stored, another format, or damaged)."""
    stored = store.latest_snapshot(SNAPSHOT_STREAM)
    if stored is None:
        return None
    return decode_snapshot(stored).folded


def check_snapshot(stored: StoredSnapshot) -> str | None:
    """Why restore would not trust ``stored`` (decoded, re-hashed, invariants), or ``None``."""
    return _verified(stored).problem


def _verified(stored: StoredSnapshot) -> LoadedSnapshot:
    loaded = decode_snapshot(stored, check_state=True)
    if loaded.folded is not None:
        try:
            loaded.folded.check_invariants()
        except RouteLedgerError as broken:
            return attrs.evolve(loaded, folded=None, problem=f"invariant: {broken}")
    return loaded


def newest_good_snapshot(store: EventStore) -> tuple[Folded | None, list[LoadedSnapshot]]:
    """The newest snapshot that decodes, hashes as recorded and keeps every invariant.

    Returns it (or ``None``) and the newer ones skipped, each with its problem.
    Each tried snapshot is verified in full (``check_state``): a state captured
    while it was being folded into, or damaged on disk, is never trusted.
    """
    skipped: list[LoadedSnapshot] = []
    for stored in _newest_first(store, RESTORE_TRIES_MAX):
        loaded = _verified(stored)
        if loaded.folded is not None:
            return loaded.folded, skipped
        skipped.append(loaded)
    return None, skipped


def _newest_first(store: EventStore, limit: int) -> list[StoredSnapshot]:
    """The newest ``limit`` snapshots, newest first (one pass over the stored ones)."""
    return list(reversed(collections.deque(iter_snapshots(store), maxlen=limit)))


def snapshot_versions(store: EventStore) -> list[int]:
    """The positions of every stored snapshot, oldest first (payloads are not kept)."""
    return [s.version for s in iter_snapshots(store)]


def prune_snapshots(store: EventStore, keep: int) -> list[int]:
    """Delete every snapshot but the newest ``keep`` (>= 1); the positions deleted."""
    if keep < 1:
        raise UsageError(f"snapshots to keep must be >= 1, got {keep}")
    doomed = snapshot_versions(store)[:-keep]
    return [v for v in doomed if store.delete_snapshot(SNAPSHOT_STREAM, v)]


def drop_snapshot(store: EventStore, position: int) -> bool:
    """Delete the snapshot at ``position`` (an operator's command); whether there was one."""
    return store.delete_snapshot(SNAPSHOT_STREAM, position)


def iter_snapshots(store: EventStore) -> Iterator[StoredSnapshot]:
    """Every stored snapshot of the engine state, oldest first."""
    after = 0
    while True:
        page = store.snapshots(SNAPSHOT_STREAM, after_version=after, limit=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1].version
