"""``routeledger demo``: the gateway served on a SQLite store, called with the openai SDK.

The demo runs ``routeledger serve`` in its own process against the fake provider
and sends five requests; each outcome is checked in what it prints and in the
log, and the commands it prints next are run.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from routeledger.adapters.cli.demo import CONFIG_NAME, run_demo
from routeledger.adapters.cli.main import EXIT_OK, EXIT_USAGE, main
from routeledger.adapters.engine.config import load_config
from routeledger.adapters.store.eventstore import open_store
from routeledger.core.fold import fold_log

#: ``N. step  req_<32 hex>  outcome``: the line the demo prints for each request.
STEP_LINE = re.compile(r"^(\d)\. (.+?) +(req_[0-9a-f]{32})  (.*)$")
STEPS = ("completion", "stream", "tool call", "fallback", "budget")


def _steps(lines: list[str]) -> dict[str, tuple[str, str]]:
    """Each step's (request id, printed outcome)."""
    found = {}
    for line in lines:
        match = STEP_LINE.match(line)
        if match:
            found[match.group(2)] = (match.group(3), match.group(4))
    return found


def _audit(capsys: pytest.CaptureFixture[str], url: str, request_id: str) -> list[dict[str, Any]]:
    """The request's timeline, through ``routeledger audit --json``."""
    code = main(["audit", request_id, "--store", url, "--json"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    entries: list[dict[str, Any]] = json.loads(out)["entries"]
    return entries


def _kinds(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["kind"] for entry in entries]


def _one(entries: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (details,) = (entry["details"] for entry in entries if entry["kind"] == kind)
    return dict(details)


def _check_printed(lines: list[str]) -> dict[str, tuple[str, str]]:
    """The five outcomes as printed."""
    text = "\n".join(lines)
    steps = _steps(lines)
    assert tuple(steps) == STEPS, text
    assert steps["completion"][1] == "served by primary/ok-model in 1 attempt"
    assert re.search(r"streamed 1\d chunks from ok-model: 'Streamed one word", text)
    assert len([line for line in lines if re.match(r"^     \+\d+\.\d\ds  '", line)]) >= 10
    assert steps["tool call"][1].startswith(
        'tool call get_weather({"city": "Paris", "unit": "celsius"}), finish_reason tool_calls'
    )
    assert steps["fallback"][1] == (
        "served by spare/ok-model in 2 attempts (upstream saw: primary 429, spare 200)"
    )
    assert f"     x-request-id: {steps['fallback'][0]}" in lines
    assert "     x-routeledger-credential: spare" in lines
    assert "     x-routeledger-attempts: 2" in lines
    assert steps["budget"][1].startswith("budget rejected (402 budget_exceeded): a 300 KB prompt")
    assert "the SDK raised openai.APIStatusError: Error code: 402 - Budget demo-team" in text
    assert "stopped: routeledger serve (exit 0)" in lines
    return steps


def _check_logged(capsys: pytest.CaptureFixture[str], url: str, steps: dict[str, Any]) -> None:
    """The five outcomes as the log tells them."""
    for step in ("completion", "stream", "tool call"):
        entries = _audit(capsys, url, steps[step][0])
        assert _kinds(entries).count("attempt") == 1, step
        assert _one(entries, "succeeded")["credential_id"] == "primary", step
        assert "hold_settled" in _kinds(entries), step
    fallback = _audit(capsys, url, steps["fallback"][0])
    failed, succeeded = _one(fallback, "failed"), _one(fallback, "succeeded")
    assert (failed["credential_id"], failed["status"], failed["failure"]) == (
        "primary",
        429,
        "rate_limited",
    )
    assert succeeded["credential_id"] == "spare"
    assert _kinds(fallback).index("failed") < _kinds(fallback).index("succeeded")
    budget = _audit(capsys, url, steps["budget"][0])
    assert _one(budget, "hold_rejected")["rejection"] == "budget_exceeded"
    assert "attempt" not in _kinds(budget)


def _run_next_commands(capsys: pytest.CaptureFixture[str], lines: list[str]) -> None:
    """Every ``routeledger`` command printed for the log runs as printed, with exit 0."""
    commands = [
        shlex.split(line)
        for line in lines
        if re.match(r"^  routeledger (audit|budget|explain|what-if) ", line)
    ]
    assert [c[1] for c in commands] == ["audit", "audit", "budget", "explain", "what-if"]
    for command in commands:
        assert main(command[1:]) == EXIT_OK, command
        out = capsys.readouterr().out
        if command[1] == "explain":  # right after the 429, the primary is cooling
            assert re.search(r"primary .* cooling .* pair cooling \(rate_limited\)", out)
        if command[1] == "what-if":  # the unchanged file reproduces the run, its 402 too
            assert "summary: 0 of 5 requests end differently" in out, out


def _what_if_reproduces_the_store(
    capsys: pytest.CaptureFixture[str], url: str, config: Path
) -> None:
    """What-if over the whole store under the demo's own file: nothing ends differently."""
    assert main(["what-if", "--policy", str(config), "--store", url, "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["changed_count"] == 0 and report["recorded"] == report["what_if"]
    assert report["recorded"]["budget_rejected"] == 2 and report["recorded"]["served"] == 8


def test_the_demo_serves_streams_calls_a_tool_falls_back_and_is_refused_on_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """make demo, twice on one store: the five outcomes printed and in the log, no hold left, and what-if under its file changes nothing."""
    monkeypatch.chdir(tmp_path)  # the printed commands name paths relative to here
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    for _ in range(2):  # a new store, then the store the first run left
        lines: list[str] = []
        outcomes = run_demo(url, echo=lines.append, fake_port=0)
        steps = _check_printed(lines)
        assert [(o.step, o.request_id) for o in outcomes] == [(s, steps[s][0]) for s in STEPS]
        _check_logged(capsys, url, steps)
        _run_next_commands(capsys, lines)
    _what_if_reproduces_the_store(capsys, url, tmp_path / CONFIG_NAME)
    config = load_config(tmp_path / CONFIG_NAME)
    port = config.endpoints["primary"].base_url.split(":")[2].split("/")[0]
    assert f"  routeledger fake-provider --port {port} &" in lines
    assert config.clients["demo"].accounts == ("demo-team",)
    with open_store(url, create=False) as store:
        folded = fold_log(store.read_all())
    assert folded.budget.open_holds == {}
    assert all(account.reserved == 0 for account in folded.budget.accounts.values())
    folded.check_invariants()


def test_the_demo_refuses_a_memory_store(capsys: pytest.CaptureFixture[str]) -> None:
    """``routeledger serve`` runs in its own process: a memory:// store cannot be shared."""
    assert main(["demo", "--store", "memory://"]) == EXIT_USAGE
    assert "cannot share a memory:// store" in capsys.readouterr().err
