"""I2 and the settlement sink port: every endpoint shape, both modes, one code path."""

from __future__ import annotations

import enum

import attrs
import pytest

from routeledger.core.budget.admin import decide_roll_period
from routeledger.core.budget.decide import (
    RefundHold,
    SettleHold,
    decide_refund_hold,
    decide_settle_hold,
)
from routeledger.core.budget.sinks import (
    LocalLedgerSink,
    PlatformReport,
    RecordingPlatformSink,
    RequestEnd,
    SettlementSink,
    SinkMode,
    billing_for,
    open_sink,
)
from routeledger.core.budget.values import PeriodKind, PeriodSpec, Usage
from routeledger.core.errors import UsageError
from routeledger.core.time import US_PER_H

from ._support import T0_US, Ledger, zones

ESTIMATE = Usage(cost_micros=500, tokens=1_000, requests=1)


class Endpoint(enum.Enum):
    """The endpoint shapes of the gateway in the I2 report."""

    CHAT = "/v1/chat/completions"
    MESSAGES = "/v1/messages"
    RESPONSES = "/v1/responses"


class Script(enum.Enum):
    """What the provider does."""

    FAIL_BEFORE_FIRST_CHUNK = "fail_before_first_chunk"
    SUCCEED_WITH_USAGE = "succeed_with_usage"
    SUCCEED_WITHOUT_USAGE = "succeed_without_usage"
    CUT_WITH_USAGE = "cut_with_usage"
    CUT_WITHOUT_USAGE = "cut_without_usage"


@attrs.frozen
class Response:
    chunks: tuple[str, ...]
    error: str | None


def handle(
    endpoint: Endpoint, *, streaming: bool, script: Script, sink: SettlementSink
) -> Response:
    """The one handler every endpoint shape and mode shares: it only ever calls sink hooks."""
    usage = Usage(cost_micros=120, tokens=240, requests=1)
    if script is Script.FAIL_BEFORE_FIRST_CHUNK:
        sink.on_error_before_output()
        return Response(chunks=(), error="provider failed")
    chunks = ("ok1", "ok2") if streaming else ("whole",)
    if script is Script.SUCCEED_WITH_USAGE:
        sink.on_success(usage)
        return Response(chunks=chunks, error=None)
    if script is Script.SUCCEED_WITHOUT_USAGE:
        sink.on_no_usage()
        return Response(chunks=chunks, error=None)
    observed = usage if script is Script.CUT_WITH_USAGE else None
    sink.on_incomplete(observed)
    return Response(chunks=chunks[:1], error="stream cut")


SHAPES = [(endpoint, streaming) for endpoint in Endpoint for streaming in (True, False)]


def _run_standalone(endpoint: Endpoint, streaming: bool, script: Script) -> Ledger:
    lg = Ledger()
    lg.open("key", 10_000)
    lg.open("user", 10_000)
    lg.place("req-1", ESTIMATE, "key", "user")
    sink = open_sink(SinkMode.STANDALONE, hold_id="req-1", command_id="done-1", estimate=ESTIMATE)
    handle(endpoint, streaming=streaming, script=script, sink=sink)
    assert isinstance(sink, LocalLedgerSink)
    for command in sink.commands:
        if isinstance(command, RefundHold):
            lg.run(decide_refund_hold, command, now_us=T0_US + 1)
        else:
            lg.run(decide_settle_hold, command, now_us=T0_US + 1)
    return lg


def _run_platform(endpoint: Endpoint, streaming: bool, script: Script) -> list[PlatformReport]:
    sink = open_sink(SinkMode.PLATFORM, hold_id="req-1", command_id="done-1", estimate=ESTIMATE)
    handle(endpoint, streaming=streaming, script=script, sink=sink)
    assert isinstance(sink, RecordingPlatformSink)
    return sink.reports


@pytest.mark.parametrize(("endpoint", "streaming"), SHAPES)
def test_i2_streaming_pre_first_chunk_failure_refunds_on_every_endpoint(
    endpoint: Endpoint, streaming: bool
) -> None:
    """I2: given a hold, when the provider fails before the first chunk, then every shape refunds."""
    lg = _run_standalone(endpoint, streaming, Script.FAIL_BEFORE_FIRST_CHUNK)
    for account_id in ("key", "user"):
        assert (lg.account(account_id).reserved, lg.account(account_id).spent) == (0, 0)
    assert lg.state.holds["req-1"].status.value == "refunded"
    reports = _run_platform(endpoint, streaming, Script.FAIL_BEFORE_FIRST_CHUNK)
    assert reports == [
        PlatformReport(
            hold_id="req-1", command_id="done-1", outcome=RequestEnd.ERROR_BEFORE_OUTPUT, usage=None
        )
    ]


@pytest.mark.parametrize("script", list(Script))
@pytest.mark.parametrize(("endpoint", "streaming"), SHAPES)
def test_i2_both_sinks_bill_the_same_for_every_shape_and_outcome(
    endpoint: Endpoint, streaming: bool, script: Script
) -> None:
    """I2/L1: both modes bill identically for every shape, and the hold never leaks reserved."""
    lg = _run_standalone(endpoint, streaming, script)
    (report,) = _run_platform(endpoint, streaming, script)
    assert lg.account("key").reserved == 0
    billed = 0 if report.usage is None else report.usage.cost_micros
    assert lg.account("key").spent == billed
    assert lg.account("user").spent == billed


def test_i2_period_reset_with_open_holds_keeps_reserved() -> None:
    """I2/T2: given leaked-looking open holds, when the period resets, then reserved is kept and still settles."""
    lg = Ledger()
    lg.open("user", 1_000, period=PeriodSpec(kind=PeriodKind.DAY, zone="UTC"))
    lg.place("r1", 300, "user", ttl_us=12 * US_PER_H)
    lg.place("r2", 300, "user", ttl_us=12 * US_PER_H)
    lg.settle("r2", 300)
    next_day = T0_US + 16 * US_PER_H
    lg.run(decide_roll_period, "user", now_us=next_day, zones=zones)
    acc = lg.account("user")
    assert (acc.spent, acc.reserved, acc.lifetime_spent) == (0, 300, 300)
    assert lg.place("r3", 701, "user", now_us=next_day).rejection is not None
    assert lg.place("r4", 700, "user", now_us=next_day).accepted


@pytest.mark.parametrize(
    ("outcome", "observed", "expected"),
    [
        (RequestEnd.ERROR_BEFORE_OUTPUT, None, None),
        (RequestEnd.SUCCESS, Usage(cost_micros=7), Usage(cost_micros=7)),
        (RequestEnd.SUCCESS, None, ESTIMATE),
        (RequestEnd.NO_USAGE, None, ESTIMATE),
        (RequestEnd.INCOMPLETE, Usage(tokens=3), Usage(tokens=3)),
        (RequestEnd.INCOMPLETE, Usage(), ESTIMATE),
        (RequestEnd.INCOMPLETE, None, ESTIMATE),
    ],
)
def test_l11_billing_rule(
    outcome: RequestEnd, observed: Usage | None, expected: Usage | None
) -> None:
    """L11: refund before output; a cut stream bills observed usage or the estimate, never zero."""
    assert billing_for(outcome, estimate=ESTIMATE, observed=observed).usage == expected


def test_open_sink_refuses_an_unknown_mode() -> None:
    """I2: the mode is chosen once, from the enum; anything else is misuse."""
    with pytest.raises(UsageError):
        open_sink("both", hold_id="h", command_id="c", estimate=ESTIMATE)  # type: ignore[arg-type]


def test_i2_local_sink_emits_settle_commands_with_the_callers_ids() -> None:
    """X3: the local sink's commands carry the hold id and command id it was opened with."""
    sink = LocalLedgerSink(hold_id="h", command_id="c", estimate=ESTIMATE)
    sink.on_incomplete(None)
    assert sink.commands == [SettleHold(command_id="c", hold_id="h", usage=ESTIMATE)]
