"""G6 configured limits across processes: ``max_in_flight = 2`` holds when 4 gateway processes
share one store, each running the Executor over loopback against one upstream."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Iterator

import pytest

from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.results import Served
from routeledger.adapters.http.executor import Executor
from routeledger.adapters.store.eventstore import open_store
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.fold import fold_log
from routeledger.core.routing.events import AttemptRouted, SkipReason, SlotTaken

PROCESSES = 4
REQUESTS_PER_PROCESS = 4
MAX_IN_FLIGHT = 2
#: How long the upstream takes to answer, in seconds: long enough that every
#: process's requests overlap (16 requests, 2 at a time, ~8 rounds).
ANSWER_DELAY_S = 0.25
KEY = "sk-capacity-test-0123456789"


def config_text(base_url: str) -> str:
    return f"""
[credentials.capped]
provider = "openai"
base_url = "{base_url}"
secret_env = "ROUTELEDGER_SECRET_CAPPED"
max_in_flight = {MAX_IN_FLIGHT}

[models.slow-model]
max_output_tokens = 16

[routes.chat]
[[routes.chat.chain]]
members = [{{ credential = "capped", model = "slow-model" }}]

[limits]
attempts_max = 2
wait_total_us_max = 60_000_000
"""


def _gateway(url: str, base_url: str, worker: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """One gateway process: its own engine on the shared store, 4 concurrent requests."""
    os.environ["ROUTELEDGER_SECRET_CAPPED"] = KEY
    engine = Engine.open(url, parse_config(config_text(base_url)))

    async def go() -> list[str]:
        executor = Executor(engine)
        try:
            done = await asyncio.gather(
                *(
                    executor.chat(
                        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
                        route="chat",
                        caller_scope=f"worker-{worker}",
                    )
                    for _ in range(REQUESTS_PER_PROCESS)
                )
            )
        finally:
            await executor.aclose()
        return [type(d.result).__name__ for d in done]

    try:
        results.put((worker, asyncio.run(go())))
    finally:
        engine.close()


@pytest.fixture
def slow_upstream() -> Iterator[FakeProvider]:
    script = {"kind": "slow_first_token", "first_token_delay": ANSWER_DELAY_S}
    with FakeProvider({"slow-model": script}) as provider:
        yield provider


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


@pytest.mark.postgres
@pytest.mark.slow
def test_max_in_flight_holds_across_four_processes_on_postgresql(
    postgres_url: str, slow_upstream: FakeProvider
) -> None:
    """Four gateway processes on one PostgreSQL store never have more than max_in_flight
    attempts on the capped key at once (at the upstream and in the log), and all are served."""
    with open_store(postgres_url):  # the schema exists before 4 processes race to open it
        pass
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    workers = [
        ctx.Process(target=_gateway, args=(postgres_url, slow_upstream.base_url, w, results))
        for w in range(PROCESSES)
    ]
    for process in workers:
        process.start()
    reports = [results.get(timeout=120) for _ in workers]
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    outcomes = [name for _, names in reports for name in names]
    assert outcomes == [Served.__name__] * PROCESSES * REQUESTS_PER_PROCESS
    attempts = slow_upstream.attempts()
    assert len(attempts) == PROCESSES * REQUESTS_PER_PROCESS
    spans = [(a.received_at, a.finished_at or a.received_at) for a in attempts]
    assert _max_overlap(spans) == MAX_IN_FLIGHT  # the cap was reached, never passed
    with open_store(postgres_url) as store:
        records = list(store.read_all())
    events = [r.event for r in records]
    assert sum(isinstance(e, SlotTaken) for e in events) == len(attempts)
    live = 0
    for evt in events:  # in log order: taken slots minus returned ones
        live += isinstance(evt, SlotTaken) - (type(evt).__name__ == "SlotReturned")
        assert live <= MAX_IN_FLIGHT
    assert any(
        skip.reason is SkipReason.AT_CAPACITY
        for e in events
        if isinstance(e, AttemptRouted)
        for skip in e.skipped
    ) or any(type(e).__name__ == "WaitDecided" for e in events)
    folded = fold_log(records)
    assert not folded.routing.loads["capped"].slots  # every slot was returned
