"""F7 figures: ``routeledger replay --verify`` over a 1M-event SQLite log, and projection catch-up.

Figures:

* ``replay.verify.sqlite.eps`` — events/s of ``routeledger replay --verify``
  end to end (open, read, decode, fold, snapshot and projection checks, state
  hash), run as its own process on a SQLite log of real events;
* ``replay.verify.peak_mb`` — that process's peak memory, with the helper
  processes it starts (``routeledger.adapters.audit.replay.PARALLEL``): the
  larger of the summed PSS of the process tree, sampled every 50 ms, and the
  peak RSS of the largest single process. Measured on a second run: the
  sampling takes CPU the timed run must not lose;
* ``projection.catchup_1m.s`` — after a restart, time to load the latest
  snapshot (1,000 events behind the head of the 1M-event log) and fold the tail.

The log is recorded by the real deciders (budget holds placed and settled or
refunded, requests started, routed, failed, succeeded, exhausted) folded in
memory and appended to SQLite in batches of 10,000 (one append per decision
would take far longer than the benchmark's budget on a 2-core machine; the
events are the same). ``ROUTELEDGER_BENCH_REPLAY_EVENTS`` overrides the count
(the figure line says which count was used).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import figure
from _floors import Floors

from routeledger.adapters.store.eventstore import open_store
from routeledger.adapters.store.snapshots import load_snapshot, save_snapshot
from routeledger.core.budget import decide as budget
from routeledger.core.budget.values import AccountScope, Unit, Usage
from routeledger.core.events import Event
from routeledger.core.fold import Folded, fold_log
from routeledger.core.routing.commands import (
    Failed,
    RecordOutcome,
    RouteNext,
    StartRequest,
    Succeeded,
)
from routeledger.core.routing.decide import decide_next, decide_outcome, decide_start
from routeledger.core.routing.events import AttemptRouted
from routeledger.core.routing.failures import FailureClass
from routeledger.core.routing.policy import CredentialSpec, Member, ModelSpec, Policy, Route, Target

EVENTS = int(os.environ.get("ROUTELEDGER_BENCH_REPLAY_EVENTS", "1000000"))
BATCH = 10_000
SNAPSHOT_BEHIND = 1_000
T0 = 1_795_356_000_000_000

CREDS = tuple(f"key-{i}" for i in range(8))
POLICY = Policy(
    credentials=tuple(CredentialSpec(id=c, provider="openai") for c in CREDS),
    models=(ModelSpec(id="gpt-4.1"), ModelSpec(id="gpt-4.1-mini")),
    routes=(
        Route(
            alias="chat",
            chain=(
                Target(members=tuple(Member(credential=c, model="gpt-4.1") for c in CREDS)),
                Target(
                    members=tuple(Member(credential=c, model="gpt-4.1-mini") for c in CREDS[:2])
                ),
            ),
        ),
    ),
)


def generate(url: str, target: int) -> int:
    """Record about ``target`` real events in the store at ``url``; return the count."""
    rng = random.Random(1)
    state = Folded()
    pending: list[Event] = []
    now = T0
    written = 0

    def act(events: tuple[Event, ...] | list[Event]) -> None:
        for evt in events:
            state.apply(evt)
        pending.extend(events)

    with open_store(url) as store:
        act(
            budget.decide_open_account(
                state.budget,
                budget.OpenAccount(
                    command_id="o",
                    account_id="acct",
                    scope=AccountScope.TEAM,
                    unit=Unit.MICROS,
                    limit=10**15,
                ),
                now_us=now,
                zones=lambda _: dt.UTC,
            ).events
        )
        n = 0
        while written + len(pending) < target:
            n += 1
            rid = f"r{n}"
            now += rng.randrange(1_000, 20_000)
            act(
                budget.decide_place_hold(
                    state.budget,
                    budget.PlaceHold(
                        hold_id=rid,
                        account_ids=("acct",),
                        estimate=Usage(cost_micros=5_000),
                        ttl_us=600_000_000,
                    ),
                    now_us=now,
                ).events
            )
            act(
                decide_start(
                    POLICY,
                    state.routing,
                    StartRequest(request_id=rid, route="chat", caller_scope="t", seed=n),
                    now_us=now,
                )
            )
            served = False
            for step in range(6):
                decided = decide_next(
                    POLICY,
                    state.routing,
                    RouteNext(request_id=rid, attempt_id=f"{rid}.{step}"),
                    now_us=now,
                ).events
                act(decided)
                if not any(isinstance(e, AttemptRouted) for e in decided):
                    break
                now += rng.randrange(1_000, 50_000)
                outcome = (
                    Succeeded(input_tokens=10, output_tokens=20)
                    if rng.random() < 0.8
                    else Failed(
                        failure=FailureClass.RATE_LIMITED,
                        status=429,
                        hint_us=rng.choice((None, 2_000_000)),
                    )
                )
                act(
                    decide_outcome(
                        POLICY,
                        state.routing,
                        RecordOutcome(request_id=rid, attempt_id=f"{rid}.{step}", outcome=outcome),
                        now_us=now,
                    )
                )
                if isinstance(outcome, Succeeded):
                    served = True
                    break
            if served:
                decision = budget.decide_settle_hold(
                    state.budget,
                    budget.SettleHold(
                        command_id=f"s{rid}",
                        hold_id=rid,
                        usage=Usage(cost_micros=rng.randrange(100, 9_000)),
                    ),
                    now_us=now,
                )
            else:
                decision = budget.decide_refund_hold(
                    state.budget, budget.RefundHold(command_id=f"f{rid}", hold_id=rid), now_us=now
                )
            act(decision.events)
            if len(pending) >= BATCH - 100:
                store.append(pending)
                written += len(pending)
                pending.clear()
        if pending:
            store.append(pending)
            written += len(pending)
    return written


def _tree_pss_kb(pid: int) -> tuple[int, int]:
    """The summed PSS (kB) of ``pid`` and its descendants, and the largest one's peak RSS (kB).

    Linux only (0, 0 elsewhere or once gone). The peak RSS is each process's
    own ``VmHWM``: getrusage's ``ru_maxrss`` is carried across fork and exec, so
    it would report this (large) benchmark process's peak for its children.
    """
    total = largest = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as rollup:
                total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
            with open(f"/proc/{current}/status") as status:
                hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
                largest = max(largest, hwm)
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending.extend(int(child) for child in children.read().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total, largest


def _sample_tree_memory(process: subprocess.Popen[str]) -> concurrent.futures.Future[int]:
    """The peak of ``process``'s tree (kB), sampled every 50 ms until it exits.

    The larger of the summed PSS and the largest single process's peak RSS.

    Why PSS: a forked helper shares its parent's pages until either writes
    them; RSS would count them twice, PSS splits them.
    """

    def sample() -> int:
        peak = 0
        while process.poll() is None:
            peak = max(peak, *_tree_pss_kb(process.pid))
            time.sleep(0.05)
        return peak

    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(sample)
    pool.shutdown(wait=False)
    return future


def _verify(url: str, *, sample: bool) -> tuple[float, str, int]:
    """Run ``routeledger replay --verify`` on ``url``: (seconds, its JSON output, peak tree PSS kB)."""
    began = time.perf_counter()
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "routeledger.adapters.cli.main",
            "replay",
            "--verify",
            "--json",
            "--no-progress",
            "--store",
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as verifying:
        tree_kb = _sample_tree_memory(verifying) if sample else None
        stdout, stderr = verifying.communicate()
    elapsed = time.perf_counter() - began
    if verifying.returncode != 0:
        raise SystemExit(f"replay --verify failed ({verifying.returncode}): {stderr}")
    return elapsed, stdout, tree_kb.result() if tree_kb is not None else 0


def main() -> None:
    """Ratios: time per verified / caught-up event over one frozen-event construction."""
    floors = Floors("attrs_event_us")
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'replay.db'}"
        began = time.perf_counter()
        count = generate(url, EVENTS)
        print(f"# generated {count:,} events in {time.perf_counter() - began:.1f}s", flush=True)
        with open_store(url) as store:
            head = store.max_position()
            snap = fold_log(
                r for r in store.read_all(0, page=10_000) if r.position <= head - SNAPSHOT_BEHIND
            )
            save_snapshot(store, snap)
        # Two runs: one timed, one with its memory sampled. Why: reading
        # smaps_rollup walks a process's page tables (~12 ms per GB here), so
        # sampling every 50 ms takes ~25% of a core from a 2-core machine.
        elapsed, _, _ = _verify(url, sample=False)
        _, stdout, tree_kb = _verify(url, sample=True)
        report = json.loads(stdout)
        peak_mb = tree_kb / 1024
        print(
            f"# replay --verify: {report['events']:,} events, {report['snapshots_checked']} snapshot(s), hash {report['state_hash'][:16]}",
            flush=True,
        )
        figure("replay.verify.sqlite.eps", report["events"] / elapsed, "events/s")
        floors.rate_ratio("replay.verify.sqlite.eps", report["events"] / elapsed, "attrs_event_us")
        figure("replay.verify.peak_mb", peak_mb, "MB")
        with open_store(url, create=False) as store:
            began = time.perf_counter()
            restored = load_snapshot(store)
            if restored is None:
                raise SystemExit("the snapshot did not load")
            tail = fold_log(store.read_all(restored.position, page=10_000), restored)
            caught_up = time.perf_counter() - began
        if tail.position != head:
            raise SystemExit(f"catch-up stopped at {tail.position}, head is {head}")
        figure("projection.catchup_1m.s", caught_up, "s")
        floors.ratio("projection.catchup_1m.s", caught_up * 1e6 / head, "attrs_event_us")
        if count < 1_000_000:
            print(f"# NOTE: {count:,} events, not 1M (ROUTELEDGER_BENCH_REPLAY_EVENTS)", flush=True)
    floors.finish()


if __name__ == "__main__":
    main()
