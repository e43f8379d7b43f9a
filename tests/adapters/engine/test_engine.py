"""The embedding engine: request lifecycle, holds never leak, decisions are appended first."""

from __future__ import annotations

import asyncio

import attrs
import pytest

from routeledger.adapters.engine.config import EngineConfig, ModelPrice, parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.results import BudgetRejected, Degradation, Exhausted, Served
from routeledger.adapters.testing.clock import FakeClock, counter_ids
from routeledger.core.budget.values import HoldStatus, Usage
from routeledger.core.errors import UsageError
from routeledger.core.routing import Evidence, Failed, FailureClass, Phase
from routeledger.core.routing.events import AttemptRouted, WaitDecided

CONFIG = """
[credentials.a]
provider = "openai"
[credentials.b]
provider = "openai"

[models.m1]
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 2_000_000
max_output_tokens = 100
[models.m2]
prefill = true
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 4_000_000
max_output_tokens = 100

[routes.chat]
[[routes.chat.chain]]
members = [{ credential = "a", model = "m1" }]
[[routes.chat.chain]]
members = [{ credential = "b", model = "m2" }]

[limits]
attempts_max = 4
wait_total_us_max = 10_000_000

[accounts.team]
scope = "team"
limit = 1_000
"""


def make_engine(config: str = CONFIG, store: str = "memory://") -> tuple[Engine, FakeClock]:
    clock = FakeClock()
    engine = Engine.open(store, parse_config(config), clock=clock, ids=counter_ids())
    return engine, clock


def hold_status(engine: Engine, request_id: str) -> HoldStatus:
    return engine.state.budget.holds[request_id].status


def test_a_served_request_settles_its_hold_at_the_actual_cost() -> None:
    """L3: a served request settles at the cost of the model that served it."""
    engine, _ = make_engine()
    with engine.request(route="chat", caller_scope="u", accounts=("team",), input_tokens=10) as req:
        assert req.estimate.cost_micros == 410  # worst case over the chain: 10 x 1 + 100 x 4 micros
        for attempt in req.sync_attempts():
            assert (attempt.credential_id, attempt.upstream_model) == ("a", "m1")
            attempt.succeeded(input_tokens=10, output_tokens=50)
    assert isinstance(req.result, Served)
    assert req.result.attempts == 1
    assert hold_status(engine, req.request_id) is HoldStatus.SETTLED
    assert engine.state.budget.accounts["team"].reserved == 0


def test_a_failure_falls_back_and_the_fallback_uses_its_own_model() -> None:
    """I3: after a failure the next target is tried with its own model id."""
    engine, _ = make_engine()
    with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
        seen = []
        for attempt in req.sync_attempts():
            seen.append((attempt.credential_id, attempt.upstream_model))
            if attempt.credential_id == "a":
                attempt.failed(FailureClass.PROVIDER_UNAVAILABLE, status=503, detail="down")
            else:
                attempt.succeeded(input_tokens=1, output_tokens=1)
    # A 503 is retried once on the same pair (allowed_fails, G6), then the next target serves.
    assert seen == [("a", "m1"), ("a", "m1"), ("b", "m2")]
    assert isinstance(req.result, Served)
    assert req.result.upstream_model == "m2"


def test_exhaustion_refunds_the_hold_and_reports_retry_time() -> None:
    """I2/A7: when every candidate fails before output the hold is refunded; exhaustion says when to retry."""
    engine, _ = make_engine()
    with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
        for attempt in req.sync_attempts():
            attempt.failed(FailureClass.RATE_LIMITED, status=429, hint_us=60_000_000)
    assert isinstance(req.result, Exhausted)
    assert req.result.retry_at_us is not None
    assert req.result.failures == (FailureClass.RATE_LIMITED, FailureClass.RATE_LIMITED)
    assert hold_status(engine, req.request_id) is HoldStatus.REFUNDED
    assert engine.state.budget.accounts["team"].reserved == 0


def test_a_mid_stream_failure_bills_the_partial_usage_never_zero() -> None:
    """L11: a stream cut after output started settles at the estimate when no usage was observed."""
    engine, _ = make_engine()
    with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
        for attempt in req.sync_attempts():
            if attempt.credential_id == "a":
                attempt.failed(FailureClass.STREAM_INTERRUPTED, phase=Phase.MID_STREAM, billed=True)
            else:
                assert attempt.upstream_model == "m2"  # the next target, after the cut
                attempt.failed(FailureClass.PROVIDER_UNAVAILABLE)
    assert isinstance(req.result, Exhausted)
    account = engine.state.budget.accounts["team"]
    assert account.reserved == 0
    assert account.spent == req.estimate.cost_micros > 0


def test_a_billed_cut_attempt_stays_on_the_bill_when_a_later_attempt_serves() -> None:
    """L11: cut (usage observed) then served settles at both attempts' usage, summed."""
    engine, _ = make_engine()
    with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
        for attempt in req.sync_attempts():
            if attempt.credential_id == "a":
                cut = engine.cost_micros("m1", 10, 20)
                attempt.failed(
                    FailureClass.STREAM_INTERRUPTED,
                    phase=Phase.MID_STREAM,
                    billed=True,
                    observed_usage=Usage(cost_micros=cut, tokens=30, requests=1),
                )
            else:
                attempt.succeeded(input_tokens=10, output_tokens=5)
    assert isinstance(req.result, Served)
    expected = engine.cost_micros("m1", 10, 20) + engine.cost_micros("m2", 10, 5)
    assert req.result.cost_micros == expected
    assert engine.state.budget.accounts["team"].spent == expected


def test_an_unobserved_cut_then_served_bills_an_estimate_of_the_cut_never_zero() -> None:
    """L11: a cut without a usage report adds its delivered output's estimate to the served usage."""
    engine, _ = make_engine()
    with engine.request(route="chat", caller_scope="u", accounts=("team",), input_tokens=8) as req:
        for attempt in req.sync_attempts():
            if attempt.credential_id == "a":
                attempt.failed(
                    attrs.evolve(
                        Failed(failure=FailureClass.STREAM_INTERRUPTED, phase=Phase.MID_STREAM),
                        delivered_chars=40,
                        billed=True,
                    )
                )
            else:
                attempt.succeeded(input_tokens=10, output_tokens=5)
    served = engine.cost_micros("m2", 10, 5)
    cut = engine.cost_micros("m1", 8, 10)  # 40 characters ~ 10 tokens
    assert engine.state.budget.accounts["team"].spent == served + cut > served


def test_an_exception_in_the_callers_code_refunds_the_hold() -> None:
    """L5/I2: a crash of the caller's code mid-attempt records the attempt and refunds the hold."""
    engine, _ = make_engine()
    req = engine.request(route="chat", caller_scope="u", accounts=("team",))

    def crash() -> None:
        with req:
            for _attempt in req.sync_attempts():
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        crash()
    assert hold_status(engine, req.request_id) is HoldStatus.REFUNDED
    failed = engine.state.routing.requests[req.request_id].failures
    assert [f.failure for f in failed] == [FailureClass.UNKNOWN]


@pytest.mark.parametrize("stage", ["before-attempts", "in-attempt", "after-success"])
def test_cancelling_the_task_at_any_stage_leaves_no_open_hold(stage: str) -> None:
    """L5: CancelledError at every stage resolves the hold (BaseException is not caught by except Exception)."""
    engine, _ = make_engine()
    started = asyncio.Event()

    async def run() -> None:
        async with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
            if stage == "before-attempts":
                started.set()
                await asyncio.sleep(3600)
            async for attempt in req.attempts():
                if stage == "after-success":
                    attempt.succeeded(input_tokens=1, output_tokens=1)
                    started.set()
                    await asyncio.sleep(3600)
                started.set()
                await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(run())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert engine.state.budget.open_holds == {}
    assert engine.state.budget.accounts["team"].reserved == 0


def test_a_budget_rejection_dispatches_nothing() -> None:
    """L2/L10: a request whose hold is refused gets BudgetRejected and no attempt is routed."""
    engine, _ = make_engine(CONFIG.replace("limit = 1_000", "limit = 1"))
    with engine.request(route="chat", caller_scope="u", accounts=("team",), input_tokens=10) as req:
        assert list(req.sync_attempts()) == []
    assert isinstance(req.result, BudgetRejected)
    assert not any(isinstance(r.event, AttemptRouted) for r in engine.store.read_all())


def test_waits_are_honoured_with_the_injected_clock() -> None:
    """I1.3: when every member cools down within the wait bound, the engine waits, then retries."""
    single = CONFIG.replace(
        '[[routes.chat.chain]]\nmembers = [{ credential = "b", model = "m2" }]\n', ""
    ).replace(
        "[limits]",
        '[failures.rate_limited]\nscope = "pair"\naction = "cooldown"\nbase_us = 2_000_000\nmax_us = 2_000_000\nretry_same = 1\n\n[limits]',
    )
    engine, clock = make_engine(single)
    with engine.request(route="chat", caller_scope="u") as req:
        for tries, attempt in enumerate(req.sync_attempts(), start=1):
            if tries == 1:
                attempt.failed(FailureClass.RATE_LIMITED, status=429, hint_us=2_000_000)
            else:
                attempt.succeeded(input_tokens=1, output_tokens=1)
    assert isinstance(req.result, Served)
    assert sum(clock.slept_s) >= 2.0
    assert any(isinstance(r.event, WaitDecided) for r in engine.store.read_all())


def test_an_unknown_route_degrades() -> None:
    """I0: a route nothing can serve is a typed Degraded result, never a default model."""
    engine, _ = make_engine()
    with engine.request(route="nope", caller_scope="u") as req:
        assert list(req.sync_attempts()) == []
    assert isinstance(req.result, (Degradation, Exhausted))


def test_the_same_workload_twice_gives_the_same_log() -> None:
    """D1: with a fake clock and counter ids, two runs append identical logs."""

    def workload() -> list[tuple[str, str, bytes]]:
        engine, _ = make_engine()
        for n in range(5):
            with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
                for attempt in req.sync_attempts():
                    if (n + attempt.number) % 2:
                        attempt.failed(FailureClass.PROVIDER_UNAVAILABLE, status=503)
                    else:
                        attempt.succeeded(input_tokens=3, output_tokens=4)
        return [
            (str(r.originator_id), r.topic, r.state) for r in engine.store.read_raw(0, limit=10_000)
        ]

    assert workload() == workload()


def test_reporting_twice_or_skipping_an_outcome_is_a_usage_error() -> None:
    """Misuse: two outcomes for one attempt, or asking for the next without reporting, are errors."""
    from routeledger.core.errors import UsageError

    engine, _ = make_engine()
    with engine.request(route="chat", caller_scope="u") as req:
        attempts = req.sync_attempts()
        attempt = next(attempts)
        with pytest.raises(UsageError, match="has no outcome"):
            next(attempts)
    with engine.request(route="chat", caller_scope="u") as req:
        for attempt in req.sync_attempts():
            attempt.succeeded()
            with pytest.raises(UsageError, match="already has an outcome"):
                attempt.succeeded()


def test_prices_make_the_worst_case_estimate() -> None:
    """The hold is the worst case over every model the request could reach."""
    config = EngineConfig(
        policy=parse_config(CONFIG).policy, prices={"m2": ModelPrice(output_micros_per_mtok=10**6)}
    )
    engine = Engine(engine_store(), config, clock=FakeClock())
    assert engine.estimate("chat", (), 0, 1_000_000).cost_micros == 1_000_000


def test_estimates_follow_a_replaced_config() -> None:
    """The cached prices of a chain are those of the engine's current config, never a stale one."""
    policy = parse_config(CONFIG).policy
    engine = Engine(
        engine_store(),
        EngineConfig(policy=policy, prices={"m2": ModelPrice(output_micros_per_mtok=10**6)}),
        clock=FakeClock(),
    )
    assert engine.estimate("chat", (), 0, 1_000_000).cost_micros == 1_000_000
    engine.config = EngineConfig(
        policy=policy, prices={"m2": ModelPrice(output_micros_per_mtok=3 * 10**6)}
    )
    assert engine.estimate("chat", (), 0, 1_000_000).cost_micros == 3_000_000
    assert engine.estimate("chat", (), 0, 1_000).cost_micros == 3_000


def engine_store():  # type: ignore[no-untyped-def]
    from routeledger.adapters.store.eventstore import open_store

    return open_store("memory://")


def test_restart_from_a_snapshot_plus_the_tail_equals_a_full_fold(tmp_path: object) -> None:
    """D2: the maintenance step snapshots every N events; a restart loads it and folds the tail."""
    from pathlib import Path

    from routeledger.adapters.store.canonical import state_hash
    from routeledger.adapters.store.snapshots import load_snapshot
    from routeledger.core.fold import fold_log

    url = f"sqlite:///{Path(str(tmp_path)) / 'snap.db'}"
    config = parse_config(
        CONFIG.replace("[limits]", "[engine]\nsnapshot_every_events = 20\n\n[limits]")
    )
    clock = FakeClock()
    first = Engine.open(url, config, clock=clock, ids=counter_ids("a"))
    for n in range(12):
        with first.request(route="chat", caller_scope="u", accounts=("team",)) as req:
            for attempt in req.sync_attempts():
                if n % 3 == 0 and attempt.number == 1:
                    attempt.failed(FailureClass.PROVIDER_UNAVAILABLE, status=503)
                else:
                    attempt.succeeded(input_tokens=2, output_tokens=3)
        if n < 9:  # the loop's steps; the last requests are the tail
            first.maintain()
    live = state_hash(first.state)
    first.close()
    with engine_store_at(url) as store:
        snapshot = load_snapshot(store)
        assert snapshot is not None
        assert snapshot.position < store.max_position()  # there is a tail to fold
        full = fold_log(store.read_all())
    restarted = Engine.open(url, config, clock=clock, ids=counter_ids("b"))
    assert state_hash(restarted.state) == state_hash(full) == live
    restarted.close()


def engine_store_at(url: str):  # type: ignore[no-untyped-def]
    from routeledger.adapters.store.eventstore import open_store

    return open_store(url)


# --- settlement mode: the same exit path, only the sink differs (I2) ----------------


def _scenario(engine: Engine, kind: str, **mode: object) -> str:
    """Run one request that ends as ``kind``; return its request id."""
    with engine.request(route="chat", caller_scope="u", input_tokens=10, **mode) as req:  # type: ignore[arg-type]
        for attempt in req.sync_attempts():
            if kind == "served":
                attempt.succeeded(input_tokens=10, output_tokens=50)
            elif kind == "no-usage":
                attempt.succeeded()
            elif kind == "cut":
                attempt.failed(FailureClass.STREAM_INTERRUPTED, phase=Phase.MID_STREAM, billed=True)
                break
            else:
                attempt.failed(FailureClass.PROVIDER_UNAVAILABLE)
    return req.request_id


@pytest.mark.parametrize("kind", ["served", "no-usage", "cut", "before-output"])
def test_platform_mode_reports_exactly_what_standalone_mode_books(kind: str) -> None:
    """I2: for every way a request ends, the platform is told the usage the local ledger would book."""
    from routeledger.core.budget.sinks import PlatformReport, RequestEnd, SinkMode

    reports: list[PlatformReport] = []
    platform_engine = Engine.open(
        "memory://",
        parse_config(CONFIG),
        clock=FakeClock(),
        ids=counter_ids(),
        platform=reports.append,
    )
    standalone_engine, _ = make_engine()

    platform_id = _scenario(platform_engine, kind, settlement=SinkMode.PLATFORM)
    standalone_id = _scenario(standalone_engine, kind, accounts=("team",))

    (report,) = reports
    assert report.hold_id == platform_id
    assert (
        report.outcome
        is {
            "served": RequestEnd.SUCCESS,
            "no-usage": RequestEnd.NO_USAGE,
            "cut": RequestEnd.INCOMPLETE,
            "before-output": RequestEnd.ERROR_BEFORE_OUTPUT,
        }[kind]
    )
    assert not platform_engine.state.budget.holds  # nothing held locally in platform mode
    account = standalone_engine.state.budget.accounts["team"]
    booked = account.spent
    assert (report.usage.cost_micros if report.usage is not None else 0) == booked
    assert (report.usage is None) == (
        hold_status(standalone_engine, standalone_id) is HoldStatus.REFUNDED
    )


def test_platform_mode_is_checked_when_the_request_is_made() -> None:
    """A platform-mode request with local accounts, or with no platform to report to, is a UsageError."""
    from routeledger.core.budget.sinks import SinkMode

    engine, _ = make_engine()
    with pytest.raises(UsageError, match="platform"):
        engine.request(route="chat", caller_scope="u", settlement=SinkMode.PLATFORM)
    engine.platform = lambda report: None
    with pytest.raises(UsageError, match="no accounts"):
        engine.request(
            route="chat", caller_scope="u", accounts=("team",), settlement=SinkMode.PLATFORM
        )
    with pytest.raises(UsageError, match="SinkMode"):
        engine.request(route="chat", caller_scope="u", settlement="platform")  # type: ignore[arg-type]


def test_a_success_without_a_usage_report_bills_the_estimate() -> None:
    """L11: a served request whose provider reported no usage settles at its estimate, never zero."""
    engine, _ = make_engine()
    with engine.request(route="chat", caller_scope="u", accounts=("team",), input_tokens=10) as req:
        for attempt in req.sync_attempts():
            attempt.succeeded()
    assert isinstance(req.result, Served)
    assert req.result.cost_micros == req.estimate.cost_micros == 410
    account = engine.state.budget.accounts["team"]
    assert (account.spent, account.reserved) == (410, 0)


def test_a_success_is_recorded_with_its_settlement_in_one_commit() -> None:
    """A served request takes two commits: request + hold + first attempt, then outcome + settlement."""
    engine, _ = make_engine()
    appends: list[int] = []
    real_append = engine.store.append

    def counting(events: object) -> tuple[int, ...]:
        positions = real_append(events)  # type: ignore[arg-type]
        appends.append(len(positions))
        return positions

    engine.store.append = counting  # type: ignore[method-assign]
    with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
        for attempt in req.sync_attempts():
            attempt.succeeded(input_tokens=1, output_tokens=1)
    assert appends == [4, 3]
    kinds = [type(r.event).__name__ for r in engine.store.read_all(engine.store.max_position() - 7)]
    assert kinds == [
        "RequestReceived",
        "HoldPlaced",
        "AmountReserved",
        "AttemptRouted",
        "AttemptSucceeded",
        "HoldSettled",
        "AmountPosted",
    ]


# --- concurrent requests share commits -------------------------------------------------


def test_concurrent_async_requests_share_commits_and_fold_back(tmp_path: object) -> None:
    """Thirty-two concurrent requests take far fewer commits than two each, and the log folds to the engine's state."""
    from routeledger.adapters.store.canonical import state_hash
    from routeledger.core.fold import fold_log

    engine, _ = make_engine(
        CONFIG.replace("limit = 1_000", "limit = 1_000_000"), f"sqlite:///{tmp_path}/e.db"
    )
    commits: list[int] = []
    real_append = engine.store.append

    def counting(events: object) -> tuple[int, ...]:
        positions = real_append(events)  # type: ignore[arg-type]
        commits.append(len(positions))
        return positions

    engine.store.append = counting  # type: ignore[method-assign]

    async def one(i: int) -> object:
        async with engine.request(route="chat", caller_scope=f"u{i}", accounts=("team",)) as req:
            async for attempt in req.attempts():
                await asyncio.sleep(0)
                attempt.succeeded(input_tokens=1, output_tokens=1)
        return req.result

    async def main() -> list[object]:
        return list(await asyncio.gather(*(one(i) for i in range(32))))

    results = asyncio.run(main())

    assert all(isinstance(r, Served) for r in results)
    assert not engine.state.budget.open_holds
    assert sum(commits) == 32 * 7 and len(commits) < 32 * 2
    assert max(commits) > 7  # at least one commit carried several requests
    assert state_hash(fold_log(engine.store.read_all())) == state_hash(engine.state)


def test_a_task_cancelled_while_entering_leaves_no_open_hold(tmp_path: object) -> None:
    """L5: a cancel during the entry commit still records the entry, then refunds its hold."""
    import time as _time

    engine, _ = make_engine(store=f"sqlite:///{tmp_path}/c.db")
    real_append = engine.store.append

    def slow(events: object) -> tuple[int, ...]:
        _time.sleep(0.05)
        return real_append(events)  # type: ignore[arg-type]

    engine.store.append = slow  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.create_task(_enter_and_wait(engine))
        await asyncio.sleep(0.01)  # the entry is being committed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            await asyncio.sleep(0.02)
            budget_state = engine.state.budget
            if budget_state.holds and not budget_state.open_holds and not engine._background:
                break

    asyncio.run(main())
    holds = engine.state.budget.holds
    assert len(holds) == 1
    (hold,) = holds.values()
    assert hold.status is HoldStatus.REFUNDED
    failures = [f.failure for r in engine.state.routing.requests.values() for f in r.failures]
    assert failures == [FailureClass.CALLER_CANCELLED]


async def _enter_and_wait(engine: Engine) -> None:
    async with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
        async for _attempt in req.attempts():
            await asyncio.sleep(10)


def test_leaving_before_taking_the_first_attempt_records_it_as_not_made() -> None:
    """The first attempt is decided at entry; leaving without taking it records it failed and refunds the hold."""
    engine, _ = make_engine()
    with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
        pass
    request = engine.state.routing.requests[req.request_id]
    assert request.in_flight is None
    assert [f.failure for f in request.failures] == [FailureClass.CALLER_CANCELLED]
    assert hold_status(engine, req.request_id) is HoldStatus.REFUNDED


def test_a_cache_hit_on_a_half_open_pair_never_delays_the_next_real_request() -> None:
    """G6: a request answered from a cache on a half-open pair frees the probe slot at once, so
    the next real request probes the pair instead of waiting out the probe timeout."""
    solo = '[routes.solo]\n[[routes.solo.chain]]\nmembers = [{ credential = "a", model = "m1" }]\n'
    engine, clock = make_engine(CONFIG + solo)
    with engine.request(route="solo", caller_scope="u", accounts=("team",)) as cached:
        for attempt in cached.sync_attempts():
            if attempt.number == 1:
                attempt.failed(FailureClass.RATE_LIMITED, status=429, hint_us=1_000_000)
                continue
            assert attempt.probe  # after the 1 s Retry-After the pair is half-open
            attempt.succeeded(input_tokens=1, output_tokens=1, evidence=Evidence.CACHE_HIT)
    assert clock.slept_s == [1.0]
    with engine.request(route="solo", caller_scope="u", accounts=("team",)) as real:
        for attempt in real.sync_attempts():
            assert attempt.probe
            attempt.succeeded(input_tokens=1, output_tokens=1)
    assert isinstance(real.result, Served)
    assert clock.slept_s == [1.0]  # the real request did not wait for the cache hit's probe
    assert engine.state.routing.pairs["pair:a:m1"].needs_probe is False  # its answer healed


def test_a_token_count_is_recorded_without_a_hold_an_attempt_or_a_probe() -> None:
    """Engine.count_tokens counts with the model the route would use and records the count:
    no request, no hold, and a half-open pair's probe slot is left to the next real request."""
    solo = '[routes.solo]\n[[routes.solo.chain]]\nmembers = [{ credential = "a", model = "m1" }]\n'
    engine, clock = make_engine(CONFIG + solo)
    with engine.request(route="solo", caller_scope="u", accounts=("team",)) as req:
        for attempt in req.sync_attempts():
            if attempt.number == 1:
                attempt.failed(FailureClass.MODEL_NOT_FOUND, status=404)
    clock.advance(12 * 3600)  # the suspension ended: half-open
    before = engine.store.max_position()
    counted = engine.count_tokens(route="solo", caller_scope="u", counter=lambda model: len(model))
    assert (counted.upstream_model, counted.input_tokens) == ("m1", 2)
    recorded = [r.event for r in engine.store.read_all(before)]
    assert [type(e).__name__ for e in recorded] == ["TokensCounted"]
    assert engine.state.routing.pairs["pair:a:m1"].probe_until_us == 0
    with engine.request(route="solo", caller_scope="u", accounts=("team",)) as real:
        for attempt in real.sync_attempts():
            assert attempt.probe  # the count did not take it
            attempt.succeeded(input_tokens=1, output_tokens=1)
    with pytest.raises(UsageError, match="recorded already"):
        engine.record_count(
            engine.count_target(route="solo", caller_scope="u"), 3, count_id=counted.count_id
        )
    with pytest.raises(UsageError, match="no route"):
        engine.count_target(route="nope", caller_scope="u")
