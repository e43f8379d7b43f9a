"""Snapshots of the folded state: a cache beside the log (D2)."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeledger.adapters.store import snapshots
from routeledger.adapters.store.canonical import state_hash
from routeledger.adapters.store.eventstore import Conflict, EventStore, StoredSnapshot, open_store
from routeledger.adapters.store.snapshots import (
    SNAPSHOT_STREAM,
    SNAPSHOT_TOPIC,
    decode_snapshot,
    encode_snapshot,
    iter_snapshots,
    load_snapshot,
    save_snapshot,
)
from routeledger.core.errors import InvariantViolation
from routeledger.core.fold import Folded, Recorded, fold_log
from tests.projections.workload import build


@pytest.fixture(scope="module")
def log() -> Iterator[list[Recorded]]:
    """A recorded 40-request workload."""
    with open_store("memory://") as store:
        build(store, requests=40, seed=5)
        yield list(store.read_all(0))


@settings(max_examples=40)
@given(st.data())
def test_snapshot_plus_tail_equals_the_full_fold(log: list[Recorded], data: st.DataObject) -> None:
    """D2: for a random split k, fold_from(snapshot(fold(E[:k])), E[k:]) hashes like fold(E)."""
    k = data.draw(st.integers(1, len(log)))
    full = state_hash(fold_log(log))
    with open_store("memory://") as store:
        prefix = fold_log(log[:k])
        save_snapshot(store, prefix)
        restored = load_snapshot(store)
        assert restored is not None and restored.position == log[k - 1].position
        assert state_hash(restored) == state_hash(prefix)
        assert state_hash(fold_log(log[k:], restored)) == full


def test_snapshots_round_trip_on_every_backend(store_url: str) -> None:
    """D2: a snapshot saved to a store loads back equal, the latest wins, and re-saving is a no-op."""
    with open_store(store_url) as store:
        build(store, requests=8, seed=2)
        assert load_snapshot(store) is None
        records = list(store.read_all(0))
        first = fold_log(records[:10])
        save_snapshot(store, first)
        whole = fold_log(records)
        stored = save_snapshot(store, whole)
        save_snapshot(store, whole)
        loaded = load_snapshot(store)
        assert loaded is not None and state_hash(loaded) == state_hash(whole)
        assert stored.topic == SNAPSHOT_TOPIC and stored.version == whole.position
        assert [s.version for s in iter_snapshots(store)] == [first.position, whole.position]


def test_another_state_at_the_same_position_conflicts(log: list[Recorded]) -> None:
    """Two different states can never both claim one log position."""
    with open_store("memory://") as store:
        folded = fold_log(log[:5])
        save_snapshot(store, folded)
        folded.at_us_max += 1
        with pytest.raises(Conflict):
            save_snapshot(store, folded)


def _put(store: EventStore, version: int, topic: str, payload: bytes) -> None:
    store.save_snapshot(StoredSnapshot(SNAPSHOT_STREAM, version, topic, payload))


def test_foreign_and_damaged_snapshots_are_ignored(log: list[Recorded]) -> None:
    """The log is the truth: a snapshot of another format or with damaged bytes is never loaded."""
    folded = fold_log(log[:7])
    good = encode_snapshot(folded)
    cases = {
        "routeledger.snapshot/0.old": good,
        SNAPSHOT_TOPIC: good[:-40],
    }
    for topic, payload in cases.items():
        with open_store("memory://") as store:
            _put(store, folded.position, topic, payload)
            assert load_snapshot(store) is None
    header, _, body = good.partition(b"\n")
    magic, tag, recorded_hash, _digest = header.split(b" ")

    def framed(state: bytes, payload: bytes) -> bytes:
        digest = hashlib.sha256(payload).hexdigest().encode()
        return b" ".join((magic, tag, state, digest)) + b"\n" + payload

    damaged = {
        "header": b"garbage\n" + body,
        "bytes": header + b"\n" + body[:-1] + b"x",
        "pickle": framed(recorded_hash, b"not a pickle"),
        "type": framed(recorded_hash, pickle.dumps(None)),
    }
    for name, payload in damaged.items():
        loaded = decode_snapshot(
            StoredSnapshot(SNAPSHOT_STREAM, folded.position, SNAPSHOT_TOPIC, payload)
        )
        assert loaded.folded is None and loaded.problem, name
    lying = StoredSnapshot(
        SNAPSHOT_STREAM, folded.position, SNAPSHOT_TOPIC, framed(b"0" * 64, body)
    )
    assert decode_snapshot(lying).folded is not None
    checked = decode_snapshot(lying, check_state=True)
    assert checked.folded is None and "differs from the recorded" in str(checked.problem)
    assert (
        decode_snapshot(
            StoredSnapshot(SNAPSHOT_STREAM, folded.position, SNAPSHOT_TOPIC, good), check_state=True
        ).problem
        is None
    )
    moved = decode_snapshot(
        StoredSnapshot(SNAPSHOT_STREAM, folded.position + 1, SNAPSHOT_TOPIC, good)
    )
    assert moved.problem == "the payload is not a Folded state"


def test_format_tag_follows_the_code() -> None:
    """A changed event registry or state shape changes the tag, so old snapshots are ignored."""
    assert snapshots.FORMAT_TAG.startswith(f"{snapshots.SNAPSHOT_FORMAT}.")
    assert snapshots._shape(Folded) != snapshots._shape(snapshots.routing.ScopeState)
    assert snapshots._format_tag() == snapshots.FORMAT_TAG


def test_iter_snapshots_pages_through_many(
    monkeypatch: pytest.MonkeyPatch, log: list[Recorded]
) -> None:
    """Every stored snapshot is listed, oldest first, across pages."""
    monkeypatch.setattr(snapshots, "_PAGE", 2)
    with open_store("memory://") as store:
        for k in range(1, 6):
            save_snapshot(store, fold_log(log[:k]))
        assert [s.version for s in iter_snapshots(store)] == [r.position for r in log[:5]]


def test_snapshots_are_pruned_and_dropped_on_every_backend(store_url: str) -> None:
    """Pruning keeps exactly the newest K; dropping one removes only it; events are untouched."""
    from routeledger.adapters.store.snapshots import (
        drop_snapshot,
        newest_good_snapshot,
        prune_snapshots,
        snapshot_versions,
    )
    from routeledger.core.errors import UsageError

    with open_store(store_url) as store:
        build(store, requests=8, seed=2)
        records = list(store.read_all(0))
        cuts = [k for k in range(1, len(records)) if _consistent(records[:k])][:5]
        for k in cuts:
            save_snapshot(store, fold_log(records[:k]))
        positions = [records[k - 1].position for k in cuts]
        assert prune_snapshots(store, 3) == positions[:2]
        assert snapshot_versions(store) == positions[2:]
        assert prune_snapshots(store, 3) == []
        with pytest.raises(UsageError, match="must be >= 1"):
            prune_snapshots(store, 0)
        assert drop_snapshot(store, positions[-1]) is True
        assert drop_snapshot(store, positions[-1]) is False
        assert snapshot_versions(store) == positions[2:4]
        restored, skipped = newest_good_snapshot(store)
        assert restored is not None and restored.position == positions[3] and skipped == []
        assert [r.position for r in store.read_all(0)] == [r.position for r in records]
        save_snapshot(
            store, fold_log(records[: cuts[-1]])
        )  # the dropped position can be saved again
        assert snapshot_versions(store) == [*positions[2:4], positions[4]]


def _consistent(records: list[Recorded]) -> bool:
    """Whether the prefix ends on a commit boundary (one commit can span streams: L1 in between)."""
    try:
        fold_log(records).check_invariants()
    except InvariantViolation:
        return False
    return True


def test_restore_skips_snapshots_that_break_an_invariant_or_lie(log: list[Recorded]) -> None:
    """A snapshot whose hash lies or whose state breaks an invariant is skipped, newest first."""
    from routeledger.adapters.store.snapshots import newest_good_snapshot

    with open_store("memory://") as store:
        good = fold_log(log[:5])
        save_snapshot(store, good)
        lying = fold_log(log[:9])
        truth = state_hash(lying)
        lying.at_us_max += 1
        _put(store, lying.position, SNAPSHOT_TOPIC, encode_snapshot(lying, state_hash_hex=truth))
        broken = fold_log(log[:12])
        account = next(iter(broken.budget.accounts.values()))
        account.reserved += 1  # L1: reserved no longer equals the open holds' legs
        _put(store, broken.position, SNAPSHOT_TOPIC, encode_snapshot(broken))
        restored, skipped = newest_good_snapshot(store)
        assert restored is not None and state_hash(restored) == state_hash(good)
        assert [s.position for s in skipped] == [broken.position, lying.position]
        assert skipped[1].problem is not None and "differs" in skipped[1].problem
