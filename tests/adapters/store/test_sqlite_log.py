"""The SQLite store's own writer: its durability setting, and reading only when someone else wrote."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.results import Served
from routeledger.adapters.store.eventstore import Conflict, EventStore, open_store
from routeledger.adapters.store.urls import StoreUrlError
from routeledger.adapters.testing.clock import FakeClock, counter_ids
from tests.adapters.engine.test_engine import make_engine
from tests.adapters.engine.test_operator import _serve
from tests.adapters.store.test_store_contract import CODEC
from tests.adapters.store.test_store_contract import probe as ev


def _synchronous(store: EventStore) -> int:
    """What SQLite reports for the writer connection's ``synchronous`` (1 normal, 2 full)."""
    writer = store._sqlite_writer
    assert writer is not None
    return int(writer._connected().execute("PRAGMA synchronous").fetchone()[0])


def _reads(store: EventStore) -> list[int]:
    """Count the store's log reads from now on (each call appends the ``after`` it read from)."""
    calls: list[int] = []
    original = store.read

    def counting(after: int = 0, **kwargs: int) -> list:  # type: ignore[type-arg]
        calls.append(after)
        return original(after, **kwargs)

    store.read = counting  # type: ignore[method-assign]
    return calls


def test_commits_are_normal_by_default_and_full_when_the_url_says(tmp_path: Path) -> None:
    """A SQLite store syncs at checkpoints by default and at every commit with synchronous=full."""
    normal = open_store(f"sqlite:///{tmp_path / 'a.db'}", codec=CODEC)
    full = open_store(f"sqlite:///{tmp_path / 'b.db'}?synchronous=full", codec=CODEC)
    normal.append([ev("s-1", 1)])
    full.append([ev("s-1", 1)])
    assert _synchronous(normal) == 1 and _synchronous(full) == 2
    normal.close()
    full.close()


@pytest.mark.parametrize("value", ["off", "FULL", "", "2"])
def test_an_unknown_synchronous_value_is_refused_naming_it(tmp_path: Path, value: str) -> None:
    """Only normal and full are accepted; anything else is a StoreUrlError quoting the value."""
    with pytest.raises(StoreUrlError, match=f"synchronous={value!r} must be one of normal, full"):
        open_store(f"sqlite:///{tmp_path / 'a.db'}?synchronous={value}", codec=CODEC)
    assert not (tmp_path / "a.db").exists()


def test_another_connections_append_is_noticed_and_read(tmp_path: Path) -> None:
    """After another store on the file appends, this one knows a read is needed, and reads it."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    ours, theirs = open_store(url, codec=CODEC), open_store(url, codec=CODEC)
    ours.append([ev("s-1", 1)])
    assert [r.position for r in ours.read(0)] == [1]
    assert ours.known_read_up_to(1)
    theirs.append([ev("s-2", 1)])
    assert not ours.known_read_up_to(1)
    assert [r.event.stream_id for r in ours.read(1)] == ["s-2"]
    assert ours.known_read_up_to(2) and not ours.known_read_up_to(1)
    ours.close()
    theirs.close()


def test_another_process_append_is_noticed(tmp_path: Path) -> None:
    """A commit by another process changes what this store knows: the next check says read."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    ours = open_store(url, codec=CODEC)
    ours.append([ev("s-1", 1)])
    ours.read(0)
    assert ours.known_read_up_to(1)
    code = (
        "import sys\n"
        "from routeledger.adapters.store.eventstore import open_store\n"
        "from tests.adapters.store.test_store_contract import CODEC, probe\n"
        "open_store(sys.argv[1], codec=CODEC).append([probe('s-2', 1)])\n"
    )
    subprocess.run([sys.executable, "-c", code, url], check=True, cwd=Path(__file__).parents[3])
    assert not ours.known_read_up_to(1)
    assert [r.position for r in ours.read(1)] == [2]
    ours.close()


def test_our_own_appends_need_no_read(tmp_path: Path) -> None:
    """Once the log's end is known, this store's own appends keep it known without reading."""
    ours = open_store(f"sqlite:///{tmp_path / 'log.db'}", codec=CODEC)
    assert ours.read(0) == [] and ours.known_read_up_to(0)
    ours.append([ev("s-1", 1), ev("s-1", 2)])
    ours.append([ev("s-2", 1)])
    assert ours.known_read_up_to(3) and not ours.known_read_up_to(2)
    ours.close()


def test_a_write_by_sqlite_directly_is_noticed(tmp_path: Path) -> None:
    """Any committed change by another connection (here plain sqlite3) makes the store read."""
    path = tmp_path / "log.db"
    ours = open_store(f"sqlite:///{path}", codec=CODEC)
    ours.append([ev("s-1", 1)])
    ours.read(0)
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE unrelated (x)")
    assert not ours.known_read_up_to(1)
    ours.close()


def test_a_lone_engine_reads_no_log_per_decision(tmp_path: Path) -> None:
    """One engine alone on a SQLite file decides 20 requests without reading the log once."""
    engine, _clock = make_engine(store=f"sqlite:///{tmp_path / 'log.db'}")
    reads = _reads(engine.store)
    for _ in range(20):
        with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
            for attempt in req.sync_attempts():
                attempt.succeeded(input_tokens=10, output_tokens=10)
        assert isinstance(req.result, Served)
    assert reads == []
    engine.close()


def test_a_suspension_recorded_by_another_engine_steers_the_very_next_request(
    tmp_path: Path,
) -> None:
    """A5 on SQLite: engine B's 401 on credential a is read before A's next decision; A uses b."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    first, _ = make_engine(store=url)
    second = Engine.open(url, first.config, clock=FakeClock(), ids=counter_ids("other"))

    assert _serve(first)[1] == ["a"]
    reads = _reads(first.store)
    assert _serve(second, fail_on="a")[1] == ["a", "b"]
    assert _serve(first)[1] == ["b"]
    assert reads  # it read because another engine wrote
    first.close()
    second.close()


def test_a_read_overtaken_by_our_own_append_teaches_nothing(tmp_path: Path) -> None:
    """A read begun before one of our appends and noted after it cannot hide that append."""
    store = open_store(f"sqlite:///{tmp_path / 'log.db'}", codec=CODEC)
    writer = store._sqlite_writer
    assert writer is not None
    assert store.read(0) == []
    token = writer.read_token()  # a read begins: the log is empty
    store.append([ev("s-1", 1)])  # our append lands before that read is noted
    writer.note_read(token, 0, None)
    assert not store.known_read_up_to(0)
    assert [r.position for r in store.read(0)] == [1]
    store.close()


def test_a_batch_larger_than_one_statement_lands_whole_or_not_at_all(tmp_path: Path) -> None:
    """2,500 events go in as one transaction; a clash in its last page writes none of them."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    ours, theirs = open_store(url, codec=CODEC), open_store(url, codec=CODEC)
    positions = ours.append([ev(f"s-{i}", 1) for i in range(2_500)])
    assert positions == tuple(range(1, 2_501))
    theirs.append([ev("late", 1)])  # unknown to ours: only the insert can find the clash
    batch = [ev(f"t-{i}", 1) for i in range(2_400)] + [ev("late", 1)]
    with pytest.raises(Conflict):
        ours.append(batch)
    assert [r.event.stream_id for r in ours.read(2_500, limit=10)] == ["late"]
    ours.close()
    theirs.close()
