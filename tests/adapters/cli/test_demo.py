"""The demo runs end to end on a SQLite store and leaves no open hold."""

from __future__ import annotations

from pathlib import Path

from routeledger.adapters.cli.demo import DEMO_REQUESTS, run_demo
from routeledger.adapters.store.eventstore import open_store
from routeledger.core.fold import fold_log


def test_the_demo_serves_its_workload_and_resolves_every_hold(tmp_path: Path) -> None:
    """make demo: every request ends served, exhausted or refused, and no hold stays open (L5)."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    lines: list[str] = []
    run_demo(url, echo=lines.append)
    text = "\n".join(lines)
    assert f"requests: {DEMO_REQUESTS}" in text
    assert "served by" in text
    assert "routeledger audit demo-" in text
    with open_store(url, create=False) as store:
        folded = fold_log(store.read_all())
    assert folded.budget.open_holds == {}
    assert all(account.reserved == 0 for account in folded.budget.accounts.values())
    folded.check_invariants()
