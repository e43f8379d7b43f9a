"""The event store: one interface over eventsourcing's in-memory, SQLite and PostgreSQL recorders.

What it guarantees, on every backend:

* **Atomic, conditional batches.** :meth:`EventStore.append` writes a batch of
  events spanning any number of streams in one transaction, or nothing. Each
  stream's first event in the batch must carry exactly ``head + 1`` as its
  version: a lower one means the caller decided from a stale state and gets a
  :class:`Conflict` naming the stream (reload, re-decide, retry); a higher one
  is a :class:`InvalidAppend` (a gap is a caller bug, never a race).
* **Validated before written.** Every event of the batch is checked (registered
  tag, stream id the store can hold, version, engine time not going backwards
  within its stream, encodable payload) before anything is written; the first
  problem raises :class:`InvalidAppend` naming the event's index, tag and stream,
  and the log is left exactly as it was.
* **A total order.** Every stored event has a *position* in the log (the
  recorder's notification id): increasing in commit order, with gaps possible
  (failed PostgreSQL inserts burn ids), never reused. Read the log after a
  position in pages; follow it with :meth:`EventStore.follow` (LISTEN/NOTIFY on
  PostgreSQL, polling on SQLite and in memory).
* **Strict reads.** Stored bytes go through :class:`~routeledger.adapters.store.codec.Codec`:
  anything it cannot decode raises a typed :class:`~routeledger.adapters.store.codec.DecodeError`
  naming tag, stream, version and position; nothing is ever modified by a read.

Settings that bite (see the project notes on eventsourcing 9.5.6): text stream
ids (``ORIGINATOR_ID_TYPE=text``), an explicit application name (PostgreSQL
tables ``routeledger_events`` / ``routeledger_snapshots``), recorders used
directly (no ``Application.save``), a lock timeout, and never
``POSTGRES_ENABLE_DB_FUNCTIONS`` (it lets a follower skip events).
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import attrs
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    InternalError,
    Notification,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.utils import Environment

from routeledger.adapters.store.codec import Codec, EncodeError, default_codec
from routeledger.adapters.store.sqlite_log import SQLITE_SYNCHRONOUS_DEFAULT, SqliteWriter
from routeledger.adapters.store.urls import StoreUrl, parse_store_url
from routeledger.core.errors import RouteLedgerError, UsageError
from routeledger.core.events import Event, envelope_problem, stream_id_problem
from routeledger.core.fold import Recorded

__all__ = [
    "APPEND_BATCH_EVENTS_MAX",
    "READ_PAGE_EVENTS_MAX",
    "Conflict",
    "EventStore",
    "Follower",
    "InvalidAppend",
    "Recorded",
    "StoreError",
    "StoreNotFound",
    "StoreUnavailable",
    "StoredSnapshot",
    "StreamHead",
    "open_store",
]

#: Largest batch one append may write. Why: a batch is one transaction holding
#: the table lock on PostgreSQL; 10k events (~2 MB) keep that commit short
#: (bench/README.md), and no single decision emits more than a few.
APPEND_BATCH_EVENTS_MAX: Final = 10_000
#: Largest page one read returns. Why: 10k bounds the memory a single read can
#: take (~10 MB); larger pages save no time (bench/README.md).
READ_PAGE_EVENTS_MAX: Final = 10_000
#: Default page for whole-log reads. Why: the fastest page size for whole-log
#: reads (bench/README.md).
READ_PAGE_EVENTS_DEFAULT: Final = 1_000
#: Stream heads remembered between appends. Why: an entry is the stream's last
#: appended event (a few hundred bytes) or a ~200-byte head read back, and it
#: outlives the request it belongs to (the state retires requests, this cache
#: does not: G5's soak saw 100k entries hold ~40 MB). 20k streams (~8 MB) cover
#: every request in flight and every pair and account of a busy gateway; when
#: full, the oldest half is forgotten (a miss costs one head read).
HEAD_CACHE_STREAMS_MAX: Final = 20_000
#: How long a writer waits for a lock (seconds) when the URL has no ``lock_timeout``.
LOCK_TIMEOUT_S_DEFAULT: Final = "10"
#: How long a SQLite read waits for a lock (seconds). Why: a WAL reader waits
#: only while a checkpoint restarts the log, which takes milliseconds; 10 s is
#: the writers' default ``lock_timeout`` too.
SQLITE_READ_TIMEOUT_S: Final = 10.0
#: Default polling period for followers without LISTEN/NOTIFY, in seconds.
FOLLOW_POLL_S_DEFAULT: Final = 0.05
#: Attempts to create/open the tables when processes race to create them.
OPEN_ATTEMPTS_MAX: Final = 5
#: Application name: PostgreSQL tables derive from it (``routeledger_events``).
APPLICATION_NAME: Final = "routeledger"


class StoreError(RouteLedgerError):
    """The store could not do what was asked (see subclasses)."""


class Conflict(StoreError):
    """A stream moved on since the caller decided: reload, re-decide, retry."""

    def __init__(self, stream_id: str, expected_version: int, head_version: int | None) -> None:
        self.stream_id = stream_id
        #: The version the caller expected the stream to be at.
        self.expected_version = expected_version
        #: The version it was found at (``None`` if not known).
        self.head_version = head_version
        found = f"it is at version {head_version}" if head_version is not None else "it moved on"
        super().__init__(
            f"conflict on stream {stream_id!r}: the batch expected version "
            f"{expected_version}, but {found}; nothing of the batch was written"
        )


class InvalidAppend(StoreError, UsageError):
    """A batch holds an event the store must not write; nothing of the batch was written."""

    def __init__(self, index: int, evt: Event, problem: str) -> None:
        self.index = index
        self.stream_id = getattr(evt, "stream_id", None)
        self.problem = problem
        tag = type(evt).TAG or type(evt).__qualname__
        super().__init__(
            f"event #{index} of the batch ({tag} for stream {self.stream_id!r}) "
            f"cannot be appended: {problem}; nothing of the batch was written"
        )


class StoreUnavailable(StoreError):
    """The store cannot be opened or reached; the message names the URL, password masked."""


class StoreNotFound(StoreUnavailable):
    """The store does not exist and was opened read-only (``create=False``)."""


@attrs.frozen
class StreamHead:
    """The last version of a stream and its engine time (``0, 0`` for an empty stream)."""

    version: int
    at_us: int


@attrs.frozen
class StoredSnapshot:
    """A snapshot of some state, stored beside the log (bytes encoded by the caller)."""

    stream_id: str
    version: int
    topic: str
    payload: bytes


def _check_follows(index: int, evt: Event, previous: Event) -> None:
    """Raise :class:`InvalidAppend` unless ``evt`` follows ``previous`` (same stream, same batch)."""
    if evt.version != previous.version + 1:
        raise InvalidAppend(
            index,
            evt,
            f"version {evt.version} does not follow version {previous.version} "
            f"of the same stream earlier in the batch",
        )
    if evt.at_us < previous.at_us:
        raise InvalidAppend(
            index,
            evt,
            f"engine time goes backwards within the stream ({evt.at_us} < {previous.at_us})",
        )


class EventStore:
    """Append, load, read and follow RouteLedger's log on one backend."""

    def __init__(
        self,
        url: StoreUrl,
        factory: InfrastructureFactory,  # type: ignore[type-arg,unused-ignore]
        events: ApplicationRecorder,
        snapshots: AggregateRecorder,
        codec: Codec | None = None,
    ) -> None:
        self.url = url
        self._factory = factory
        self._events = events
        self._snapshots = snapshots
        self._codec = codec
        #: Stream id -> its last version and engine time: a :class:`StreamHead`
        #: read from the store, or the last event this store appended to it
        #: (both carry ``version`` and ``at_us``; keeping the event allocates nothing).
        self._heads: dict[str, StreamHead | Event] = {}
        self._lock = threading.Lock()
        #: In memory, positions are 1..n without gaps (the recorder is a list).
        self._counts_in_memory = url.backend == "memory"
        #: SQLite: our own read-only connection (opened on the first read).
        self._sqlite_reader: sqlite3.Connection | None = None
        #: SQLite: our own writer connection (see adapters/store/sqlite_log.py).
        self._sqlite_writer = (
            SqliteWriter(
                url.path,
                events.events_table_name,  # type: ignore[attr-defined]
                synchronous=url.options.get("synchronous", SQLITE_SYNCHRONOUS_DEFAULT),
                lock_timeout_s=float(url.options.get("lock_timeout", LOCK_TIMEOUT_S_DEFAULT)),
            )
            if url.backend == "sqlite"
            else None
        )
        #: SQLite: the page query :meth:`read` runs itself (see :meth:`_read_sqlite`).
        self._sqlite_page = (
            f"SELECT rowid, originator_id, originator_version, topic, state "
            f"FROM {events.events_table_name} WHERE rowid>? ORDER BY rowid LIMIT ?"  # type: ignore[attr-defined]
            if url.backend == "sqlite"
            else None
        )

    # --- properties ---------------------------------------------------------

    @property
    def backend(self) -> str:
        """``memory``, ``sqlite`` or ``postgresql``."""
        return self.url.backend

    @property
    def codec(self) -> Codec:
        """The codec in use (the default one over every registered event)."""
        return self._codec or default_codec()

    def write_problem(self) -> str | None:
        """Why this store cannot take an append now (``None`` when it can), writing nothing.

        SQLite: the file and its directory (WAL and shared-memory files live
        beside it) must be writable by this process. PostgreSQL: the session
        must not be read-only (a standby, ``default_transaction_read_only``).
        """
        if self.backend == "sqlite":
            path = self.url.path
            folder = os.path.dirname(os.path.abspath(path))
            for what, where in (("file", path), ("directory", folder)):
                if os.path.exists(where) and not os.access(where, os.W_OK):
                    return f"the {what} {where} is not writable"
            return None
        if self.backend != "postgresql":
            return None
        datastore = self._events.datastore  # type: ignore[attr-defined]
        try:
            with datastore.transaction(commit=False) as cursor:
                cursor.execute("SELECT current_setting('transaction_read_only')")
                row = cursor.fetchone()
        except Exception as error:
            return f"the database did not answer: {error}"
        value = row[0] if isinstance(row, tuple | list) else next(iter(dict(row).values()))
        return "the database session is read-only" if value == "on" else None

    # --- writing ----------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> tuple[int, ...]:
        """Append a batch atomically; return the log position of each event, in order.

        Raises :class:`InvalidAppend` (a bad event; nothing written) or
        :class:`Conflict` (a stale version; nothing written).
        """
        if not events:
            return ()
        if len(events) > APPEND_BATCH_EVENTS_MAX:
            raise InvalidAppend(
                APPEND_BATCH_EVENTS_MAX,
                events[APPEND_BATCH_EVENTS_MAX],
                f"the batch holds {len(events)} events, more than {APPEND_BATCH_EVENTS_MAX}",
            )
        stored, firsts, lasts = self._encode_batch(events)
        self._check_heads(firsts)
        try:
            positions: Sequence[int] | None
            if self._sqlite_writer is not None:
                positions = self._sqlite_writer.insert(stored)
            else:
                positions = self._events.insert_events(stored)
        except IntegrityError as error:
            self._forget(firsts)
            raise self._conflict_after_race(firsts) from error
        except PersistenceError as error:
            self._forget(firsts)
            raise StoreUnavailable(f"append to {self.url.masked} failed: {error}") from error
        with self._lock:
            if len(self._heads) + len(lasts) > HEAD_CACHE_STREAMS_MAX:
                self._forget_oldest_half()
            self._heads.update(lasts)
        return tuple(positions or ())

    def _forget_oldest_half(self) -> None:
        """Drop the first-cached half of the head cache (amortised O(1) per append)."""
        heads = self._heads
        for stream_id in list(itertools.islice(heads, len(heads) // 2 + 1)):
            del heads[stream_id]

    def _encode_batch(
        self, events: Sequence[Event]
    ) -> tuple[list[StoredEvent], dict[str, tuple[int, Event]], dict[str, Event]]:
        """Validate and encode a batch: its rows, each stream's first and last event in it.

        Raises :class:`InvalidAppend` for the first event that cannot be written
        or does not follow the one before it on its stream within the batch.
        """
        encode = (self._codec or default_codec()).encode
        compact = self._counts_in_memory
        stored: list[StoredEvent] = []
        #: Stream -> (index, event) of its first event in the batch, and its last event.
        firsts: dict[str, tuple[int, Event]] = {}
        lasts: dict[str, Event] = {}
        for index, evt in enumerate(events):
            problem = envelope_problem(evt)
            if problem is not None:
                raise InvalidAppend(index, evt, problem)
            stream_id = evt.stream_id
            previous = lasts.get(stream_id)
            if previous is None:
                firsts[stream_id] = (index, evt)
            else:
                _check_follows(index, evt, previous)
            lasts[stream_id] = evt
            try:
                topic, payload = encode(evt)
            except EncodeError as error:
                raise InvalidAppend(index, evt, str(error)) from error
            if compact:
                # orjson returns bytes shrunk from a 1 KiB buffer; kept for good (the
                # in-memory log keeps every payload) they fragment glibc's heap and
                # make each later allocation slower than a copy would (figures:
                # bench/README.md). A copy is a right-sized pymalloc block.
                payload = bytes(memoryview(payload))
            stored.append(StoredEvent(stream_id, evt.version, topic, payload))
        return stored, firsts, lasts

    def _check_heads(self, firsts: Mapping[str, tuple[int, Event]]) -> None:
        """Check each stream's first event of the batch against the stream's head.

        Raises :class:`Conflict` for a stale version and :class:`InvalidAppend`
        for a gap or an engine time before the head's.
        """
        for stream_id, (index, first) in firsts.items():
            if first.version == 1 and stream_id not in self._heads:
                # A new stream needs no read: if it exists after all, the insert
                # collides on (stream, 1) and becomes a Conflict below.
                continue
            head = self._heads.get(stream_id)
            if head is None or first.version > head.version + 1:
                # A cached head can only lag the real one. That makes "stale
                # version" (first <= head) certain, but an apparent gap must be
                # checked against the real head.
                head = self.head(stream_id)
            if first.version <= head.version:
                raise Conflict(stream_id, first.version - 1, head.version)
            if first.version > head.version + 1:
                raise InvalidAppend(
                    index,
                    first,
                    f"version {first.version} leaves a gap after the stream's head "
                    f"(version {head.version}); the next version is {head.version + 1}",
                )
            if first.at_us < head.at_us:
                raise InvalidAppend(
                    index,
                    first,
                    f"engine time goes backwards within the stream ({first.at_us} < "
                    f"{head.at_us}, the time of version {head.version})",
                )

    def _forget(self, streams: Mapping[str, object]) -> None:
        with self._lock:
            for stream_id in streams:
                self._heads.pop(stream_id, None)

    def _conflict_after_race(self, firsts: Mapping[str, tuple[int, Event]]) -> Conflict:
        for stream_id, (_, first) in firsts.items():
            head = self.head(stream_id)
            if head.version >= first.version:
                return Conflict(stream_id, first.version - 1, head.version)
        stream_id, (_, first) = next(iter(firsts.items()))
        return Conflict(stream_id, first.version - 1, None)

    # --- reading -----------------------------------------------------------------

    def head(self, stream_id: str) -> StreamHead:
        """The stream's last version and engine time, read from the store."""
        rows = self._events.select_events(stream_id, desc=True, limit=1)
        if not rows:
            return StreamHead(0, 0)
        last = self._decode(rows[0], None)
        head = StreamHead(last.version, last.at_us)
        with self._lock:
            if len(self._heads) >= HEAD_CACHE_STREAMS_MAX:
                self._forget_oldest_half()
            self._heads[stream_id] = head
        return head

    def load(self, stream_id: str, *, after_version: int = 0) -> list[Event]:
        """Every event of one stream with a version above ``after_version``, in order."""
        rows = self._events.select_events(stream_id, gt=after_version or None)
        return [self._decode(row, None) for row in rows]

    def read(self, after: int = 0, *, limit: int = READ_PAGE_EVENTS_DEFAULT) -> list[Recorded]:
        """Up to ``limit`` events with a position above ``after``, in log order."""
        if not 1 <= limit <= READ_PAGE_EVENTS_MAX:
            raise UsageError(f"read limit must be in 1..{READ_PAGE_EVENTS_MAX}, got {limit}")
        if self.known_read_up_to(after):
            return []  # in memory the head is a list's length, cheaper than a scan
        if self._sqlite_page is not None:
            return self._read_sqlite(after, limit)
        rows = self._events.select_notifications(start=after, limit=limit, inclusive_of_start=False)
        return [Recorded(row.id, self._decode(row, row.id)) for row in rows]

    def _read_sqlite(self, after: int, limit: int) -> list[Recorded]:
        """:meth:`read` on SQLite: the recorder's own query and connection, rows as tuples.

        Why: eventsourcing's ``select_notifications`` builds a ``Notification``
        per row from name-indexed rows, which costs more than fetching the rows
        themselves (figures: bench/README.md); replays read every row.
        """
        decode = self.codec.decode
        page, writer = self._sqlite_page, self._sqlite_writer
        assert page is not None and writer is not None  # called only on SQLite
        token = writer.read_token()  # before the read: a later commit changes it
        with self._lock:
            reader = self._sqlite_reader
            if reader is None:
                reader = self._sqlite_reader = self._open_sqlite_reader()
            rows = reader.execute(page, (after, limit)).fetchall()
        if len(rows) < limit:  # the read reached the end of the log
            writer.note_read(token, after, rows[-1][0] if rows else None)
        return [
            Recorded(
                row[0], decode(row[3], row[4], stream_id=row[1], version=row[2], position=row[0])
            )
            for row in rows
        ]

    def _open_sqlite_reader(self) -> sqlite3.Connection:
        """A read-only connection of our own, each query its own read transaction.

        Why: a read through eventsourcing's pool (a connection checked out, an
        explicit BEGIN and ROLLBACK) cost ~70 µs, about ten times the query
        itself, and the engine reads before every decision (A5).
        """
        uri = f"file:{urllib.parse.quote(self.url.path)}?mode=ro"
        try:
            return sqlite3.connect(
                uri,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=SQLITE_READ_TIMEOUT_S,
            )
        except sqlite3.Error as error:
            raise StoreUnavailable(f"read from {self.url.masked} failed: {error}") from error

    def known_read_up_to(self, position: int) -> bool:
        """Whether the log certainly holds nothing after ``position`` (no read needed).

        In memory the head is a list's length. On SQLite the writer knows the
        log's end as of its data version, which changes when any other
        connection commits (adapters/store/sqlite_log.py). On PostgreSQL this is
        ``False`` and the caller reads.
        """
        if self._sqlite_writer is not None:
            return self._sqlite_writer.nothing_after(position)
        return self._counts_in_memory and position >= (self._events.max_notification_id() or 0)

    def read_all(
        self, after: int = 0, *, page: int = READ_PAGE_EVENTS_DEFAULT
    ) -> Iterator[Recorded]:
        """Every event with a position above ``after``, read in pages of ``page``."""
        while True:
            batch = self.read(after, limit=page)
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1].position

    def read_raw(
        self, after: int = 0, *, limit: int = READ_PAGE_EVENTS_DEFAULT
    ) -> Sequence[Notification]:
        """Stored rows as they are (topic and bytes), for tools that must not decode."""
        return self._events.select_notifications(start=after, limit=limit, inclusive_of_start=False)

    def max_position(self) -> int:
        """The position of the last event in the log, ``0`` when empty."""
        return self._events.max_notification_id() or 0

    def follow(self, after: int = 0, *, poll_s: float = FOLLOW_POLL_S_DEFAULT) -> Follower:
        """Follow the log from ``after``: iterate events as they are appended, until stopped."""
        return Follower(self, after, poll_s)

    def _decode(self, row: StoredEvent, position: int | None) -> Event:
        return self.codec.decode(
            row.topic,
            row.state,
            stream_id=str(row.originator_id),
            version=row.originator_version,
            position=position,
        )

    # --- snapshots ------------------------------------------------------------

    def save_snapshot(self, snapshot: StoredSnapshot) -> None:
        """Store a snapshot; saving the very same snapshot again is a no-op."""
        problem = stream_id_problem(snapshot.stream_id)
        if problem is not None or snapshot.version < 1:
            raise UsageError(
                f"snapshot for {snapshot.stream_id!r} version {snapshot.version}: "
                f"{problem or 'version must be >= 1'}"
            )
        row = StoredEvent(
            originator_id=snapshot.stream_id,
            originator_version=snapshot.version,
            topic=snapshot.topic,
            state=snapshot.payload,
        )
        try:
            self._snapshots.insert_events([row])
        except IntegrityError as error:
            existing = self._snapshots.select_events(
                snapshot.stream_id, gt=snapshot.version - 1, lte=snapshot.version
            )
            if existing and existing[0].state == snapshot.payload:
                return
            raise Conflict(snapshot.stream_id, snapshot.version - 1, snapshot.version) from error

    def latest_snapshot(self, stream_id: str) -> StoredSnapshot | None:
        """The snapshot with the highest version for ``stream_id``, or ``None``."""
        rows = self._snapshots.select_events(stream_id, desc=True, limit=1)
        if not rows:
            return None
        row = rows[0]
        return StoredSnapshot(str(row.originator_id), row.originator_version, row.topic, row.state)

    def snapshots(
        self, stream_id: str, *, after_version: int = 0, limit: int = READ_PAGE_EVENTS_DEFAULT
    ) -> list[StoredSnapshot]:
        """Up to ``limit`` snapshots of ``stream_id`` above ``after_version``, oldest first."""
        if not 1 <= limit <= READ_PAGE_EVENTS_MAX:
            raise UsageError(f"snapshot page must be in 1..{READ_PAGE_EVENTS_MAX}, got {limit}")
        rows = self._snapshots.select_events(stream_id, gt=after_version or None, limit=limit)
        return [
            StoredSnapshot(str(row.originator_id), row.originator_version, row.topic, row.state)
            for row in rows
        ]

    def delete_snapshot(self, stream_id: str, version: int) -> bool:
        """Delete one stored snapshot (a cache entry, never an event); whether it existed."""
        recorder: Any = self._snapshots
        if not recorder.select_events(stream_id, gt=version - 1, lte=version):
            return False
        if self.backend == "memory":
            with recorder._database_lock:
                slot = recorder._stored_events_index[stream_id].pop(version)
                # Free the payload; the recorder's list keeps one empty row per deletion.
                recorder._stored_events[slot] = StoredEvent(stream_id, version, "", b"")
            return True
        if self.backend == "sqlite":
            statement = (
                f"DELETE FROM {recorder.events_table_name} "
                "WHERE originator_id=? AND originator_version=?"
            )
            with recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(statement, (stream_id, version))
            return True
        from psycopg.sql import SQL, Identifier

        query = SQL(
            "DELETE FROM {schema}.{table} WHERE originator_id=%s AND originator_version=%s"
        ).format(
            schema=Identifier(recorder.datastore.schema),
            table=Identifier(recorder.events_table_name),
        )
        with recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(query, (stream_id, version))
        return True

    def checkpoint(self) -> None:
        """SQLite: copy the write-ahead log into the database file now (a no-op elsewhere).

        Why: SQLite checkpoints automatically in whichever commit crosses 1,000
        WAL pages, so after a multi-megabyte snapshot write the next request's
        commit would copy and sync it. The maintenance thread calls this
        after saving one instead (``PASSIVE``: it never waits for writers).
        """
        if self.backend != "sqlite":
            return
        recorder: Any = self._snapshots
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # --- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Release connections (idempotent)."""
        with self._lock:
            if self._sqlite_reader is not None:
                self._sqlite_reader.close()
                self._sqlite_reader = None
        if self._sqlite_writer is not None:
            self._sqlite_writer.close()
        self._factory.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Follower:
    """Iterates the log from a position, blocking for new events until :meth:`stop`.

    On PostgreSQL it uses LISTEN/NOTIFY (eventsourcing's subscription); on SQLite
    and in memory it polls every ``poll_s`` seconds. :meth:`stop` may be called
    from any thread; the iterator then ends.
    """

    def __init__(self, store: EventStore, after: int, poll_s: float) -> None:
        self._store = store
        self.position = after
        self._poll_s = poll_s
        self._stopped = threading.Event()
        self._subscription = None
        if store.backend == "postgresql":
            self._subscription = store._events.subscribe(gt=after)
            self._subscription.__enter__()

    def __iter__(self) -> Iterator[Recorded]:
        if self._subscription is not None:
            for row in self._subscription:
                recorded = Recorded(row.id, self._store._decode(row, row.id))
                self.position = row.id
                yield recorded
            return
        while not self._stopped.is_set():
            batch = self._store.read(self.position, limit=READ_PAGE_EVENTS_DEFAULT)
            for recorded in batch:
                self.position = recorded.position
                yield recorded
                if self._stopped.is_set():
                    return
            if not batch:
                self._stopped.wait(self._poll_s)

    def stop(self) -> None:
        """End the iteration (thread-safe, idempotent)."""
        self._stopped.set()
        if self._subscription is not None:
            self._subscription.stop()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if self._subscription is not None:
            self._subscription.__exit__(None, None, None)


def open_store(
    url: str | None = None,
    *,
    create: bool = True,
    codec: Codec | None = None,
) -> EventStore:
    """Open the store named by ``url`` (default ``sqlite:///routeledger.db``).

    ``memory://`` — in-process, gone at exit. ``sqlite:///relative/file.db`` or
    ``sqlite:////absolute/file.db`` — the embedded default. ``postgresql://user:
    password@host:port/dbname`` — several processes or hosts. With
    ``create=False`` a missing SQLite file is :class:`StoreNotFound` instead of
    being created, and no tables are created.
    """
    parsed = parse_store_url(url)
    env = Environment(name=APPLICATION_NAME, env=_environment(parsed, create=create))
    if parsed.backend == "sqlite" and not create and not parsed.sqlite_path_exists():
        raise StoreNotFound(f"no store at {parsed.masked}: the file {parsed.path} does not exist")
    if parsed.backend == "postgresql":
        _require_postgres_driver(parsed)
    try:
        factory = InfrastructureFactory.construct(env)
    except (PersistenceError, OSError) as error:
        raise StoreUnavailable(f"cannot open {parsed.masked}: {error}") from error
    for attempt in range(1, OPEN_ATTEMPTS_MAX + 1):
        try:
            events = factory.application_recorder()
            snapshots = factory.aggregate_recorder(purpose="snapshots")
            # Touch the database now, so an unreachable server fails here, not later.
            events.max_notification_id()
        except (InternalError, IntegrityError) as error:
            # Several processes creating the tables at once race in PostgreSQL's
            # catalog ("tuple concurrently updated"); the loser retries.
            if attempt == OPEN_ATTEMPTS_MAX:
                factory.close()
                raise StoreUnavailable(
                    f"cannot open {parsed.masked}: {_first_line(error)}"
                ) from error
            time.sleep(0.05 * attempt)
        except (PersistenceError, OSError) as error:
            factory.close()
            raise StoreUnavailable(f"cannot open {parsed.masked}: {_first_line(error)}") from error
        else:
            return EventStore(parsed, factory, events, snapshots, codec)
    raise AssertionError("unreachable")  # pragma: no cover


def _require_postgres_driver(url: StoreUrl) -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as error:
        raise StoreUnavailable(
            f"cannot open {url.masked}: the PostgreSQL driver is not installed "
            f"({error.name or error}); install it with: pip install 'routeledger[postgres]'"
        ) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _environment(url: StoreUrl, *, create: bool) -> dict[str, str]:
    env = {
        "ORIGINATOR_ID_TYPE": "text",
        "CREATE_TABLE": "yes" if create else "no",
    }
    if url.backend == "memory":
        env["PERSISTENCE_MODULE"] = "eventsourcing.popo"
    elif url.backend == "sqlite":
        env["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
        env["SQLITE_DBNAME"] = url.path
        env["SQLITE_LOCK_TIMEOUT"] = url.options.get("lock_timeout", LOCK_TIMEOUT_S_DEFAULT)
    else:
        env.update(
            {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_DBNAME": url.dbname,
                "POSTGRES_HOST": url.host,
                "POSTGRES_PORT": str(url.port),
                "POSTGRES_USER": url.user,
                "POSTGRES_PASSWORD": url.password,
                "POSTGRES_CONNECT_TIMEOUT": url.options.get("connect_timeout", "5"),
                "POSTGRES_LOCK_TIMEOUT": url.options.get("lock_timeout", LOCK_TIMEOUT_S_DEFAULT),
                "POSTGRES_POOL_SIZE": url.options.get("pool_size", "5"),
                "POSTGRES_MAX_OVERFLOW": url.options.get("max_overflow", "10"),
                "POSTGRES_SCHEMA": url.options.get("schema", ""),
                "POSTGRES_PRE_PING": "yes",
                # Never POSTGRES_ENABLE_DB_FUNCTIONS: it drops the table lock and
                # lets a follower read a later id before an earlier one commits.
                "POSTGRES_ENABLE_DB_FUNCTIONS": "no",
            }
        )
    return env
