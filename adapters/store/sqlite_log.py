"""The SQLite log's writer: its own connection, its durability setting, and when a read is needed.

Why a connection of our own rather than eventsourcing's pool: an append through the
pool (check a connection out, a statement per event, check it back in) cost about
a third of a request's store time, and the pool cannot say cheaply whether anyone
else has written since. This writer appends a batch as one multi-row ``INSERT``
(its own transaction): each statement lets go of the GIL and waits to take it back,
and in the group committer's worker beside a busy event loop each wait can last the
interpreter's 5 ms switch interval (bench/README.md) and answers :meth:`SqliteWriter.nothing_after` from
``PRAGMA data_version``, which changes exactly when *another* connection (in this
process or any other) has committed. The engine asks before every decision
whether the log holds anything it has not folded (A5); with one gateway process
the answer is nearly always no, and now costs a pragma instead of a read.

Durability (``synchronous`` in the store URL; README.md, "Stores"):

* ``normal`` (the default) — a commit is written to the write-ahead log and is
  visible to every process at once; it survives the gateway process crashing or
  being killed. A power loss or operating-system crash may roll back the last
  commits before the next checkpoint, never corrupt the file (SQLite's WAL
  guarantee). This is the setting Rails, Litestream and most WAL deployments use.
* ``full`` — every commit is also synced to disk before the append returns
  (~0.3 ms each here, two per request): a recorded decision survives power loss.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Final

from eventsourcing.persistence import IntegrityError, PersistenceError, StoredEvent

__all__ = [
    "SQLITE_INSERT_ROWS_MAX",
    "SQLITE_SYNCHRONOUS_DEFAULT",
    "SQLITE_SYNCHRONOUS_MODES",
    "SqliteWriter",
]

#: Rows per SQLite INSERT statement. Why: 4 parameters a row and SQLite's
#: limit of 32,766 parameters a statement; 1,000 rows already make the
#: per-statement cost negligible.
SQLITE_INSERT_ROWS_MAX: Final = 1_000
#: The durability a SQLite store gets when its URL does not say (module docstring).
SQLITE_SYNCHRONOUS_DEFAULT: Final = "normal"
#: The values ``synchronous`` may take in a SQLite store URL (module docstring).
SQLITE_SYNCHRONOUS_MODES: Final = ("normal", "full")


class SqliteWriter:
    """Appends to one SQLite events table and remembers how far the log is known to reach.

    Thread-safe: one lock serialises the connection (SQLite admits one writer
    at a time anyway). The connection opens on first use.
    """

    def __init__(self, path: str, table: str, *, synchronous: str, lock_timeout_s: float) -> None:
        assert synchronous in SQLITE_SYNCHRONOUS_MODES  # the store URL's parser checked it
        self._path = path
        self._synchronous = synchronous
        self._lock_timeout_s = lock_timeout_s
        self._insert_prefix = f"INSERT INTO {table} VALUES "
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        #: The log certainly holds nothing after ``_tail`` while this
        #: connection's data version is still ``_tail_version`` (``None``: not known).
        self._tail = 0
        self._tail_version: int | None = None
        #: Our own committed appends so far: a read that an append of ours overtook
        #: (taken before it, noted after it) says nothing about the log's end.
        self._appends = 0

    def insert(self, rows: Sequence[StoredEvent]) -> list[int]:
        """Insert the rows in one transaction; their positions (rowids), in order.

        Raises eventsourcing's :class:`IntegrityError` when a (stream, version)
        is taken and :class:`PersistenceError` for anything else SQLite refuses;
        either way nothing is written.
        """
        with self._lock:
            connection = self._connected()
            try:
                if len(rows) <= SQLITE_INSERT_ROWS_MAX:
                    positions = self._insert_rows(connection, rows)
                else:
                    positions = self._insert_in_pages(connection, rows)
            except sqlite3.IntegrityError as error:
                raise IntegrityError(error) from error
            except sqlite3.Error as error:
                raise PersistenceError(error) from error
            self._appends += 1
            self._advance_tail(positions)
            return positions

    def _insert_rows(
        self, connection: sqlite3.Connection, rows: Sequence[StoredEvent]
    ) -> list[int]:
        """One multi-row INSERT; the rowids the rows took (in order, within its transaction)."""
        cursor = connection.execute(
            self._insert_prefix + ",".join(("(?,?,?,?)",) * len(rows)),
            [v for r in rows for v in (r.originator_id, r.originator_version, r.topic, r.state)],
        )
        last = cursor.lastrowid
        assert last is not None  # an INSERT that returned sets it
        return list(range(last - len(rows) + 1, last + 1))

    def _insert_in_pages(
        self, connection: sqlite3.Connection, rows: Sequence[StoredEvent]
    ) -> list[int]:
        """A batch larger than one statement: several INSERTs in one explicit transaction."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            positions: list[int] = []
            for start in range(0, len(rows), SQLITE_INSERT_ROWS_MAX):
                positions += self._insert_rows(
                    connection, rows[start : start + SQLITE_INSERT_ROWS_MAX]
                )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return positions

    def _advance_tail(self, positions: Sequence[int]) -> None:
        """After our own commit right after the known tail: ours is the new tail.

        The data version stays the one the old tail was known at: if anyone else
        committed since (before our rows or after them), it has changed and
        :meth:`nothing_after` says a read is needed, so no pragma is spent here.
        """
        if positions and self._tail_version is not None and positions[0] == self._tail + 1:
            self._tail = positions[-1]

    def nothing_after(self, position: int) -> bool:
        """Whether the log certainly holds nothing after ``position`` (no read needed)."""
        if self._tail_version is None or position < self._tail:
            return False
        with self._lock:
            version = self._data_version_locked()
            return version is not None and version == self._tail_version and position >= self._tail

    def read_token(self) -> tuple[int, int] | None:
        """Take before a read: this connection's data version and our appends so far.

        ``None`` when the version cannot be had (the read then teaches nothing).
        """
        with self._lock:
            version = self._data_version_locked()
            return None if version is None else (version, self._appends)

    def _data_version_locked(self) -> int | None:
        try:
            return self._version(self._connected())
        except (sqlite3.Error, PersistenceError):
            return None

    def note_read(self, token: tuple[int, int] | None, after: int, last: int | None) -> None:
        """A read taken after :meth:`read_token` gave ``token`` reached the log's end.

        ``last`` is the position of the last event it returned (``None``: it
        returned nothing after ``after``). If we appended since the token was
        taken, the read may predate our rows: it is ignored (the tail known
        before stays true, and a later read settles it).
        """
        if token is None:
            return
        version, appends = token
        with self._lock:
            if appends != self._appends:
                return
            self._tail = after if last is None else last
            self._tail_version = version

    def close(self) -> None:
        """Close the connection (idempotent; a later append opens it again)."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            self._tail_version = None

    @staticmethod
    def _version(connection: sqlite3.Connection) -> int:
        row = connection.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def _connected(self) -> sqlite3.Connection:
        """The connection, opened on first use with the store's durability setting."""
        if self._connection is None:
            try:
                connection = sqlite3.connect(
                    self._path,
                    isolation_level=None,  # autocommit: each INSERT is its own transaction
                    check_same_thread=False,  # every use holds self._lock
                    timeout=self._lock_timeout_s,
                )
                connection.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            except sqlite3.Error as error:
                raise PersistenceError(error) from error
            self._connection = connection
        return self._connection
