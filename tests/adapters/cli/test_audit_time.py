"""``routeledger audit`` shows time: TTFT and duration, announced limits, and what blocked a skip.

The store is recorded by the Executor over loopback against the fake provider
(engine time from a fake clock), then read by the CLI like an operator would.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from routeledger.adapters.cli import main as cli
from routeledger.adapters.cli.main import EXIT_OK, main
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.http.executor import Executor
from routeledger.adapters.testing.clock import FakeClock, counter_ids
from routeledger.adapters.testing.fake_provider import FakeProvider
from tests.adapters.http.test_executor import KEYS, config_text
from tests.backends import sqlite_url

#: The primary: a 200 announcing no requests left for 2 s, then a 429 (Retry-After 1), then ok.
PRIMARY = [
    {
        "kind": "ok",
        "headers": {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"},
    },
    "rate_limited:1",
    "ok",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store of four requests: req-1 predicts the primary exhausted, req-2 skips it,
    req-3 gets a 429 on it (cooldown), req-4 skips it while it cools."""
    url = sqlite_url(tmp_path_factory.mktemp("audit-time"))
    with pytest.MonkeyPatch.context() as patch, FakeProvider({}) as fake:
        for name, value in KEYS.items():
            patch.setenv(name, value)
        fake.set_scripts({"primary-model": PRIMARY, "spare-model": "ok"})
        clock = FakeClock()
        text = config_text(fake.base_url, "primary-model", "spare-model")
        engine = Engine.open(url, parse_config(text), clock=clock, ids=counter_ids())
        try:
            asyncio.run(_requests(engine, clock))
        finally:
            engine.close()
        assert [a.status for a in fake.attempts()] == [200, 200, 429, 200, 200]
    return url


async def _requests(engine: Engine, clock: FakeClock) -> None:
    """req-1 and req-2 at once; req-3 and req-4 once the announced reset has passed."""
    executor = Executor(engine)
    try:
        for step in range(4):
            if step == 2:
                clock.now += 2_000_000
            await executor.chat(
                {"messages": [{"role": "user", "content": "hi"}]},
                route="chat",
                caller_scope="u",
                accounts=("team",),
            )
    finally:
        await executor.aclose()


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables printed to a pipe are wide enough that no audit line wraps."""
    monkeypatch.setattr(cli, "TABLE_WIDTH_PIPE", 1_000)


def _audit(capsys: pytest.CaptureFixture[str], store: str, rid: str) -> list[dict[str, Any]]:
    """The request's timeline entries, as ``audit --json`` prints them."""
    assert main(["audit", rid, "--store", store, "--json"]) == EXIT_OK
    return list(json.loads(capsys.readouterr().out)["entries"])


def test_audit_shows_each_attempts_ttft_duration_and_announced_limits(
    capsys: pytest.CaptureFixture[str], store: str
) -> None:
    """The outcome entry carries TTFT <= duration and what the provider announced; text says so."""
    entries = _audit(capsys, store, "req-1")
    (succeeded,) = [e["details"] for e in entries if e["kind"] == "succeeded"]
    assert 0 <= succeeded["ttft_us"] <= succeeded["duration_us"]
    assert succeeded["remaining_requests"] == 0 and succeeded["requests_reset_us"] == 2_000_000
    (predicted,) = [e["details"] for e in entries if e["kind"] == "predicted"]
    assert predicted["event"] == "ExhaustionPredicted" and predicted["remaining_requests"] == 0
    assert main(["audit", "req-1", "--store", store]) == EXIT_OK
    text = capsys.readouterr().out
    assert "first token after" in text and "took" in text
    assert "announced 0 requests left (reset in 2 s)" in text
    failed = _audit(capsys, store, "req-3")
    (failure,) = [e["details"] for e in failed if e["kind"] == "failed"]
    assert failure["status"] == 429 and failure["duration_us"] is not None
    assert failure["ttft_us"] is None  # no token ever came


@pytest.mark.parametrize(
    ("rid", "reason", "blocker", "cause", "by"),
    [
        ("req-2", "predicted_exhausted", "ExhaustionPredicted", None, "req-1"),
        ("req-4", "cooling_down", "CooldownStarted", "rate_limited", "req-3"),
    ],
)
def test_a_skip_names_the_event_that_blocked_the_pair_and_the_request_that_caused_it(
    capsys: pytest.CaptureFixture[str],
    store: str,
    rid: str,
    reason: str,
    blocker: str,
    cause: str | None,
    by: str,
) -> None:
    """A skipped pair's entry points at its blocking event in the log: its class and request."""
    (skip,) = [e["details"] for e in _audit(capsys, store, rid) if e["kind"] == "skipped"]
    assert (skip["credential_id"], skip["reason"]) == ("primary", reason)
    assert (skip["blocked_by"], skip["blocked_by_reason"], skip["blocked_by_request"]) == (
        blocker,
        cause,
        by,
    )
    blocking = [
        e for e in _audit(capsys, store, by) if e["position"] == skip["blocked_by_position"]
    ]
    assert [e["details"]["event"] for e in blocking] == [blocker]
    assert main(["audit", rid, "--store", store]) == EXIT_OK
    text = capsys.readouterr().out
    assert f"[{blocker} at position {skip['blocked_by_position']}" in text
    assert f"by request {by}]" in text


def test_the_docs_show_the_audit_of_a_skip_with_its_cause() -> None:
    """docs/cli.md documents the timing and blocked-by parts of an audit line."""
    text = (Path(__file__).parents[3] / "docs" / "cli.md").read_text()
    assert "first token after" in text and "blocked_by_request" in text


def test_explain_says_a_pair_predicted_exhausted_is_skipped_until_its_reset(
    capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path
) -> None:
    """Between req-1's announcement and its reset, explain gives the primary's why and until."""
    policy = tmp_path / "gw.toml"
    policy.write_text(config_text("http://127.0.0.1:9/v1", "primary-model", "spare-model"))
    start = FakeClock().now
    argv = ["explain", "--at", str(start + 1_000_000), "--policy", str(policy), "chat"]
    assert main([*argv, "--store", store, "--json"]) == EXIT_OK
    members = {m["credential_id"]: m for m in json.loads(capsys.readouterr().out)["members"]}
    assert members["primary"]["why_not"] == "predicted_exhausted"
    assert members["primary"]["until_us"] == start + 2_000_000
    assert members["spare"]["why_not"] is None
