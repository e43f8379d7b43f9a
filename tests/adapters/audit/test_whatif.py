"""What-if models everything that decided: the unchanged configuration reproduces the log.

Workloads are recorded through the public Engine API (``whatif_workload.py``):
interleaved requests, 429s and 503s with fallbacks through cooldowns, budget
refusals, a daily period rolling over on the fake clock, operator suspensions,
lifts, limit changes and hold releases, callers that leave mid-attempt and
processes that die with their hold open until the maintenance step expires it.
"""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.adapters.audit.whatif import what_if
from routeledger.adapters.cli.main import EXIT_OK, main
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.store.eventstore import open_store
from routeledger.core.fold import Recorded
from routeledger.core.routing import events as rev
from tests.adapters.audit.whatif_workload import CONFIG, CONFIG_G6, record
from tests.backends import sqlite_url
from tests.projections.workload import POLICY, build

#: A seed whose log holds every kind of decision the replay must reproduce (checked below).
SEED = 1


@pytest.fixture(autouse=True)
def _quiet_engine(caplog: pytest.LogCaptureFixture) -> None:
    """The workload's engine logs every cooldown and operator command; not needed here."""
    caplog.set_level(logging.CRITICAL, logger="routeledger")


def _what_if(capsys: pytest.CaptureFixture[str], url: str, config: Path) -> dict[str, object]:
    """``routeledger what-if --json`` on ``url`` under ``config``, run as the CLI."""
    code = main(["what-if", "--policy", str(config), "--store", url, "--json"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    report: dict[str, object] = json.loads(out)
    return report


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Recorded], Path]:
    """The workload of :data:`SEED` recorded on SQLite, and its configuration file."""
    directory = tmp_path_factory.mktemp("whatif")
    url = sqlite_url(directory)
    records = record(url, seed=SEED)
    (directory / "gateway.toml").write_text(CONFIG)
    return url, records, directory


def test_the_recorded_workload_holds_every_kind_of_decision(
    recorded: tuple[str, list[Recorded], Path],
) -> None:
    """The workload the next tests replay has refusals, rollovers, expiries, operator blocks and lifts, fallbacks after cooldowns, waits and callers that left."""
    _, records, _ = recorded
    kinds = collections.Counter(type(r.event).__name__ for r in records)
    for kind in (
        "HoldRejected",
        "PeriodRolledOver",
        "HoldExpired",
        "BlockImposed",
        "BlockLifted",
        "LimitChanged",
        "CooldownStarted",
        "WaitDecided",
        "FallbackExhausted",
        "HoldRefunded",
        "LateUsageBooked",
    ):
        assert kinds[kind] > 0, kind
    events = [r.event for r in records]
    assert any(isinstance(e, rev.AttemptRouted) and e.chain_position > 0 for e in events)
    assert any(
        isinstance(e, rev.AttemptFailed) and e.failure.value == "caller_cancelled" for e in events
    )


def test_the_unchanged_configuration_reports_no_difference(
    capsys: pytest.CaptureFixture[str], recorded: tuple[str, list[Recorded], Path]
) -> None:
    """``routeledger what-if`` with the file the workload ran under: 0 differences, every total equal."""
    url, _, directory = recorded
    report = _what_if(capsys, url, directory / "gateway.toml")
    assert report["changed_count"] == 0 and report["changed"] == []
    assert report["recorded"] == report["what_if"]
    assert report["recorded"]["budget_rejected"] > 0  # type: ignore[index]
    code = main(["what-if", "--policy", str(directory / "gateway.toml"), "--store", url])
    text = capsys.readouterr().out
    assert code == EXIT_OK and "summary: 0 of " in text and "budget_rejected" in text


def test_a_lower_limit_reports_budget_rejections_as_such(
    capsys: pytest.CaptureFixture[str],
    recorded: tuple[str, list[Recorded], Path],
    tmp_path: Path,
) -> None:
    """A lower budget limit: requests served in the log are refused by the budget under it, and named so."""
    url, records, _ = recorded
    lower = tmp_path / "lower.toml"
    lower.write_text(CONFIG.replace("limit = 3_000", "limit = 500"))
    report = _what_if(capsys, url, lower)
    before, after = report["recorded"], report["what_if"]
    rejected = sum(1 for r in records if type(r.event).__name__ == "HoldRejected")
    assert before["budget_rejected"] == rejected  # type: ignore[index]
    assert after["budget_rejected"] > before["budget_rejected"]  # type: ignore[index]
    changes = {(c["recorded"], c["what_if"]) for c in report["changed"]}  # type: ignore[attr-defined]
    assert ("served", "budget_rejected") in changes
    assert ("budget_rejected", "unfinished") not in changes
    code = main(["what-if", "--policy", str(lower), "--store", url])
    text = capsys.readouterr().out
    assert code == EXIT_OK and "-> budget_rejected (0 attempts)" in text
    assert "budget rejections +" in text


def test_a_changed_failure_row_still_reports_what_it_changes(
    capsys: pytest.CaptureFixture[str],
    recorded: tuple[str, list[Recorded], Path],
    tmp_path: Path,
) -> None:
    """A 429 that may not fall back: requests the log served through a fallback are exhausted."""
    url, _, _ = recorded
    strict = tmp_path / "strict.toml"
    strict.write_text(CONFIG + "\n[failures.rate_limited]\nfallback = false\n")
    report = _what_if(capsys, url, strict)
    assert report["changed_count"] > 0  # type: ignore[operator]
    changes = {(c["recorded"], c["what_if"]) for c in report["changed"]}  # type: ignore[attr-defined]
    assert ("served", "exhausted") in changes


@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_unchanged_configuration_reproduces_any_engine_workload(seed: int) -> None:
    """For any seeded Engine workload, what-if under the configuration it ran with changes nothing."""
    logging.getLogger("routeledger").setLevel(logging.CRITICAL)
    records = record("memory://", seed=seed, steps=80)
    report = what_if(records, parse_config(CONFIG))
    assert report.changed_count == 0 and report.recorded == report.what_if


@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_unchanged_g6_configuration_reproduces_any_engine_workload(seed: int) -> None:
    """Under G6's routing (least_latency, max_in_flight, rpm) what-if with the configuration the
    workload ran with changes nothing: slots, in-flight counts and latency are re-decided alike."""
    logging.getLogger("routeledger").setLevel(logging.CRITICAL)
    records = record("memory://", seed=seed, steps=80, config=CONFIG_G6)
    kinds = {type(r.event).__name__ for r in records}
    assert {"SlotTaken", "SlotReturned"} <= kinds
    report = what_if(records, parse_config(CONFIG_G6))
    assert report.changed_count == 0 and report.recorded == report.what_if


@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_unchanged_policy_reproduces_any_decider_workload(seed: int) -> None:
    """For any seeded workload of the raw deciders (holds apart from entries), the recorded policy changes nothing."""
    with open_store("memory://") as store:
        build(store, requests=20, seed=seed)
        report = what_if(store.read_all(0), POLICY)
    assert report.changed_count == 0 and report.recorded == report.what_if


def test_every_operator_order_is_read_back_from_its_record() -> None:
    """Each operator order is decided again from its record: the digest names the order exactly."""
    from routeledger.adapters.audit.whatif_log import order_of
    from routeledger.core.operator import (
        ChangeLimit,
        CorrectSpend,
        ImposeBlock,
        LiftBlocks,
        OperatorActed,
        Order,
        ReleaseHold,
    )
    from routeledger.core.operator.decide import _target  # what a record's digest is made of

    orders: list[Order] = [
        LiftBlocks(),
        LiftBlocks(credential_id="a"),
        LiftBlocks(credential_id="a", upstream_model="ft:m1:x"),
        ImposeBlock(credential_id="a", upstream_model=None, duration_us=5_000_000),
        ImposeBlock(credential_id="a", upstream_model="ft:m1:x", duration_us=7),
        ChangeLimit(command_id="-", account_id="team|x", limit=12),
        CorrectSpend(command_id="-", account_id="team", delta=-3, reason="refund"),
        ReleaseHold(hold_id="req-1"),
    ]
    for order in orders:
        action, target, digest = _target(order)
        acted = OperatorActed(
            stream_id="operator:op-1",
            version=1,
            at_us=1,
            command_id="op-1",
            command_digest=digest,
            action=action,
            target=target,
            actor="ops",
            reason="refund",
            effects=0,
        )
        assert order_of(acted) == order, order
