"""Several OS processes sharing one store: optimistic concurrency loses nothing."""

from __future__ import annotations

import multiprocessing

from routeledger.adapters.store.eventstore import Conflict, open_store
from tests.adapters.store.test_store_contract import CODEC, ProbeRecorded

PROCESSES = 4
APPENDS_PER_PROCESS = 25


def _worker(url: str, worker: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    retries = 0
    with open_store(url, codec=CODEC) as store:
        done = 0
        while done < APPENDS_PER_PROCESS:
            head = store.head("s:contended")
            evt = ProbeRecorded(
                stream_id="s:contended",
                version=head.version + 1,
                at_us=head.at_us + 1,
                n=worker * 1000 + done,
            )
            try:
                store.append([evt])
            except Conflict:
                retries += 1
                continue
            done += 1
    results.put((worker, retries))


def test_four_processes_appending_to_one_stream_lose_nothing(shared_store_url: str) -> None:
    """4 processes racing on one stream: every append lands once, versions stay contiguous."""
    with open_store(shared_store_url, codec=CODEC):
        pass  # create the tables before the race
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    workers = [
        ctx.Process(target=_worker, args=(shared_store_url, w, results)) for w in range(PROCESSES)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(240)
        assert process.exitcode == 0
    reports = dict(results.get(timeout=10) for _ in workers)
    with open_store(shared_store_url, codec=CODEC) as store:
        events = store.load("s:contended")
    assert [e.version for e in events] == list(range(1, PROCESSES * APPENDS_PER_PROCESS + 1))
    written = sorted(e.n for e in events)  # type: ignore[attr-defined]
    expected = sorted(w * 1000 + i for w in range(PROCESSES) for i in range(APPENDS_PER_PROCESS))
    assert written == expected
    assert set(reports) == set(range(PROCESSES))
