"""D4: processes deciding from the same stale state cannot overspend; the store's check decides."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routeledger.core.budget import ledger
from routeledger.core.budget.decide import Decision, PlaceHold, decide_place_hold

from ._support import T0_US, TTL_US, Conflict, Ledger, Store, micros


def _place(
    state: ledger.LedgerState, hold_id: str, amount: int, accounts: tuple[str, ...]
) -> Decision:
    return decide_place_hold(
        state,
        PlaceHold(hold_id=hold_id, account_ids=accounts, estimate=micros(amount), ttl_us=TTL_US),
        now_us=T0_US,
    )


def test_d4_two_processes_racing_for_the_last_budget_one_conflicts() -> None:
    """D4: two processes both admit the last 600 from a stale state; only one batch is appended."""
    store = Store()
    setup = Ledger(store)
    setup.open("team", 1_000)
    setup.place("h0", 400, "team")
    p1, p2 = Ledger(store), Ledger(store)
    d1 = _place(p1.state, "h1", 600, ("team",))
    d2 = _place(p2.state, "h2", 600, ("team",))
    assert d1.accepted and d2.accepted  # each alone would fit
    store.append(d1.events)
    try:
        store.append(d2.events)
        raise AssertionError("the second batch must conflict on account:team")
    except Conflict:
        pass
    p2.reload()
    retry = _place(p2.state, "h2", 600, ("team",))
    assert retry.rejection is not None  # the loser re-decides and is refused
    assert ledger.fold(store.log).accounts["team"].reserved == 1_000


@given(
    limit=st.integers(0, 2_000),
    requests=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 800), st.booleans()), min_size=1, max_size=24
    ),
)
def test_d4_n_processes_never_overspend(limit: int, requests: list[tuple[int, int, bool]]) -> None:
    """D4: with N processes deciding from stale states and retrying on conflict, reserved <= limit."""
    store = Store()
    Ledger(store).open("team", limit)
    Ledger(store).open("key", limit * 2)
    processes = [Ledger(store) for _ in range(5)]
    admitted = 0
    for i, (who, amount, with_key) in enumerate(requests):
        process = processes[who]
        accounts = ("team", "key") if with_key else ("team",)
        for _attempt in range(len(processes) + 1):
            decision = _place(process.state, f"h{i}", amount, accounts)
            try:
                store.append(decision.events)
            except Conflict:
                process.reload()  # stale: reload and re-decide
                continue
            ledger.fold(decision.events, process.state)
            admitted += amount if decision.accepted else 0
            break
        else:
            raise AssertionError("a reloaded process must win its retry")
    final = ledger.fold(store.log)
    ledger.check_invariants(final)
    team = final.accounts["team"]
    assert team.reserved == admitted <= limit
    assert final.accounts["key"].reserved <= team.reserved
