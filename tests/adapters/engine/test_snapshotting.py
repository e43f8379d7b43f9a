"""Snapshots taken by the maintenance loop: consistent, off the request path, pruned, verified."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from routeledger.adapters.cli.main import cli
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.store.canonical import state_hash
from routeledger.adapters.store.eventstore import StoredSnapshot, open_store
from routeledger.adapters.store.snapshots import (
    SNAPSHOT_STREAM,
    SNAPSHOT_TOPIC,
    check_snapshot,
    snapshot_versions,
)
from routeledger.adapters.testing.clock import FakeClock, counter_ids
from routeledger.core.fold import fold_log
from routeledger.core.routing import FailureClass
from tests.adapters.engine.test_engine import CONFIG

#: Requests each caller makes in the race test; enough for dozens of snapshots.
RACE_REQUESTS_PER_CALLER = 40


def _config(every: int, *, kept: int = 3, maintenance_us: int = 0) -> str:
    settings = (
        f"[engine]\nsnapshot_every_events = {every}\nsnapshots_kept = {kept}\n"
        f"maintenance_every_us = {maintenance_us}\n\n[limits]"
    )
    return CONFIG.replace("[limits]", settings).replace(
        "limit = 1_000\n", "limit = 1_000_000_000_000\n"
    )


def _serve(engine: Engine, scope: str, n: int, *, fail_over: bool = True) -> None:
    """``n`` requests on one thread; with ``fail_over`` every third fails over once."""
    for i in range(n):
        with engine.request(route="chat", caller_scope=scope, accounts=("team",)) as req:
            for attempt in req.sync_attempts():
                if fail_over and i % 3 == 0 and attempt.number == 1:
                    attempt.failed(FailureClass.PROVIDER_UNAVAILABLE, status=503)
                else:
                    attempt.succeeded(input_tokens=2, output_tokens=3)


async def _aserve(engine: Engine, scope: str, n: int) -> None:
    for _ in range(n):
        async with engine.request(route="chat", caller_scope=scope, accounts=("team",)) as req:
            async for attempt in req.attempts():
                attempt.succeeded(input_tokens=2, output_tokens=3)
                await asyncio.sleep(0)


def _replay_verify(url: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["replay", "--verify", "--store", url])
    return result.exit_code, result.output


def test_snapshots_taken_while_threads_and_tasks_fold_are_consistent(tmp_path: Path) -> None:
    """D2 under load: 4 threads and 32 tasks with a snapshot due every 10 events; no request
    fails, every snapshot verifies, and replay --verify passes."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    config = parse_config(_config(10, kept=1_000, maintenance_us=1_000))
    engine = Engine.open(url, config)  # wall clock: the maintenance thread runs every 1 ms
    errors: list[BaseException] = []

    def guarded(target: object, *args: object) -> None:
        try:
            target(*args)  # type: ignore[operator]
        except BaseException as error:
            errors.append(error)

    async def tasks() -> None:
        await asyncio.gather(
            *(_aserve(engine, f"t{i}", RACE_REQUESTS_PER_CALLER) for i in range(32))
        )

    def serve(scope: str) -> None:  # no failures: a wall-clock cooldown would make callers wait
        _serve(engine, scope, RACE_REQUESTS_PER_CALLER, fail_over=False)

    threads = [threading.Thread(target=guarded, args=(serve, f"s{i}")) for i in range(4)]
    threads.append(threading.Thread(target=guarded, args=(asyncio.run, tasks())))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    steps = engine._maintenance.steps if engine._maintenance else 0
    engine.close()
    assert errors == []
    assert steps > 0
    with open_store(url) as store:
        versions = snapshot_versions(store)
        problems = {v: check_snapshot(s) for v, s in _by_version(store).items()}
    assert len(versions) >= 2, "the loop took snapshots while requests ran"
    assert all(problem is None for problem in problems.values()), problems
    code, output = _replay_verify(url)
    assert code == 0, output


def _by_version(store: object) -> dict[int, StoredSnapshot]:
    from routeledger.adapters.store.snapshots import iter_snapshots

    return {s.version: s for s in iter_snapshots(store)}  # type: ignore[arg-type]


def test_requests_never_snapshot_and_the_loop_keeps_the_newest_k(tmp_path: Path) -> None:
    """Snapshots are the maintenance step's: requests alone save none; each step keeps K."""
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    engine = Engine.open(url, parse_config(_config(5, kept=2)), clock=FakeClock())
    _serve(engine, "u", 6)
    with open_store(url) as store:
        assert snapshot_versions(store) == []
    saved = []
    for _ in range(4):
        _serve(engine, "u", 2)
        saved.append(engine.maintain().snapshot)
    assert None not in saved and saved == sorted(saved)
    assert engine.maintain().snapshot is None  # nothing folded since: not due
    engine.close()
    with open_store(url) as store:
        assert snapshot_versions(store) == saved[-2:]


def _damage_newest(url: str) -> tuple[int, int]:
    """Replace the newest snapshot by a well-framed one whose state hash lies."""
    from routeledger.adapters.store.snapshots import encode_snapshot, iter_snapshots

    with open_store(url) as store:
        newest = list(iter_snapshots(store))[-1]
        older = snapshot_versions(store)[-2]
        prefix = [r for r in store.read_all(0) if r.position <= newest.version]
        truth = state_hash(fold_log(prefix))
        folded = fold_log(prefix)
        folded.at_us_max += 1  # a state the log never had at that position
        lying = encode_snapshot(folded, state_hash_hex=truth)
        store.delete_snapshot(SNAPSHOT_STREAM, newest.version)
        store.save_snapshot(StoredSnapshot(SNAPSHOT_STREAM, newest.version, SNAPSHOT_TOPIC, lying))
        return newest.version, older


def test_restore_skips_a_bad_snapshot_with_a_warning_and_uses_an_older_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """D2: a snapshot that does not verify is never trusted; the restart equals a full fold."""
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    config = parse_config(_config(5))
    first = Engine.open(url, config, clock=FakeClock(), ids=counter_ids("a"))
    for _ in range(3):
        _serve(first, "u", 3)
        first.maintain()
    _serve(first, "u", 2)  # a tail
    live = state_hash(first.state)
    first.close()
    bad, older = _damage_newest(url)
    with caplog.at_level(logging.INFO, logger="routeledger.engine"):
        restarted = Engine.open(url, config, clock=FakeClock(), ids=counter_ids("b"))
    assert state_hash(restarted.state) == live
    restarted.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"snapshot at position {bad} skipped" in w for w in warnings), warnings
    infos = [r.getMessage() for r in caplog.records if r.getMessage().startswith("restored in")]
    assert infos and f"snapshot at position {older}" in infos[0]


def test_operators_list_drop_and_prune_snapshots_from_the_cli(tmp_path: Path) -> None:
    """An operator sees which snapshot is bad, drops it, and prunes the rest to K."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = Engine.open(url, parse_config(_config(3, kept=10)), clock=FakeClock())
    for _ in range(4):
        _serve(engine, "u", 2)
        engine.maintain()
    engine.close()
    bad, _ = _damage_newest(url)
    runner = CliRunner()
    listed = runner.invoke(cli, ["admin", "snapshots", "list", "--store", url])
    assert listed.exit_code == 0, listed.output
    assert f"#{bad} " in listed.output and "BAD: the state hash" in listed.output
    assert listed.output.count(" good") == 3
    pruned_bad = runner.invoke(cli, ["admin", "snapshots", "prune", "--bad", "--store", url])
    assert pruned_bad.exit_code == 0 and f"[{bad}]" in pruned_bad.output, pruned_bad.output
    missing = runner.invoke(cli, ["admin", "snapshots", "drop", str(bad), "--store", url])
    assert missing.exit_code == 2 and f"no snapshot at position {bad}" in missing.output
    pruned = runner.invoke(cli, ["admin", "snapshots", "prune", "--keep", "1", "--store", url])
    assert pruned.exit_code == 0 and "deleted 2 snapshots" in pruned.output, pruned.output
    with open_store(url) as store:
        (kept,) = snapshot_versions(store)
    dropped = runner.invoke(cli, ["admin", "snapshots", "drop", str(kept), "--store", url])
    assert dropped.exit_code == 0, dropped.output
    empty = runner.invoke(cli, ["admin", "snapshots", "list", "--store", url, "--json"])
    assert '"snapshots": []' in empty.output
    code, output = _replay_verify(url)
    assert code == 0, output


def thaw() -> None:
    """Undo a test's gc.freeze() and collect what it kept, here and quietly: left for later,
    another test would see the ResourceWarning of a socket some earlier test leaked."""
    import gc
    import warnings

    gc.unfreeze()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_gc_freeze_keeps_the_live_state_out_of_collections(tmp_path: Path) -> None:
    """With [engine] gc_freeze each maintenance step freezes live objects; off, none are."""
    import gc

    gc.unfreeze()
    engine = Engine.open("memory://", parse_config(_config(0)), clock=FakeClock())
    _serve(engine, "u", 3)
    engine.maintain()
    assert gc.get_freeze_count() == 0
    text = _config(0).replace("snapshots_kept", "gc_freeze = true\nsnapshots_kept")
    frozen = Engine.open("memory://", parse_config(text), clock=FakeClock())
    try:
        _serve(frozen, "u", 3)
        frozen.maintain()
        assert gc.get_freeze_count() > 0
    finally:
        thaw()
