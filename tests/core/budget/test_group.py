"""Group commit: deciding hold commands as one batch equals deciding them one by one."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.core.budget import ledger
from routeledger.core.budget.decide import (
    AdjustHold,
    Decision,
    PlaceHold,
    RefundHold,
    SettleHold,
    decide_adjust_hold,
    decide_place_hold,
    decide_refund_hold,
    decide_settle_hold,
)
from routeledger.core.budget.group import GROUP_COMMANDS_MAX, decide_holds
from routeledger.core.budget.values import Usage
from routeledger.core.errors import UsageError
from routeledger.core.time import US_PER_S

from ._support import T0_US, Ledger

ACCOUNTS = ("a", "b", "c")
HOLDS = tuple(f"h{i}" for i in range(6))
DECIDERS: dict[type[Any], Any] = {
    PlaceHold: decide_place_hold,
    SettleHold: decide_settle_hold,
    RefundHold: decide_refund_hold,
    AdjustHold: decide_adjust_hold,
}

amounts = st.sampled_from([0, 1, 99, 100, 101, 250]) | st.integers(0, 300)
usages = st.builds(Usage, cost_micros=amounts)
account_sets = st.lists(st.sampled_from(ACCOUNTS), min_size=1, max_size=3, unique=True).map(tuple)
hold_ids = st.sampled_from(HOLDS)
command_ids = st.sampled_from(["c1", "c2"])
ttls = st.sampled_from([1, 5 * US_PER_S, 60 * US_PER_S])

commands = st.one_of(
    st.builds(PlaceHold, hold_id=hold_ids, account_ids=account_sets, estimate=usages, ttl_us=ttls),
    st.builds(SettleHold, command_id=command_ids, hold_id=hold_ids, usage=usages),
    st.builds(RefundHold, command_id=command_ids, hold_id=hold_ids),
    st.builds(AdjustHold, command_id=command_ids, hold_id=hold_ids, estimate=usages),
)


def _snapshot(state: ledger.LedgerState) -> tuple[object, ...]:
    """Everything the ledger state holds, as comparable values."""

    def slots(obj: object) -> tuple[object, ...]:
        return tuple(getattr(obj, name) for name in type(obj).__slots__)  # type: ignore[attr-defined]

    return (
        {k: slots(v) for k, v in state.accounts.items()},
        {k: slots(v) for k, v in state.holds.items()},
        list(state.open_holds),
        dict(state.commands),
    )


def _history(limits: list[int], before: list[Any], now_us: int) -> Ledger:
    ledger_ = Ledger()
    for account_id, limit in zip(ACCOUNTS, limits, strict=True):
        ledger_.open(account_id, limit)
    for command in before:
        ledger_.run(DECIDERS[type(command)], command, now_us=now_us)
    return ledger_


@given(
    limits=st.lists(st.sampled_from([0, 1, 100, 300]), min_size=3, max_size=3),
    before=st.lists(commands, max_size=12),
    group=st.lists(commands, min_size=1, max_size=12),
    later_s=st.sampled_from([0, 2, 10, 100]),
)
def test_group_equals_one_by_one(
    limits: list[int], before: list[Any], group: list[Any], later_s: int
) -> None:
    """A group's decisions, appended as one batch, equal deciding and appending each in turn."""
    grouped = _history(limits, before, T0_US)
    one_by_one = _history(limits, before, T0_US)
    now_us = T0_US + later_s * US_PER_S
    untouched = _snapshot(grouped.state)

    outcomes = decide_holds(grouped.state, group, now_us=now_us)

    assert _snapshot(grouped.state) == untouched
    expected = [one_by_one.run(DECIDERS[type(c)], c, now_us=now_us) for c in group]
    assert list(outcomes) == expected
    batch = [e for outcome in outcomes if isinstance(outcome, Decision) for e in outcome.events]
    grouped.store.append(batch)
    grouped.reload()
    ledger.check_invariants(grouped.state)
    assert _snapshot(grouped.state) == _snapshot(one_by_one.state)


def test_misuse_is_returned_in_its_slot_and_changes_nothing() -> None:
    """A command that is misuse gets its UsageError back; the commands around it are decided."""
    ledger_ = _history([100, 100, 100], [], T0_US)
    good = PlaceHold(hold_id="h1", account_ids=("a",), estimate=Usage(cost_micros=60), ttl_us=5)
    bad = PlaceHold(hold_id="bad id", account_ids=("a",), estimate=Usage(cost_micros=1), ttl_us=5)
    over = PlaceHold(hold_id="h2", account_ids=("a",), estimate=Usage(cost_micros=60), ttl_us=5)

    first, error, third = decide_holds(ledger_.state, [good, bad, over], now_us=T0_US)

    assert isinstance(first, Decision) and first.accepted
    assert isinstance(error, UsageError) and "PlaceHold.hold_id: 'bad id'" in str(error)
    assert isinstance(third, Decision) and third.rejection is not None
    assert third.rejection.reserved == 60  # saw the first hold of the group


def test_group_size_is_bounded() -> None:
    """An empty group or one above GROUP_COMMANDS_MAX is refused as misuse."""
    state = ledger.initial()
    command = RefundHold(command_id="c", hold_id="h")
    with pytest.raises(UsageError, match=r"1\.\.64"):
        decide_holds(state, [], now_us=T0_US)
    with pytest.raises(UsageError, match=r"1\.\.64"):
        decide_holds(state, [command] * (GROUP_COMMANDS_MAX + 1), now_us=T0_US)


def test_a_command_of_another_kind_is_misuse() -> None:
    """A non-hold command in a group is returned as a UsageError naming its index."""
    refund = RefundHold(command_id="c", hold_id="h")
    unknown, outcome = decide_holds(ledger.initial(), [refund, object()], now_us=T0_US)  # type: ignore[list-item]
    assert isinstance(unknown, Decision) and unknown.rejection is not None
    assert isinstance(outcome, UsageError) and "group command 1" in str(outcome)


def test_a_repeated_command_id_in_a_group_is_judged_against_its_record() -> None:
    """X1/X2 in a group: the recorded settle is a duplicate again, another payload a conflict."""
    ledger_ = _history([100, 100, 100], [], T0_US)
    one_by_one = _history([100, 100, 100], [], T0_US)
    for history in (ledger_, one_by_one):
        history.place("h1", 50, "a")
        history.settle("h1", 20, command_id="c1")
    same = SettleHold(command_id="c1", hold_id="h1", usage=Usage(cost_micros=20))
    other = SettleHold(command_id="c1", hold_id="h1", usage=Usage(cost_micros=30))

    outcomes = decide_holds(ledger_.state, [same, other], now_us=T0_US)

    expected = [one_by_one.run(decide_settle_hold, c, now_us=T0_US) for c in (same, other)]
    assert list(outcomes) == expected
    assert expected[0].duplicate and expected[1].rejection is not None


def test_malformed_commands_are_misuse_in_their_slots() -> None:
    """Malformed ids or account lists come back as UsageErrors, exactly as one by one; unknown accounts are rejections."""
    ledger_ = _history([100, 100, 100], [], T0_US)
    one = Usage(cost_micros=1)
    group: list[Any] = [
        PlaceHold(hold_id=5, account_ids=("a",), estimate=one, ttl_us=5),  # type: ignore[arg-type]
        PlaceHold(hold_id="h1", account_ids=["a"], estimate=one, ttl_us=5),  # type: ignore[arg-type]
        PlaceHold(hold_id="h2", account_ids=(3,), estimate=one, ttl_us=5),  # type: ignore[arg-type]
        SettleHold(command_id=7, hold_id="h3", usage=one),  # type: ignore[arg-type]
        PlaceHold(hold_id="h4", account_ids=("nope",), estimate=one, ttl_us=5),
    ]

    outcomes = decide_holds(ledger_.state, group, now_us=T0_US)

    for command, outcome in zip(group[:4], outcomes[:4], strict=True):
        with pytest.raises(UsageError) as raised:
            DECIDERS[type(command)](ledger_.state, command, now_us=T0_US)
        assert isinstance(outcome, UsageError) and str(outcome) == str(raised.value)
    unknown = outcomes[4]
    assert isinstance(unknown, Decision) and unknown.rejection is not None
    assert unknown.rejection.reason.value == "unknown_account"
