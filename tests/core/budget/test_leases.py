"""D4 at scale: leases are holds on the hot account; processes admit against their own lease."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routeledger.core.budget import ledger
from routeledger.core.budget.decide import Decision, decide_expire_due
from routeledger.core.budget.leases import (
    ReturnLease,
    TakeLease,
    decide_return_lease,
    decide_take_lease,
)
from routeledger.core.budget.values import AMOUNT_MAX, HoldStatus, RejectionReason, Unit, Usage

from ._support import T0_US, TTL_US, Ledger, Store


def _take(lg: Ledger, lease_id: str, amount: int, *, now_us: int = T0_US) -> Decision:
    return lg.run(
        decide_take_lease,
        TakeLease(lease_id=lease_id, account_id="team", amount=amount, ttl_us=TTL_US),
        now_us=now_us,
    )


def _return(lg: Ledger, lease_id: str, *, command_id: str = "", now_us: int = T0_US) -> Decision:
    return lg.run(
        decide_return_lease,
        ReturnLease(command_id=command_id or "ret-" + lease_id, lease_id=lease_id),
        now_us=now_us,
    )


def test_d4_leases_are_bounded_by_the_hot_accounts_comparator() -> None:
    """D4/L2: leases are admitted like holds, so the fleet's leases never exceed the hot limit."""
    lg = Ledger()
    lg.open("team", 1_000)
    assert _take(lg, "lease-p1", 400).accepted
    assert _take(lg, "lease-p2", 400).accepted
    refused = _take(lg, "lease-p3", 400)
    assert refused.rejection is not None
    assert refused.rejection.reason is RejectionReason.BUDGET_EXCEEDED
    assert lg.account("team").reserved == 800
    assert lg.account("lease-p1").limit == 400


def test_d4_requests_admit_against_the_lease_and_return_charges_the_hot_account() -> None:
    """D4/L3: requests spend from the lease; returning it charges the hot account exactly that."""
    lg = Ledger()
    lg.open("team", 1_000)
    lg.open("key", 10_000)
    _take(lg, "lease-p1", 400)
    lg.place("r1", 300, "key", "lease-p1")
    assert lg.place("r2", 101, "key", "lease-p1").rejection is not None
    lg.settle("r1", 250)
    busy = _take(lg, "lease-p1", 400)
    assert busy.duplicate
    _return(lg, "lease-p1")
    team = lg.account("team")
    assert (team.spent, team.reserved) == (250, 0)
    assert lg.account("lease-p1").limit == 0
    assert lg.place("r3", 1, "key", "lease-p1").rejection is not None


def test_d4_a_lease_in_use_cannot_be_returned() -> None:
    """L1: a lease with open holds is refused with LEASE_IN_USE and nothing changes."""
    lg = Ledger()
    lg.open("team", 1_000)
    _take(lg, "lease-p1", 400)
    lg.place("r1", 300, "lease-p1")
    refused = _return(lg, "lease-p1")
    assert refused.rejection.reason is RejectionReason.LEASE_IN_USE
    assert refused.events == ()
    assert lg.account("team").reserved == 400


def test_l6_a_crashed_lease_expires_and_its_spend_is_booked_late() -> None:
    """L5/L6: a dead owner's lease expires; the sweeper's return books its spend as a late debit."""
    lg = Ledger()
    lg.open("team", 1_000)
    _take(lg, "lease-p1", 400)
    lg.place("r1", 300, "lease-p1")
    lg.settle("r1", 120)
    lg.run(decide_expire_due, now_us=T0_US + TTL_US)
    assert lg.state.holds["lease-p1"].status is HoldStatus.EXPIRED
    _return(lg, "lease-p1", now_us=T0_US + TTL_US + 1)
    assert lg.state.holds["lease-p1"].status is HoldStatus.LATE_BOOKED
    assert (lg.account("team").spent, lg.account("team").reserved) == (120, 0)


def test_lease_commands_refuse_unknown_invalid_and_taken_ids() -> None:
    """L9/X1: unknown accounts or leases, invalid amounts and reused ids are typed rejections."""
    lg = Ledger()
    lg.open("team", 1_000)
    lg.open("taken", 5)
    unknown = lg.run(
        decide_take_lease,
        TakeLease(lease_id="l", account_id="ghost", amount=1, ttl_us=TTL_US),
        now_us=T0_US,
    )
    assert unknown.rejection.reason is RejectionReason.UNKNOWN_ACCOUNT
    invalid = _take(lg, "l", AMOUNT_MAX + 1)
    assert invalid.rejection.reason is RejectionReason.AMOUNT_INVALID
    exists = decide_take_lease(
        lg.state,
        TakeLease(lease_id="taken", account_id="team", amount=1, ttl_us=TTL_US),
        now_us=T0_US,
    )
    assert exists.rejection.reason is RejectionReason.ACCOUNT_EXISTS
    assert _return(lg, "nope").rejection.reason is RejectionReason.UNKNOWN_HOLD
    _take(lg, "l1", 10)
    _return(lg, "l1", command_id="c1")
    again = _return(lg, "l1", command_id="c2")
    assert again.rejection.reason is RejectionReason.ALREADY_RESOLVED


def test_leases_use_the_hot_accounts_unit() -> None:
    """L8: a lease on a token account holds tokens and opens a token lease account."""
    lg = Ledger()
    lg.open("team", 1_000, unit=Unit.TOKENS)
    _take(lg, "l1", 300)
    assert lg.account("l1").unit is Unit.TOKENS
    lg.place("r1", Usage(tokens=200), "l1")
    lg.settle("r1", Usage(tokens=150))
    _return(lg, "l1")
    assert lg.account("team").spent == 150
    assert Usage.of(Unit.REQUESTS, 2) == Usage(requests=2)


@given(
    limit=st.integers(0, 3_000),
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 700)), max_size=30),
)
def test_d4_processes_with_leases_never_overspend(limit: int, steps: list[tuple[int, int]]) -> None:
    """D4: four processes, each leasing and admitting locally, never spend more than the limit."""
    store = Store()
    Ledger(store).open("team", limit)
    processes = [Ledger(store) for _ in range(4)]
    for i, (who, amount) in enumerate(steps):
        process = processes[who]
        process.reload()
        lease_id = f"lease-{who}"
        if lease_id not in process.state.holds:
            _take(process, lease_id, min(amount * 2, limit))
            continue
        decision = process.place(f"r{i}", amount, lease_id)
        if decision.accepted:
            process.settle(f"r{i}", amount)
    final = ledger.fold(store.log)
    spent_locally = sum(
        final.accounts[f"lease-{who}"].spent for who in range(4) if f"lease-{who}" in final.accounts
    )
    team = final.accounts["team"]
    assert spent_locally <= team.reserved <= limit
