"""The event-store contract, written once and run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import attrs
import pytest
from eventsourcing.persistence import StoredEvent

from routeledger.adapters.store.codec import (
    Codec,
    DecodeError,
    FutureSchemaVersion,
    InvalidPayload,
    MalformedPayload,
    UnknownEventTag,
)
from routeledger.adapters.store.eventstore import (
    Conflict,
    EventStore,
    InvalidAppend,
    Recorded,
    StoredSnapshot,
    StreamHead,
    open_store,
)
from routeledger.core.errors import UsageError
from routeledger.core.events import Event, EventRegistry, Origin, event

REG = EventRegistry()


@event("routeledger.ProbeRecorded", 1, Origin.OBSERVED, registry=REG)
@attrs.frozen(kw_only=True)
class ProbeRecorded(Event):
    n: int
    note: str = ""


CODEC = Codec(REG)


def probe(stream: str, version: int, at_us: int = 1_000, n: int = 0) -> ProbeRecorded:
    return ProbeRecorded(stream_id=stream, version=version, at_us=at_us, n=n)


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    with open_store(store_url, codec=CODEC) as opened:
        yield opened


def raw_rows(store: EventStore) -> list[tuple[int, str, int, str, bytes]]:
    return [
        (r.id, str(r.originator_id), r.originator_version, r.topic, r.state)
        for r in store.read_raw(0, limit=10_000)
    ]


def inject(store: EventStore, stream: str, version: int, topic: str, payload: bytes) -> None:
    """Write a row behind the codec's back, as a corrupt or foreign writer would."""
    store._events.insert_events(
        [StoredEvent(originator_id=stream, originator_version=version, topic=topic, state=payload)]
    )


def test_append_then_load_returns_the_events_in_version_order(store: EventStore) -> None:
    """A stream loads back exactly the events appended to it, in version order."""
    events = [probe("s:a", 1, n=1), probe("s:a", 2, n=2), probe("s:a", 3, n=3)]
    store.append(events)
    assert store.load("s:a") == events
    assert store.load("s:a", after_version=1) == events[1:]
    assert store.head("s:a") == StreamHead(3, 1_000)
    assert store.head("s:unknown") == StreamHead(0, 0)


def test_positions_are_increasing_and_reads_page_through_the_whole_log(store: EventStore) -> None:
    """Every appended event gets an increasing position and read_all pages through all of them."""
    positions: list[int] = []
    for i in range(1, 26):
        positions += store.append([probe(f"s:{i % 3}", i // 3 + 1 if i % 3 else i // 3, n=i)])
    assert positions == sorted(positions)
    assert len(set(positions)) == 25
    everything = list(store.read_all(0, page=4))
    assert [r.position for r in everything] == positions
    assert [r.event.n for r in everything] == list(range(1, 26))  # type: ignore[attr-defined]
    assert [r.position for r in store.read(positions[9], limit=3)] == positions[10:13]
    assert store.max_position() == positions[-1]


def test_a_batch_across_streams_is_written_atomically(store: EventStore) -> None:
    """A multi-stream batch is all written, with consecutive positions in batch order."""
    positions = store.append([probe("s:a", 1), probe("s:b", 1), probe("s:a", 2)])
    assert len(positions) == 3
    assert [r.event.stream_id for r in store.read(0)] == ["s:a", "s:b", "s:a"]


def test_a_batch_larger_than_one_insert_statement_keeps_its_positions(store: EventStore) -> None:
    """A 2,500-event batch (three SQLite statements) gets the positions the log reads back."""
    before = store.max_position()
    events = [probe(f"big:{i % 7}", i // 7 + 1, n=i) for i in range(2_500)]
    positions = store.append(events)
    assert len(positions) == 2_500 and positions == tuple(sorted(set(positions)))
    read = list(store.read_all(before))
    assert [r.position for r in read] == list(positions)
    assert [r.event.n for r in read] == list(range(2_500))  # type: ignore[attr-defined]


def test_a_stale_version_is_a_conflict_naming_the_stream_and_writes_nothing(
    store: EventStore,
) -> None:
    """A batch whose version on one stream is stale raises Conflict for that stream, log unchanged."""
    store.append([probe("s:a", 1), probe("s:b", 1)])
    before = raw_rows(store)
    with pytest.raises(Conflict) as caught:
        store.append([probe("s:b", 2), probe("s:a", 1)])
    assert caught.value.stream_id == "s:a"
    assert caught.value.head_version == 1
    assert "s:a" in str(caught.value)
    assert raw_rows(store) == before


def test_a_version_gap_is_rejected_and_writes_nothing(store: EventStore) -> None:
    """A first version beyond head + 1 is an InvalidAppend naming the next version."""
    store.append([probe("s:a", 1)])
    before = raw_rows(store)
    with pytest.raises(InvalidAppend, match="next version is 2"):
        store.append([probe("s:b", 1), probe("s:a", 3)])
    assert raw_rows(store) == before


def test_versions_within_a_batch_must_be_consecutive(store: EventStore) -> None:
    """Two events of one stream in a batch must have consecutive versions."""
    with pytest.raises(InvalidAppend, match="does not follow version 1"):
        store.append([probe("s:a", 1), probe("s:a", 3)])
    assert raw_rows(store) == []


@pytest.mark.parametrize(
    "batch",
    [
        [probe("s:a", 1, at_us=50), probe("s:a", 2, at_us=49)],
        [probe("s:a", 2, at_us=10)],
    ],
    ids=["within-batch", "behind-head"],
)
def test_engine_time_going_backwards_within_a_stream_is_rejected(
    store: EventStore, batch: list[ProbeRecorded]
) -> None:
    """Engine time never decreases within a stream; a batch that would is rejected whole."""
    if batch[0].version == 2:
        store.append([probe("s:a", 1, at_us=20)])
    before = raw_rows(store)
    with pytest.raises(InvalidAppend, match="engine time goes backwards"):
        store.append(batch)
    assert raw_rows(store) == before


def test_engine_time_may_go_backwards_across_streams(store: EventStore) -> None:
    """Ordering of engine time is per stream: another stream may carry an earlier time."""
    store.append([probe("s:a", 1, at_us=50)])
    store.append([probe("s:b", 1, at_us=10)])
    assert store.head("s:b") == StreamHead(1, 10)


@pytest.mark.parametrize(
    ("stream_id", "fragment"),
    [
        ("", "empty"),
        ("has space", "non-printable or space"),
        ("nul\x00byte", "non-printable or space"),
        ("x" * 201, "more than 200"),
    ],
)
def test_a_stream_id_the_store_cannot_hold_is_rejected(
    store: EventStore, stream_id: str, fragment: str
) -> None:
    """Stream ids that are empty, too long or hold spaces/control characters are rejected whole."""
    with pytest.raises(InvalidAppend, match=fragment) as caught:
        store.append([probe("s:ok", 1), probe(stream_id, 1)])
    assert caught.value.index == 1
    assert raw_rows(store) == []


def test_a_batch_with_one_unencodable_event_writes_nothing(store: EventStore) -> None:
    """An event whose value JSON cannot hold (an int beyond 64 bits) rejects the whole batch."""
    with pytest.raises(InvalidAppend, match="cannot encode") as caught:
        store.append([probe("s:a", 1), probe("s:b", 1, n=2**70)])
    assert caught.value.index == 1
    assert raw_rows(store) == []


def test_an_unregistered_event_class_is_rejected(store: EventStore) -> None:
    """An event class the codec does not know is rejected before anything is written."""

    @attrs.frozen(kw_only=True)
    class Stray(Event):
        pass

    with pytest.raises(InvalidAppend, match="not declared with @event"):
        store.append([Stray(stream_id="s:a", version=1, at_us=1)])
    assert raw_rows(store) == []


def test_invalid_envelope_values_are_rejected(store: EventStore) -> None:
    """Version 0 and engine time outside the representable range are rejected."""
    with pytest.raises(InvalidAppend, match="version must be an int >= 1"):
        store.append([probe("s:a", 0)])
    with pytest.raises(InvalidAppend, match="at_us must be an int"):
        store.append([probe("s:a", 1, at_us=-1)])
    assert raw_rows(store) == []


def test_an_oversized_batch_is_rejected(store: EventStore) -> None:
    """A batch above APPEND_BATCH_EVENTS_MAX is rejected without writing."""
    from routeledger.adapters.store.eventstore import APPEND_BATCH_EVENTS_MAX

    batch = [probe("s:a", v) for v in range(1, APPEND_BATCH_EVENTS_MAX + 2)]
    with pytest.raises(InvalidAppend, match="more than"):
        store.append(batch)
    assert raw_rows(store) == []


def test_an_empty_batch_is_a_no_op(store: EventStore) -> None:
    """Appending nothing writes nothing and returns no positions."""
    assert store.append([]) == ()
    assert store.max_position() == 0


@pytest.mark.parametrize(
    ("topic", "payload", "error", "fragment"),
    [
        ("routeledger.ProbeRecorded/1", b"\xff\x00garbage", MalformedPayload, "not JSON"),
        ("routeledger.ProbeRecorded/1", b"[1, 2]", MalformedPayload, "not an object"),
        ("routeledger.Unheard/1", b'{"at_us": 1}', UnknownEventTag, "no event class"),
        ("routeledger.ProbeRecorded/7", b'{"at_us": 1, "n": 1}', FutureSchemaVersion, "newer"),
        (
            "routeledger.ProbeRecorded/1",
            b'{"at_us": 1, "n": "1", "note": ""}',
            InvalidPayload,
            "expected int",
        ),
        (
            "routeledger.ProbeRecorded/1",
            b'{"at_us": 1, "n": 1, "note": "", "extra": 0}',
            InvalidPayload,
            "extra",
        ),
        ("routeledger.ProbeRecorded/1", b'{"at_us": 1, "note": ""}', InvalidPayload, "missing"),
    ],
    ids=["bytes", "array", "unknown-tag", "future-schema", "wrong-type", "extra", "missing"],
)
def test_a_corrupt_stored_event_raises_a_typed_error_naming_its_position(
    store: EventStore,
    topic: str,
    payload: bytes,
    error: type[DecodeError],
    fragment: str,
) -> None:
    """Reading a corrupt row raises a typed DecodeError with tag, stream, version and position."""
    store.append([probe("s:ok", 1)])
    inject(store, "s:bad", 1, topic, payload)
    before = raw_rows(store)
    bad_position = before[-1][0]
    with pytest.raises(error, match=fragment) as caught:
        list(store.read_all())
    assert caught.value.position == bad_position
    assert caught.value.stream_id == "s:bad"
    assert caught.value.version == 1
    assert caught.value.topic == topic
    assert f"log position {bad_position}" in str(caught.value)
    with pytest.raises(error):
        store.load("s:bad")
    assert raw_rows(store) == before
    assert store.load("s:ok") == [probe("s:ok", 1)]


def test_a_follower_sees_events_appended_after_it_started_in_order(store: EventStore) -> None:
    """follow() yields every event appended after its start position, in log order, until stopped."""
    store.append([probe("s:a", 1, n=0)])
    start = store.max_position()
    seen: list[Recorded] = []
    follower = store.follow(start, poll_s=0.01)
    done = threading.Event()

    def consume() -> None:
        for recorded in follower:
            seen.append(recorded)
            if len(seen) == 5:
                break
        done.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    for n in range(1, 6):
        store.append([probe("s:a", n + 1, n=n)])
        time.sleep(0.005)
    assert done.wait(20), f"follower saw only {len(seen)} events"
    follower.stop()
    thread.join(5)
    with follower:
        pass
    assert [r.event.n for r in seen] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]
    assert all(r.position > start for r in seen)


def test_stop_ends_an_idle_follower(store: EventStore) -> None:
    """A follower blocked on an idle log ends promptly when stopped from another thread."""
    follower = store.follow(0, poll_s=0.01)
    ended = threading.Event()

    def consume() -> None:
        for _ in follower:
            pass
        ended.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    time.sleep(0.1)
    follower.stop()
    assert ended.wait(10)


def test_snapshots_keep_the_latest_and_are_idempotent(store: EventStore) -> None:
    """The latest snapshot wins; saving the same one again is a no-op; a different one conflicts."""
    assert store.latest_snapshot("engine:main") is None
    first = StoredSnapshot("engine:main", 1, "routeledger.snapshot/1", b'{"p": 1}')
    second = StoredSnapshot("engine:main", 2, "routeledger.snapshot/1", b'{"p": 2}')
    store.save_snapshot(first)
    store.save_snapshot(second)
    store.save_snapshot(second)
    assert store.latest_snapshot("engine:main") == second
    with pytest.raises(Conflict):
        store.save_snapshot(StoredSnapshot("engine:main", 2, "routeledger.snapshot/1", b"{}"))
    with pytest.raises(UsageError):
        store.save_snapshot(StoredSnapshot("bad id", 1, "t/1", b"{}"))


def test_read_limit_is_bounded(store: EventStore) -> None:
    """A read page outside 1..READ_PAGE_EVENTS_MAX is a usage error."""
    with pytest.raises(UsageError, match="read limit"):
        store.read(0, limit=0)


def test_two_stores_racing_on_one_stream_let_exactly_one_win(shared_store_url: str) -> None:
    """Two processes' stores appending the same next version: one succeeds, one gets Conflict."""
    with (
        open_store(shared_store_url, codec=CODEC) as a,
        open_store(shared_store_url, codec=CODEC) as b,
    ):
        a.append([probe("s:a", 1)])
        assert b.head("s:a").version == 1
        b.append([probe("s:a", 2, n=2)])
        with pytest.raises(Conflict) as caught:
            a.append([probe("s:a", 2, n=99)])  # a's cached head is stale
        assert caught.value.stream_id == "s:a"
        a.append([probe("s:a", 3, n=3)])  # after a conflict a re-reads the head
        assert [e.n for e in b.load("s:a")] == [0, 2, 3]  # type: ignore[attr-defined]


def test_a_stale_cached_head_never_reports_a_false_gap(shared_store_url: str) -> None:
    """A store whose cached head lags still appends head+1 after another process moved on."""
    with (
        open_store(shared_store_url, codec=CODEC) as a,
        open_store(shared_store_url, codec=CODEC) as b,
    ):
        a.append([probe("s:a", 1)])  # a caches head 1
        b.append([probe("s:a", 2)])  # the real head moves to 2
        a.append([probe("s:a", 3)])  # a must re-read the head, not call this a gap
        assert [e.version for e in b.load("s:a")] == [1, 2, 3]


def test_the_head_cache_stays_bounded_and_a_forgotten_head_is_read_back(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache of stream heads never exceeds its bound however many streams are written,
    and a stream whose head was forgotten still appends at the right version (or conflicts)."""
    from routeledger.adapters.store import eventstore

    monkeypatch.setattr(eventstore, "HEAD_CACHE_STREAMS_MAX", 10)
    for n in range(50):
        store.append([probe(f"s-{n}", 1)])
        assert len(store._heads) <= 10
    assert "s-0" not in store._heads
    store.append([probe("s-0", 2, at_us=2_000)])
    with pytest.raises(Conflict):
        store.append([probe("s-1", 1, at_us=2_000)])
    assert [e.version for e in store.load("s-0")] == [1, 2]
