"""Given/when/then tests of the budget deciders, one or more per invariant (L*, X*, T*)."""

from __future__ import annotations

import pytest

from routeledger.core.budget import events as ev
from routeledger.core.budget import ledger
from routeledger.core.budget.admin import (
    ChangeLimit,
    CorrectSpend,
    decide_change_limit,
    decide_correct_spend,
    decide_roll_period,
    periods_due,
)
from routeledger.core.budget.decide import (
    EXPIRE_BATCH_MAX,
    AdjustHold,
    OpenAccount,
    PlaceHold,
    RefundHold,
    SettleHold,
    decide_adjust_hold,
    decide_expire_due,
    decide_open_account,
    decide_place_hold,
    decide_refund_hold,
    decide_settle_hold,
)
from routeledger.core.budget.validate import usage_problem
from routeledger.core.budget.values import (
    AMOUNT_MAX,
    HOLD_TTL_US_MAX,
    AccountScope,
    HoldStatus,
    PeriodKind,
    PeriodSpec,
    RejectionReason,
    Unit,
    Usage,
    amount_problem,
    check_amount,
)
from routeledger.core.errors import UsageError
from routeledger.core.time import ENGINE_TIME_US_MAX, US_PER_H, US_PER_S

from ._support import T0_US, TTL_US, Ledger, micros, zones


def _ledger(limit: int = 1_000, *accounts: str) -> Ledger:
    lg = Ledger()
    for account_id in accounts or ("a",):
        lg.open(account_id, limit)
    return lg


# --- L1 / L2 -------------------------------------------------------------------


def test_l1_reserved_is_the_sum_of_open_holds() -> None:
    """L1: after placing two holds and settling one, reserved equals the open hold's amount."""
    lg = _ledger(1_000)
    lg.place("h1", 300)
    lg.place("h2", 200)
    lg.settle("h1", 100)
    assert lg.account().reserved == 200
    assert lg.account().spent == 100


def test_l2_admission_at_exactly_the_limit_and_not_one_more() -> None:
    """L2: spent + reserved + amount == limit is admitted; one micro more is refused, with figures."""
    lg = _ledger(1_000)
    lg.place("h1", 400)
    lg.settle("h1", 400)
    assert lg.place("h2", 600).accepted
    refused = lg.place("h3", 1)
    assert refused.rejection is not None
    assert refused.rejection.reason is RejectionReason.BUDGET_EXCEEDED
    assert (refused.rejection.account_id, refused.rejection.limit) == ("a", 1_000)
    assert refused.rejection.scope is AccountScope.KEY
    assert (refused.rejection.spent, refused.rejection.reserved) == (400, 600)
    assert refused.rejection.requested == 1


def test_l2_zero_cost_request_is_admitted_and_holds_nothing_even_over_the_limit() -> None:
    """L2: a zero-cost hold is admitted and reserves nothing, even on an exhausted account."""
    lg = _ledger(100)
    lg.place("h1", 100)
    lg.settle("h1", 150)
    assert lg.place("h0", 0).accepted
    assert lg.account().reserved == 0


# --- L3 -------------------------------------------------------------------------


def test_l3_settle_posts_min_and_books_excess_as_flagged_overage() -> None:
    """L3: settling 150 against a hold of 100 posts 100, books 50 as overage, and flags it."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    decision = lg.settle("h1", 150)
    settled = decision.events[0]
    assert isinstance(settled, ev.HoldSettled)
    assert settled.overage
    posted = decision.events[1]
    assert isinstance(posted, ev.AmountPosted)
    assert (posted.held, posted.posted, posted.overage) == (100, 100, 50)
    assert (lg.account().spent, lg.account().overage, lg.account().reserved) == (150, 50, 0)


def test_l3_settle_below_the_hold_releases_the_rest() -> None:
    """L3: settling 30 against a hold of 100 spends 30 and frees the other 70."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    decision = lg.settle("h1", 30)
    assert isinstance(decision.events[0], ev.HoldSettled)
    assert not decision.events[0].overage
    assert (lg.account().spent, lg.account().reserved) == (30, 0)


# --- L4 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (first, second)
        for first in ("settle", "refund", "expire")
        for second in ("settle", "refund", "adjust")
        # settling an expired hold books it late (L6), tested below
        if (first, second) != ("expire", "settle")
    ],
)
def test_l4_a_hold_resolves_at_most_once(first: str, second: str) -> None:
    """L4: after any resolution, a second settle/refund/adjust is a typed rejection with no event."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    now = T0_US
    if first == "settle":
        lg.settle("h1", 50)
    elif first == "refund":
        lg.run(decide_refund_hold, RefundHold(command_id="r1", hold_id="h1"), now_us=now)
    else:
        now = T0_US + TTL_US
        lg.run(decide_expire_due, now_us=now)
    before = (lg.account().spent, lg.account().reserved, lg.state.holds["h1"].status)
    if second == "settle":
        decision = lg.settle("h1", 10, command_id="other", now_us=now)
    elif second == "refund":
        decision = lg.run(
            decide_refund_hold, RefundHold(command_id="other", hold_id="h1"), now_us=now
        )
    else:
        decision = lg.run(
            decide_adjust_hold,
            AdjustHold(command_id="other", hold_id="h1", estimate=micros(5)),
            now_us=now,
        )
    assert decision.events == ()
    assert decision.rejection is not None
    expected = (
        RejectionReason.HOLD_EXPIRED if first == "expire" else RejectionReason.ALREADY_RESOLVED
    )
    assert decision.rejection.reason is expected
    assert decision.rejection.resolved_as is before[2]
    assert (lg.account().spent, lg.account().reserved, lg.state.holds["h1"].status) == before


def test_l4_late_usage_is_booked_once_only() -> None:
    """L4/L6: a second late settlement of an expired hold is refused as already resolved."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    lg.run(decide_expire_due, now_us=T0_US + TTL_US)
    lg.settle("h1", 40, command_id="s1", now_us=T0_US + TTL_US + 1)
    decision = lg.settle("h1", 40, command_id="s2", now_us=T0_US + TTL_US + 2)
    assert decision.rejection is not None
    assert decision.rejection.reason is RejectionReason.ALREADY_RESOLVED
    assert decision.rejection.resolved_as is HoldStatus.LATE_BOOKED
    assert lg.account().spent == 40


def test_l4_commands_on_a_rejected_or_unknown_hold_are_refused() -> None:
    """L4: settling a hold that was refused, or never placed, is a typed rejection."""
    lg = _ledger(10)
    lg.place("h1", 11)
    rejected = lg.settle("h1", 5)
    assert rejected.rejection is not None
    assert rejected.rejection.resolved_as is HoldStatus.REJECTED
    unknown = lg.settle("nope", 5)
    assert unknown.rejection is not None
    assert unknown.rejection.reason is RejectionReason.UNKNOWN_HOLD


# --- L5 / L6 --------------------------------------------------------------------


def test_l6_expiry_happens_at_placed_at_plus_ttl_never_earlier() -> None:
    """L6: one microsecond before the deadline nothing expires; at the deadline the hold expires."""
    lg = _ledger(1_000)
    lg.place("h1", 100, now_us=T0_US)
    assert lg.run(decide_expire_due, now_us=T0_US + TTL_US - 1).events == ()
    expired = lg.run(decide_expire_due, now_us=T0_US + TTL_US)
    assert isinstance(expired.events[0], ev.HoldExpired)
    assert lg.state.holds["h1"].status is HoldStatus.EXPIRED
    assert lg.account().reserved == 0


def test_l6_settlement_after_expiry_is_booked_as_a_late_debit() -> None:
    """L6: usage arriving after expiry is booked as a late posted debit, never dropped."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    lg.run(decide_expire_due, now_us=T0_US + TTL_US)
    decision = lg.settle("h1", 250, now_us=T0_US + TTL_US + 5)
    assert isinstance(decision.events[0], ev.LateUsageBooked)
    posted = decision.events[1]
    assert isinstance(posted, ev.AmountPosted)
    assert posted.late
    assert (posted.held, posted.posted) == (0, 250)
    assert (lg.account().spent, lg.account().reserved) == (250, 0)


def test_l6_settling_an_overdue_open_hold_expires_it_and_books_late() -> None:
    """L6: a settle after the deadline but before any expiry pass expires the hold and books late."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    decision = lg.settle("h1", 70, now_us=T0_US + TTL_US)
    assert [type(e) for e in decision.events] == [
        ev.HoldExpired,
        ev.AmountReleased,
        ev.LateUsageBooked,
        ev.AmountPosted,
    ]
    assert lg.state.holds["h1"].status is HoldStatus.LATE_BOOKED
    assert (lg.account().spent, lg.account().reserved) == (70, 0)


@pytest.mark.parametrize("kind", ["refund", "adjust"])
def test_l6_refund_or_adjust_of_an_overdue_hold_expires_it(kind: str) -> None:
    """L6: refunding or adjusting an overdue hold expires it and answers 'hold expired'."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    later = T0_US + TTL_US + 1
    if kind == "refund":
        decision = lg.run(
            decide_refund_hold, RefundHold(command_id="c", hold_id="h1"), now_us=later
        )
    else:
        decision = lg.run(
            decide_adjust_hold,
            AdjustHold(command_id="c", hold_id="h1", estimate=micros(1)),
            now_us=later,
        )
    assert decision.rejection is not None
    assert decision.rejection.reason is RejectionReason.HOLD_EXPIRED
    assert lg.state.holds["h1"].status is HoldStatus.EXPIRED
    assert lg.account().reserved == 0


def test_l5_expiry_pass_is_bounded_and_repeating_it_drains_every_overdue_hold() -> None:
    """L5: a pass resolves at most batch_max holds; passes repeated until empty leave none open."""
    lg = _ledger(1_000)
    for i in range(5):
        lg.place(f"h{i}", 10, now_us=T0_US + i)
    lg.place("young", 10, now_us=T0_US + TTL_US)
    now = T0_US + TTL_US + 10
    first = lg.run(decide_expire_due, now_us=now, batch_max=2)
    assert sum(isinstance(e, ev.HoldExpired) for e in first.events) == 2
    while lg.run(decide_expire_due, now_us=now).events:
        pass
    assert list(lg.state.open_holds) == ["young"]
    assert lg.account().reserved == 10


def test_l5_expire_due_rejects_an_invalid_batch_size() -> None:
    """L5: the expiry batch is bounded by EXPIRE_BATCH_MAX; another bound is misuse."""
    with pytest.raises(UsageError):
        decide_expire_due(ledger.initial(), now_us=T0_US, batch_max=EXPIRE_BATCH_MAX + 1)


# --- L7 -------------------------------------------------------------------------


def test_l7_spend_is_conserved_and_duplicate_usage_callbacks_change_nothing() -> None:
    """L7: lifetime spend equals settled + overage + late in the log; a re-delivered settle is a no-op."""
    lg = _ledger(10_000)
    lg.place("h1", 100)
    lg.settle("h1", 150)
    again = lg.settle("h1", 150)
    assert again.duplicate
    assert again.events == ()
    lg.place("h2", 100)
    lg.run(decide_expire_due, now_us=T0_US + TTL_US)
    lg.settle("h2", 30, now_us=T0_US + TTL_US + 1)
    booked = sum(e.posted + e.overage for e in lg.store.log if isinstance(e, ev.AmountPosted))
    assert booked == lg.account().lifetime_spent == 180


# --- L8 -------------------------------------------------------------------------


def test_l8_a_hold_is_admitted_on_all_scopes_or_none() -> None:
    """L8: a hold refused on the team scope reserves nothing on the key and user scopes."""
    lg = Ledger()
    lg.open("key", 1_000)
    lg.open("user", 1_000)
    lg.open("team", 50)
    decision = lg.place("h1", 100, "key", "user", "team")
    assert decision.rejection is not None
    assert decision.rejection.account_id == "team"
    assert [type(e) for e in decision.events] == [ev.HoldRejected]
    assert all(a.reserved == 0 for a in lg.state.accounts.values())


def test_l8_settle_and_refund_touch_exactly_the_placed_scopes() -> None:
    """L8: placement, settlement and refund each write one entry on every account of the hold."""
    lg = Ledger()
    for account_id in ("key", "user", "team", "other"):
        lg.open(account_id, 1_000)
    placed = lg.place("h1", 100, "key", "user", "team")
    settled = lg.settle("h1", 60)
    lg.place("h2", 100, "key", "user", "team")
    refunded = lg.run(decide_refund_hold, RefundHold(command_id="r", hold_id="h2"), now_us=T0_US)
    for decision in (placed, settled, refunded):
        touched = [e.account_id for e in decision.events if isinstance(e, ev.AccountEvent)]
        assert touched == ["key", "user", "team"]
    assert lg.account("other").reserved == lg.account("other").spent == 0
    assert [lg.account(a).spent for a in ("key", "user", "team")] == [60, 60, 60]


def test_l8_each_scope_is_charged_in_its_own_unit() -> None:
    """L8: a money, a token and a request account each hold and settle their own unit."""
    lg = Ledger()
    lg.open("money", 1_000)
    lg.open("tokens", 5_000, unit=Unit.TOKENS)
    lg.open("requests", 2, unit=Unit.REQUESTS)
    estimate = Usage(cost_micros=100, tokens=2_000, requests=1)
    lg.place("h1", estimate, "money", "tokens", "requests")
    assert [lg.account(a).reserved for a in ("money", "tokens", "requests")] == [100, 2_000, 1]
    lg.settle("h1", Usage(cost_micros=80, tokens=1_500, requests=1))
    assert [lg.account(a).spent for a in ("money", "tokens", "requests")] == [80, 1_500, 1]


def test_l8_unknown_scope_refuses_the_whole_hold() -> None:
    """L8: a hold naming an account that was never opened is refused on every scope."""
    lg = _ledger(1_000)
    decision = lg.place("h1", 10, "a", "ghost")
    assert decision.rejection is not None
    assert decision.rejection.reason is RejectionReason.UNKNOWN_ACCOUNT
    assert lg.account().reserved == 0


# --- L9 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [-1, AMOUNT_MAX + 1, True, 1.5, float("nan"), float("inf"), "5", None]
)
def test_l9_invalid_amounts_are_typed_results(value: object) -> None:
    """L9: negatives, overflow, bools, floats (NaN/inf) and strings are AMOUNT_INVALID results."""
    rejection = check_amount(value, field="cost_micros")
    assert rejection is not None
    assert rejection.reason is RejectionReason.AMOUNT_INVALID
    assert amount_problem(value) is not None
    lg = _ledger(1_000)
    decision = lg.place("h1", Usage(cost_micros=value))  # type: ignore[arg-type]
    assert decision.rejection is not None
    assert decision.rejection.reason is RejectionReason.AMOUNT_INVALID
    assert decision.events == ()


def test_l9_valid_amounts_pass_the_edge_check() -> None:
    """L9: 0 and AMOUNT_MAX are valid amounts."""
    assert check_amount(0, field="x") is None
    assert check_amount(AMOUNT_MAX, field="x") is None


@pytest.mark.parametrize("field", ["tokens", "requests"])
def test_l9_each_usage_field_is_checked(field: str) -> None:
    """L9: an invalid token or request count is named in the problem."""
    problem = usage_problem(Usage(**{field: -1}))
    assert problem is not None
    assert problem.startswith(field)
    assert usage_problem("not usage") is not None


@pytest.mark.parametrize("kind", ["settle", "adjust"])
def test_l9_invalid_usage_on_settle_or_adjust_is_a_result(kind: str) -> None:
    """L9: settling or adjusting with a negative amount is refused without an event."""
    lg = _ledger(1_000)
    lg.place("h1", 10)
    if kind == "settle":
        decision = lg.settle("h1", -5)
    else:
        decision = lg.run(
            decide_adjust_hold,
            AdjustHold(command_id="c", hold_id="h1", estimate=micros(-5)),
            now_us=T0_US,
        )
    assert decision.rejection is not None
    assert decision.rejection.reason is RejectionReason.AMOUNT_INVALID
    assert decision.events == ()


# --- L10 / L11 ------------------------------------------------------------------


def test_l10_nothing_is_reserved_until_the_batch_is_appended() -> None:
    """L10: deciding a hold changes no state; only the appended batch reserves (fail closed)."""
    lg = _ledger(1_000)
    decision = decide_place_hold(
        lg.state,
        PlaceHold(hold_id="h1", account_ids=("a",), estimate=micros(10), ttl_us=TTL_US),
        now_us=T0_US,
    )
    assert decision.accepted
    assert "h1" not in lg.state.holds
    assert lg.account().reserved == 0


def test_l11_partial_stream_settles_at_observed_usage() -> None:
    """L11: a stream cut after k tokens settles at the observed usage, not zero, not the estimate."""
    lg = _ledger(1_000)
    lg.place("h1", 500)
    lg.settle("h1", 120)
    assert lg.account().spent == 120


# --- adjust ---------------------------------------------------------------------


def test_adjust_up_is_admitted_like_a_new_hold_and_down_releases() -> None:
    """L2: re-pricing up reserves the difference; re-pricing down releases it."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    up = lg.run(
        decide_adjust_hold,
        AdjustHold(command_id="c1", hold_id="h1", estimate=micros(400)),
        now_us=T0_US,
    )
    assert up.accepted
    assert lg.account().reserved == 400
    lg.run(
        decide_adjust_hold,
        AdjustHold(command_id="c2", hold_id="h1", estimate=micros(150)),
        now_us=T0_US,
    )
    assert lg.account().reserved == 150
    lg.settle("h1", 150)
    assert (lg.account().spent, lg.account().reserved) == (150, 0)


def test_x2_adjust_over_budget_is_refused_and_sticky() -> None:
    """X2: an adjustment refused over budget stays refused for its id after budget frees up."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    lg.place("h2", 800)
    cmd = AdjustHold(command_id="c1", hold_id="h1", estimate=micros(300))
    refused = lg.run(decide_adjust_hold, cmd, now_us=T0_US)
    assert refused.rejection is not None
    assert refused.rejection.reason is RejectionReason.BUDGET_EXCEEDED
    assert lg.account().reserved == 900
    lg.settle("h2", 0)
    again = lg.run(decide_adjust_hold, cmd, now_us=T0_US)
    assert again.duplicate
    assert again.rejection == refused.rejection


# --- X1 / X2 / X3 ---------------------------------------------------------------


def test_x1_same_place_twice_is_a_no_op() -> None:
    """X1: re-delivering the same place command appends nothing and answers the same."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    again = lg.place("h1", 100)
    assert again.duplicate
    assert again.events == ()
    assert again.rejection is None
    assert lg.account().reserved == 100


def test_x1_same_hold_id_other_payload_is_a_recorded_conflict() -> None:
    """X1: reusing a hold id with another amount records a conflict and reserves nothing more."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    conflict = lg.place("h1", 200)
    assert conflict.rejection is not None
    assert conflict.rejection.reason is RejectionReason.COMMAND_CONFLICT
    assert [type(e) for e in conflict.events] == [ev.HoldCommandConflicted]
    assert lg.account().reserved == 100


def test_x1_same_settle_id_other_payload_is_a_recorded_conflict() -> None:
    """X1: a settle id reused with other usage is recorded as a conflict, the hold unchanged."""
    lg = _ledger(1_000)
    lg.place("h1", 100)
    lg.settle("h1", 50, command_id="s")
    conflict = lg.settle("h1", 60, command_id="s")
    assert [type(e) for e in conflict.events] == [ev.HoldCommandConflicted]
    assert lg.account().spent == 50


def test_x2_a_refused_hold_stays_refused_after_budget_is_freed() -> None:
    """X2: a hold id refused over budget is refused again on retry even once budget is free."""
    lg = _ledger(100)
    lg.place("big", 100)
    refused = lg.place("h1", 50)
    assert refused.rejection is not None
    lg.run(decide_refund_hold, RefundHold(command_id="r", hold_id="big"), now_us=T0_US)
    retry = lg.place("h1", 50)
    assert retry.duplicate
    assert retry.rejection == refused.rejection
    assert lg.account().reserved == 0


def test_x3_ids_come_from_the_caller_and_are_validated() -> None:
    """X3: the ledger never mints ids; an empty, spaced or over-long id is misuse."""
    lg = _ledger(1_000)
    for bad in ("", "has space", "x" * 181, "tab\there"):
        with pytest.raises(UsageError):
            decide_place_hold(
                lg.state,
                PlaceHold(hold_id=bad, account_ids=("a",), estimate=micros(1), ttl_us=TTL_US),
                now_us=T0_US,
            )
    with pytest.raises(UsageError):
        decide_place_hold(
            lg.state,
            PlaceHold(hold_id=5, account_ids=("a",), estimate=micros(1), ttl_us=TTL_US),  # type: ignore[arg-type]
            now_us=T0_US,
        )


@pytest.mark.parametrize(
    "command",
    [
        PlaceHold(hold_id="h", account_ids=(), estimate=Usage(), ttl_us=TTL_US),
        PlaceHold(hold_id="h", account_ids=("a", "a"), estimate=Usage(), ttl_us=TTL_US),
        PlaceHold(hold_id="h", account_ids=["a"], estimate=Usage(), ttl_us=TTL_US),  # type: ignore[arg-type]
        PlaceHold(hold_id="h", account_ids=("a",), estimate=Usage(), ttl_us=0),
        PlaceHold(hold_id="h", account_ids=("a",), estimate=Usage(), ttl_us=HOLD_TTL_US_MAX + 1),
    ],
)
def test_malformed_place_commands_are_misuse(command: PlaceHold) -> None:
    """Malformed commands (no or duplicate scopes, bad TTL) raise UsageError, never a result."""
    with pytest.raises(UsageError):
        decide_place_hold(_ledger(1_000).state, command, now_us=T0_US)


def test_t1_now_must_be_engine_time() -> None:
    """T1: decisions take engine time as an int argument; anything else is misuse."""
    with pytest.raises(UsageError):
        decide_expire_due(ledger.initial(), now_us=1.5)  # type: ignore[arg-type]


def test_t1_expiry_depends_only_on_the_now_argument() -> None:
    """T1: the same state and now give the same expiry decision whatever the wall clock says."""
    lg = _ledger(1_000)
    lg.place("h1", 10)
    first = decide_expire_due(lg.state, now_us=T0_US + TTL_US)
    second = decide_expire_due(lg.state, now_us=T0_US + TTL_US)
    assert first == second


# --- T2 / T3 --------------------------------------------------------------------


def test_t2_rollover_resets_period_spend_keeps_reserved_and_lifetime() -> None:
    """T2/I2: a period reset with an open hold keeps reserved; the hold settles in the new period."""
    lg = Ledger()
    lg.open("a", 1_000, period=PeriodSpec(kind=PeriodKind.DAY, zone="UTC"))
    lg.place("old", 200)
    lg.settle("old", 200)
    lg.place("open", 300, ttl_us=HOLD_TTL_US_MAX)
    next_day = T0_US + 24 * US_PER_H
    assert periods_due(lg.state, now_us=next_day) == ("a",)
    rolled = lg.run(decide_roll_period, "a", now_us=next_day, zones=zones)
    assert isinstance(rolled.events[0], ev.PeriodRolledOver)
    assert rolled.events[0].closed_spent == 200
    acc = lg.account()
    assert (acc.spent, acc.reserved, acc.lifetime_spent) == (0, 300, 200)
    lg.settle("open", 250, now_us=next_day + 1)
    assert (acc.spent, acc.reserved, acc.lifetime_spent) == (250, 0, 450)


def test_t2_rollover_before_the_boundary_does_nothing() -> None:
    """T2: rolling a period that has not ended (or has no period) appends nothing."""
    lg = Ledger()
    lg.open("a", 1_000, period=PeriodSpec(kind=PeriodKind.DAY, zone="UTC"))
    lg.open("forever", 1_000)
    assert lg.run(decide_roll_period, "a", now_us=T0_US + 1, zones=zones).events == ()
    assert lg.run(decide_roll_period, "forever", now_us=T0_US + 10**12, zones=zones).events == ()
    unknown = decide_roll_period(lg.state, "ghost", now_us=T0_US, zones=zones)
    assert unknown.rejection is not None
    assert unknown.rejection.reason is RejectionReason.UNKNOWN_ACCOUNT


def test_t3_a_limit_change_is_seen_by_the_very_next_decision() -> None:
    """T3: after lowering the limit, the next place is judged against the new limit."""
    lg = _ledger(1_000)
    lg.run(
        decide_change_limit, ChangeLimit(command_id="l1", account_id="a", limit=50), now_us=T0_US
    )
    assert lg.place("h1", 51).rejection is not None
    lg.run(
        decide_change_limit, ChangeLimit(command_id="l2", account_id="a", limit=51), now_us=T0_US
    )
    assert lg.place("h2", 51).accepted


def test_t3_a_spend_correction_is_seen_by_the_very_next_decision() -> None:
    """T3: a spend correction moves period and lifetime spend and is enforced at once."""
    lg = _ledger(1_000)
    lg.run(
        decide_correct_spend,
        CorrectSpend(command_id="c1", account_id="a", delta=900, reason="import"),
        now_us=T0_US,
    )
    assert lg.place("h1", 101).rejection is not None
    lg.run(
        decide_correct_spend,
        CorrectSpend(command_id="c2", account_id="a", delta=-100, reason="refund"),
        now_us=T0_US,
    )
    assert (lg.account().spent, lg.account().lifetime_spent) == (800, 800)
    assert lg.place("h2", 200).accepted


def test_x2_a_correction_below_zero_is_refused_and_sticky() -> None:
    """X2: a correction that would make spend negative is recorded as refused, and stays refused."""
    lg = _ledger(1_000)
    cmd = CorrectSpend(command_id="c1", account_id="a", delta=-1, reason="oops")
    refused = lg.run(decide_correct_spend, cmd, now_us=T0_US)
    assert [type(e) for e in refused.events] == [ev.AccountCommandRejected]
    lg.run(
        decide_correct_spend,
        CorrectSpend(command_id="c2", account_id="a", delta=10, reason="x"),
        now_us=T0_US,
    )
    again = lg.run(decide_correct_spend, cmd, now_us=T0_US)
    assert again.duplicate
    assert again.rejection == refused.rejection
    assert lg.account().spent == 10


def test_admin_commands_validate_amounts_and_accounts() -> None:
    """L9: admin commands refuse invalid limits/deltas and unknown accounts as results."""
    lg = _ledger(1_000)
    bad_limit = lg.run(
        decide_change_limit, ChangeLimit(command_id="l", account_id="a", limit=-1), now_us=T0_US
    )
    assert bad_limit.rejection is not None
    bad_delta = lg.run(
        decide_correct_spend,
        CorrectSpend(command_id="c", account_id="a", delta=AMOUNT_MAX + 1, reason=""),
        now_us=T0_US,
    )
    assert bad_delta.rejection is not None
    ghost = lg.run(
        decide_change_limit, ChangeLimit(command_id="l", account_id="ghost", limit=1), now_us=T0_US
    )
    assert ghost.rejection is not None
    assert ghost.rejection.reason is RejectionReason.UNKNOWN_ACCOUNT
    with pytest.raises(UsageError):
        decide_correct_spend(
            lg.state,
            CorrectSpend(command_id="c", account_id="a", delta=1, reason=None),  # type: ignore[arg-type]
            now_us=T0_US,
        )


def test_x1_admin_command_ids_are_idempotent_and_conflicts_recorded() -> None:
    """X1: a repeated limit change is a no-op; the same id with another limit is a conflict."""
    lg = _ledger(1_000)
    cmd = ChangeLimit(command_id="l1", account_id="a", limit=10)
    lg.run(decide_change_limit, cmd, now_us=T0_US)
    assert lg.run(decide_change_limit, cmd, now_us=T0_US).duplicate
    conflict = lg.run(
        decide_change_limit, ChangeLimit(command_id="l1", account_id="a", limit=20), now_us=T0_US
    )
    assert [type(e) for e in conflict.events] == [ev.AccountCommandConflicted]
    assert lg.account().limit == 10


def test_x1_open_account_is_idempotent_and_an_existing_account_is_refused() -> None:
    """X1: re-opening with the same command is a no-op; another command or payload is refused."""
    lg = _ledger(1_000)
    assert lg.open("a", 1_000).duplicate
    conflict = lg.open("a", 5)
    assert [type(e) for e in conflict.events] == [ev.AccountCommandConflicted]
    other = lg.run(
        decide_open_account,
        OpenAccount(
            command_id="x", account_id="a", scope=AccountScope.USER, unit=Unit.MICROS, limit=1
        ),
        now_us=T0_US,
        zones=zones,
    )
    assert other.rejection is not None
    assert other.rejection.reason is RejectionReason.ACCOUNT_EXISTS


def test_open_account_validates_limit_and_rolling_length() -> None:
    """L9: an out-of-range limit is a result; a rolling period without a length is misuse."""
    lg = Ledger()
    assert lg.open("a", AMOUNT_MAX + 1).rejection is not None
    with pytest.raises(UsageError):
        lg.open("b", 1, period=PeriodSpec(kind=PeriodKind.ROLLING, length_us=0))


def test_hold_expiring_beyond_engine_time_is_clamped() -> None:
    """L6: a hold placed at the end of engine time expires at ENGINE_TIME_US_MAX, not beyond."""
    lg = Ledger()
    lg.open("a", 1_000, now_us=ENGINE_TIME_US_MAX - 10)
    lg.place("h1", 1, now_us=ENGINE_TIME_US_MAX - 10)
    assert lg.state.holds["h1"].expires_at_us == ENGINE_TIME_US_MAX


def test_refund_releases_everything() -> None:
    """I2: a refund releases the whole hold and spends nothing."""
    lg = _ledger(1_000)
    lg.place("h1", 400)
    lg.run(decide_refund_hold, RefundHold(command_id="r", hold_id="h1"), now_us=T0_US + US_PER_S)
    assert (lg.account().spent, lg.account().reserved) == (0, 0)
    assert (
        decide_settle_hold(
            lg.state, SettleHold(command_id="r", hold_id="h1", usage=Usage()), now_us=T0_US
        ).rejection
        is not None
    )


def test_x1_refund_redelivery_is_a_no_op_and_unknown_hold_is_refused() -> None:
    """X1: a re-delivered refund appends nothing; refunding an unknown hold is a typed rejection."""
    lg = _ledger(1_000)
    lg.place("h1", 10)
    cmd = RefundHold(command_id="r", hold_id="h1")
    lg.run(decide_refund_hold, cmd, now_us=T0_US)
    again = lg.run(decide_refund_hold, cmd, now_us=T0_US)
    assert again.duplicate
    assert again.events == ()
    unknown = lg.run(decide_refund_hold, RefundHold(command_id="r", hold_id="nope"), now_us=T0_US)
    assert unknown.rejection is not None
    assert unknown.rejection.reason is RejectionReason.UNKNOWN_HOLD
