"""F8 reality check: 4 OS processes run the real engine on one PostgreSQL against the fake provider."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from typing import Any

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.http.executor import Executor
from routeledger.adapters.store.canonical import state_hash
from routeledger.adapters.store.eventstore import open_store
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.credentials.secrets import InMemorySecretStore
from routeledger.core.fold import fold_log
from tests.batches import folded_between_decisions

PROCESSES = 4
REQUESTS_PER_PROCESS = 12
#: Requests in flight at once in each process (their commits are grouped).
LANES = 6
LIMIT_MICROS = 3_000  # near the limit: a few requests' worst case at a time

CONFIG = """
[credentials.a]
provider = "openai"
base_url = "{base_url}"
[credentials.b]
provider = "openai"
base_url = "{base_url}"

[models.flaky]
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 4_000_000
max_output_tokens = 200
[models.steady]
prefill = true
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 4_000_000
max_output_tokens = 200

[routes.chat]
[[routes.chat.chain]]
strategy = "round_robin"
members = [{{ credential = "a", model = "flaky" }}, {{ credential = "b", model = "flaky" }}]
[[routes.chat.chain]]
members = [{{ credential = "b", model = "steady" }}]

[failures.provider_unavailable]
scope = "pair"
action = "cooldown"
base_us = 200_000
factor = 2
max_us = 800_000

[limits]
attempts_max = 4
wait_total_us_max = 1_000_000

[timeouts]
connect_us = 1_000_000
first_token_us = 1_000_000
idle_us = 500_000
total_us = 5_000_000

[accounts.shared]
scope = "team"
limit = {limit}
"""


def _gateway(
    url: str,
    base_url: str,
    worker: int,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
    done: Any,
) -> None:
    config = parse_config(CONFIG.format(base_url=base_url, limit=LIMIT_MICROS))
    keys = InMemorySecretStore({"a": f"sk-fleet-a-{os.getpid()}", "b": f"sk-fleet-b-{os.getpid()}"})
    engine = Engine.open(url, config, clock=SystemClock())

    async def lane(executor: Executor, lane_no: int) -> list[str]:
        results = []
        for n in range(lane_no, REQUESTS_PER_PROCESS, LANES):
            done = await executor.chat(
                {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200},
                route="chat",
                caller_scope=f"user:{worker}",
                accounts=("shared",),
                request_id=f"w{worker}-r{n}",
            )
            results.append(type(done.result).__name__)
        return results

    async def run() -> list[str]:
        # Concurrent requests in each process: their entries and exits share commits.
        executor = Executor(engine, secrets=keys)
        try:
            lanes = await asyncio.gather(*(lane(executor, k) for k in range(LANES)))
        finally:
            await executor.aclose()
        return [result for results in lanes for result in results]

    results = asyncio.run(run())
    done.wait(120)  # every gateway has finished: now each catches up and reports its state
    engine.runtime.catch_up()
    committer = engine.committer
    out.put((worker, results, state_hash(engine.state), committer.commands - committer.commits))
    engine.close()


def test_four_gateway_processes_never_overspend_leak_no_hold_and_converge(
    postgres_url: str,
) -> None:
    """D4/L5/D2: 4 engines, 3 requests in flight each, on one PostgreSQL with flaky upstreams: no overspend, no open hold, same state."""
    scripts = {"flaky": ["ok", "overloaded", "cut:2", "ok", "server_error"], "steady": "ok"}
    with FakeProvider(scripts) as fake:
        with open_store(postgres_url):
            pass  # tables exist before the race
        ctx = multiprocessing.get_context("spawn")
        out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
        barrier = ctx.Barrier(PROCESSES)
        workers = [
            ctx.Process(target=_gateway, args=(postgres_url, fake.base_url, w, out, barrier))
            for w in range(PROCESSES)
        ]
        for process in workers:
            process.start()
        reports = [out.get(timeout=240) for _ in workers]
        for process in workers:
            process.join(60)
            assert process.exitcode == 0
    outcomes = [r for _, results, _, _ in reports for r in results]
    assert len(outcomes) == PROCESSES * REQUESTS_PER_PROCESS
    assert "Served" in outcomes
    with open_store(postgres_url, create=False) as store:
        records = list(store.read_all())
    folded = fold_log([])
    for folded in folded_between_decisions(records):
        account = folded.budget.accounts["shared"]
        assert account.spent - account.overage + account.reserved <= LIMIT_MICROS
    folded.check_invariants()
    assert folded.budget.open_holds == {}
    assert folded.budget.accounts["shared"].reserved == 0
    # Every gateway, caught up after all finished, holds exactly the log's state.
    assert {digest for _, _, digest, _ in reports} == {state_hash(folded)}
    # Concurrent requests shared commits (entries or exits decided as one group) — in
    # the fleet; not asked of every process, since on a loaded machine one process's
    # lanes may happen never to meet in the committer's queue.
    assert sum(shared for _, _, _, shared in reports) > 0
