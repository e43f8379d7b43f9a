"""Engine.on and Engine.events: in-process reactions to recorded events, over loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.hooks import Gap
from routeledger.adapters.engine.results import Served
from routeledger.adapters.http.executor import Completion, Executor
from routeledger.adapters.testing.clock import counter_ids
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.errors import UsageError
from routeledger.core.events import Event
from routeledger.core.routing.events import (
    AttemptFailed,
    AttemptRouted,
    BlockEvent,
    CooldownStarted,
    RequestReceived,
)
from tests.adapters.http.test_executor import KEYS, config_text

RATE_LIMITED = {"kind": "rate_limited", "retry_after": 30}


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider({"primary-model": RATE_LIMITED, "spare-model": "ok"}) as provider:
        yield provider


def open_engine(fake: FakeProvider, store: str = "memory://") -> Engine:
    config = parse_config(config_text(fake.base_url, "primary-model", "spare-model"))
    return Engine.open(store, config, clock=SystemClock(), ids=counter_ids())


async def chat(engine: Engine) -> Completion:
    executor = Executor(engine)
    try:
        return await executor.chat(
            {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 64},
            route="chat",
            caller_scope="user:test",
            accounts=("team",),
        )
    finally:
        await executor.aclose()


def test_a_subscriber_sees_the_cooldown_of_a_rate_limited_pair(fake: FakeProvider) -> None:
    """Engine.on(CooldownStarted) is called with the 429'd pair's cooldown, already in the log."""
    engine = open_engine(fake)
    seen: list[CooldownStarted] = []
    in_log: list[bool] = []

    def paged(evt: CooldownStarted) -> None:
        seen.append(evt)
        in_log.append(any(r.event == evt for r in engine.store.read_all(0)))

    engine.on(CooldownStarted, paged)
    completion = asyncio.run(chat(engine))
    assert isinstance(completion.result, Served)
    assert [(e.credential_id, e.upstream_model) for e in seen] == [("primary", "primary-model")]
    assert seen[0].hint_us == 30_000_000 or seen[0].until_us > seen[0].at_us
    assert in_log == [True]
    engine.close()


def test_a_base_class_matches_its_subclasses_and_event_matches_all(fake: FakeProvider) -> None:
    """Subscribing to BlockEvent delivers CooldownStarted; Event delivers every recorded event."""
    engine = open_engine(fake)
    blocks: list[BlockEvent] = []
    every: list[Event] = []
    engine.on(BlockEvent, blocks.append)
    engine.on(Event, every.append)
    asyncio.run(chat(engine))
    assert [type(e) for e in blocks] == [CooldownStarted]
    recorded = [r.event for r in engine.store.read_all(0)]
    assert every == recorded[-len(every) :]  # everything since subscribing, in log order
    assert {RequestReceived, AttemptRouted, AttemptFailed} <= {type(e) for e in every}
    engine.close()


def test_a_raising_subscriber_breaks_neither_the_request_nor_the_others(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber that raises is logged with its name; the request is served, others still run."""
    engine = open_engine(fake)

    def broken(evt: Event) -> None:
        raise RuntimeError("subscriber bug")

    after: list[Event] = []
    engine.on(Event, broken)
    engine.on(Event, after.append)
    with caplog.at_level(logging.ERROR, logger="routeledger.engine"):
        completion = asyncio.run(chat(engine))
    assert isinstance(completion.result, Served)
    assert completion.content
    assert any(type(e) is CooldownStarted for e in after)
    lines = [r for r in caplog.records if "broken" in r.getMessage()]
    assert lines and lines[0].exc_info is not None
    assert engine.state.routing.requests  # the log went on being recorded
    engine.close()


def test_unsubscribing_stops_delivery(fake: FakeProvider) -> None:
    """After the handle Engine.on returned is called, the subscriber gets nothing more."""
    engine = open_engine(fake)
    seen: list[Event] = []
    unsubscribe = engine.on(Event, seen.append)
    asyncio.run(chat(engine))
    count = len(seen)
    assert count
    unsubscribe()
    unsubscribe()  # idempotent
    asyncio.run(chat(engine))
    assert len(seen) == count
    assert engine.runtime.on_appended is not None  # the engine's own log lines stay
    engine.close()


def test_a_slow_consumer_drops_with_a_counted_logged_gap(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Past buffered_max unread events the engine drops, yields a Gap with the count, and logs it."""
    engine = open_engine(fake)

    opened = sum(1 for _ in engine.store.read_all(0))  # the accounts, before subscribing

    async def go() -> tuple[list[Any], int, int]:
        stream = engine.events(buffered_max=3)
        completion = await chat(engine)  # the consumer reads nothing meanwhile
        assert isinstance(completion.result, Served)
        recorded = sum(1 for _ in engine.store.read_all(0)) - opened
        dropped = stream.dropped
        got: list[Any] = []
        for _ in range(4):
            got.append(await stream.__anext__())
        # Once it has caught up, the stream delivers again.
        await chat(engine)
        got.append(await stream.__anext__())
        stream.close()
        return got, recorded, dropped

    with caplog.at_level(logging.WARNING, logger="routeledger.engine"):
        got, recorded, dropped = asyncio.run(go())
    assert all(isinstance(item, Event) for item in got[:3])
    assert got[3] == Gap(dropped=recorded - 3)
    assert dropped == recorded - 3
    assert isinstance(got[4], RequestReceived)
    assert any("dropping events" in r.getMessage() for r in caplog.records)
    engine.close()


def test_a_stream_filters_by_type_and_ends_when_closed(fake: FakeProvider) -> None:
    """engine.events(CooldownStarted) yields only cooldowns; closing the engine ends the stream."""
    engine = open_engine(fake)

    async def go() -> list[Any]:
        got: list[Any] = []

        async def consume() -> None:
            async for evt in engine.events(CooldownStarted):
                got.append(evt)

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)
        await chat(engine)
        await asyncio.sleep(0)
        engine.close()
        await asyncio.wait_for(consumer, 10)
        return got

    got = asyncio.run(go())
    assert [type(e) for e in got] == [CooldownStarted]


def test_events_of_another_process_on_the_store_are_not_delivered(
    fake: FakeProvider, tmp_path: Path
) -> None:
    """A subscriber gets only its own engine's events, not those another engine appended."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    writer = open_engine(fake, url)
    reader = open_engine(fake, url)
    seen: list[Event] = []
    reader.on(Event, seen.append)
    asyncio.run(chat(writer))
    reader.runtime.catch_up()
    assert reader.state.routing.requests  # folded, but not decided here
    assert seen == []
    writer.close()
    reader.close()


def test_bad_subscriptions_are_refused_with_the_problem_named(fake: FakeProvider) -> None:
    """A non-event type, a non-callable or a bad buffer size is a UsageError saying which."""
    engine = open_engine(fake)
    with pytest.raises(UsageError, match="not an event class"):
        engine.on(str, print)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="not callable"):
        engine.on(CooldownStarted, "page me")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="event loop"):
        engine.events(CooldownStarted)

    async def bad_size() -> None:
        engine.events(buffered_max=0)

    with pytest.raises(UsageError, match="buffered_max"):
        asyncio.run(bad_size())
    engine.close()
