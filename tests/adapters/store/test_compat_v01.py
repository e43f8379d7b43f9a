"""A store written by RouteLedger 0.1 (commit 680afbd) opens and replays to the same state.

The fixture and what the writing code computed from it are described in
``tests/fixtures/README.md``. Every test works on a private copy of the file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from routeledger.adapters import Engine, FakeClock, counter_ids
from routeledger.adapters.cli.main import EXIT_OK, main
from routeledger.adapters.store import canonical
from routeledger.adapters.store.canonical import canonical_bytes, state_hash
from routeledger.adapters.store.eventstore import open_store
from routeledger.adapters.store.snapshots import SNAPSHOT_STREAM, SNAPSHOT_TOPIC
from routeledger.core.budget import ledger
from routeledger.core.fold import Folded, fold_log
from routeledger.core.routing import events as routing_events
from routeledger.core.routing import state as routing

FIXTURES = Path(__file__).parents[2] / "fixtures"
EXPECTED = json.loads((FIXTURES / "store_v0.1.json").read_text())


#: State fields added since 0.1, per class: hashed as 0.1 would, the state leaves them out.
#: ``AccountState.configured_limit`` (the file's last limit, G4) equals the opened limit here;
#: the retention horizon's fields (G5) record the last event's time and the hold's command ids,
#: and no retirement happened in 0.1's log (``Folded.retention`` is empty); tolerated failures
#: (G6, ``ScopeState.strikes``) did not exist, so every scope of 0.1's log has none; the probe's
#: attempt (G6, ``ScopeState.probe_attempt_id``) is read from the ProbeAllowed 0.1 recorded; a
#: pair's predicted exhaustion (G6) needs announced limits, which 0.1's outcomes never carried
#: (0 everywhere); the outcome events' timings and announcements (schema 2, G6) are ``None``
#: once upcast; configured limits (G6, ``RoutingState.loads``) did not exist (empty); the
#: ranked strategies' counts (G6, ``in_flight``, ``latency``) are folded from 0.1's events.
ADDED_SINCE_V01: dict[type, tuple[str, ...]] = {
    ledger.AccountState: ("configured_limit",),
    ledger.HoldState: ("command_ids", "last_at_us"),
    routing.RequestState: ("last_at_us",),
    routing.ScopeState: ("predicted_us", "probe_attempt_id", "strike_at_us", "strikes"),
    routing.RoutingState: ("in_flight", "latency", "loads"),
    routing_events.AttemptSucceeded: ("ttft_us", "duration_us", "announced"),
    routing_events.AttemptFailed: ("ttft_us", "duration_us", "announced"),
    Folded: ("retention",),
}


#: Event schemas bumped since 0.1: its events decode, upcast, under the newer topic.
UPCAST_SINCE_V01 = {
    "routeledger.AttemptSucceeded/1": "routeledger.AttemptSucceeded/2",
    "routeledger.AttemptFailed/1": "routeledger.AttemptFailed/2",
}


def _spec_without(cls: type, names: tuple[str, ...]) -> object:
    """The canonical spec of an attrs class without ``names`` (as ``canonical._spec`` builds it)."""
    kept = tuple(sorted(f.name for f in attrs.fields(cls) if f.eq and f.name not in names))
    header = b"o" + canonical._str_bytes(canonical.canonical_name(cls)) + b"%d:" % len(kept)
    return (header, tuple((canonical._str_bytes(name), name) for name in kept))


@pytest.fixture(autouse=True)
def hashed_as_of_v01(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Canonical hashing skips the fields 0.1 did not have (and forgets its compiled encoders)."""
    for cls, names in ADDED_SINCE_V01.items():
        monkeypatch.delitem(canonical._ENCODERS, cls, raising=False)
        if attrs.has(cls):
            monkeypatch.setitem(canonical._SPECS, cls, _spec_without(cls, names))
            continue
        derived = (*getattr(cls, "DERIVED_SLOTS", ()), *names)
        monkeypatch.setattr(cls, "DERIVED_SLOTS", derived, raising=False)
        monkeypatch.delitem(canonical._SPECS, cls, raising=False)
    yield
    for cls in ADDED_SINCE_V01:
        canonical._SPECS.pop(cls, None)
        canonical._ENCODERS.pop(cls, None)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A private copy of the 0.1 store, as a SQLite store URL."""
    target = tmp_path / "store_v0.1.db"
    shutil.copyfile(FIXTURES / EXPECTED["store_file"], target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == EXPECTED["store_file_sha256"]
    return f"sqlite:///{target}"


def test_the_log_decodes_to_the_same_events_and_state(store_url: str) -> None:
    """Every 0.1 event decodes under today's tags, and the fold has 0.1's canonical state hash."""
    with open_store(store_url) as store:
        records = list(store.read_all(0))
    tags = Counter(f"{type(r.event).TAG}/{type(r.event).SCHEMA}" for r in records)
    assert dict(tags) == {UPCAST_SINCE_V01.get(t, t): n for t, n in EXPECTED["tags"].items()}
    assert len(records) == EXPECTED["events"] and records[-1].position == EXPECTED["last_position"]
    folded = fold_log(records)
    contexts = {
        name: hashlib.sha256(canonical_bytes(getattr(folded, name))).hexdigest()
        for name in EXPECTED["context_hashes"]
    }
    assert contexts == EXPECTED["context_hashes"]
    assert state_hash(folded) == EXPECTED["state_hash"]


def test_the_engine_opens_it_with_the_same_state(store_url: str) -> None:
    """Engine.open on the 0.1 store and config folds to 0.1's hash; snapshots of another format are skipped."""
    with open_store(store_url) as store:
        snapshots = sorted((s.version, s.topic) for s in store.snapshots(SNAPSHOT_STREAM))
    # Every snapshot 0.1 wrote, each with 0.1's format tag (not necessarily today's).
    assert snapshots == [(s["position"], s["topic"]) for s in EXPECTED["snapshots"]]
    prefix = SNAPSHOT_TOPIC.rpartition("/")[0] + "/"
    assert all(topic.startswith(prefix) for _, topic in snapshots)
    clock = FakeClock(EXPECTED["at_us_max"] + 1_000_000)
    engine = Engine.open(
        store_url, FIXTURES / EXPECTED["config_file"], clock=clock, ids=counter_ids("compat")
    )
    try:
        assert state_hash(engine.state) == EXPECTED["state_hash"]
    finally:
        engine.close()


def test_replay_verify_passes_on_it(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``routeledger replay --verify`` finds no mismatch in the 0.1 store and prints its hash."""
    code = main(["replay", "--verify", "--store", store_url, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK and doc["ok"], doc
    assert doc["state_hash"] == EXPECTED["state_hash"]
    # 0.1's snapshots are of another format: ignored (the log is folded), never mismatches.
    assert doc["snapshots_ignored"] == len(EXPECTED["snapshots"]) and doc["snapshots_checked"] == 0
