"""``routeledger admin``: operator commands from the command line, recorded with actor and
reason, idempotent by --command-id, and seen by the next request the gateway routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routeledger.adapters.cli.admin import parse_duration
from routeledger.adapters.cli.main import EXIT_OK, EXIT_STORE, EXIT_USAGE, main
from routeledger.adapters.engine.engine import Engine
from routeledger.core.operator import OperatorActed
from routeledger.core.routing import FailureClass
from tests.adapters.engine.test_engine import CONFIG


def _serve(url: str, config: Path, fail_on: str | None = None) -> list[str]:
    """One request on the wall clock; credential ``fail_on`` answers 401. The path taken."""
    path = []
    with (
        Engine.open(url, config, maintenance=False) as engine,
        engine.request(route="chat", caller_scope="u", accounts=("team",)) as req,
    ):
        for attempt in req.sync_attempts():
            path.append(attempt.credential_id)
            if attempt.credential_id == fail_on:
                attempt.failed(FailureClass.AUTH_ERROR, status=401)
            else:
                attempt.succeeded(input_tokens=1, output_tokens=1)
    return path


@pytest.fixture
def gateway(tmp_path: Path) -> tuple[str, Path]:
    """A SQLite store where credential a is suspended by a 401, and its config file."""
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    url = f"sqlite:///{tmp_path}/gateway.db"
    assert _serve(url, config, fail_on="a") == ["a", "b"]
    return url, config


def _admin(
    capsys: pytest.CaptureFixture[str], url: str, config: Path, *args: str
) -> tuple[int, str, str]:
    code = main(["admin", args[0], "--store", url, "--config", str(config), *args[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_admin_lift_clears_the_suspension_and_the_next_request_routes_there(
    gateway: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`admin lift --credential a` records who and why; the gateway's next request uses a."""
    url, config = gateway
    assert _serve(url, config) == ["b"]
    code, out, _ = _admin(
        capsys, url, config, "lift", "--credential", "a", "--actor", "alice", "--reason", "fixed"
    )
    assert code == EXIT_OK and "lift_blocks on cred:a: 1 event(s)" in out
    assert _serve(url, config) == ["a"]
    with Engine.open(url, config, maintenance=False) as engine:
        (record,) = [r.event for r in engine.store.read_all() if isinstance(r.event, OperatorActed)]
    assert (record.actor, record.reason, record.target) == ("alice", "fixed", "cred:a")


def test_admin_commands_are_idempotent_by_command_id(
    gateway: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The same --command-id twice records once; the second run says it was a duplicate."""
    url, config = gateway
    args = ("suspend", "--credential", "b", "--model", "m2", "--for", "15m", "--reason", "x")
    first = _admin(capsys, url, config, *args, "--command-id", "op-1", "--json")
    second = _admin(capsys, url, config, *args, "--command-id", "op-1", "--json")
    assert first[0] == second[0] == EXIT_OK
    assert json.loads(first[1])["duplicate"] is False and json.loads(second[1])["duplicate"]
    assert json.loads(second[1])["target"] == "pair:b:m2"
    code, out, _ = _admin(capsys, url, config, "lift", "--all", "--reason", "r", "--json")
    assert code == EXIT_OK and json.loads(out)["effects"] == 2  # cred:a and pair:b:m2


def test_admin_budget_commands_change_the_account(
    gateway: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """set-limit and correct-spend reach the account; a refused one exits 2 naming why."""
    url, config = gateway
    assert _admin(capsys, url, config, "set-limit", "team", "5000", "--reason", "r")[0] == EXIT_OK
    code, _, err = _admin(
        capsys, url, config, "correct-spend", "team", "--delta", "-99999999", "--reason", "r"
    )
    assert code == EXIT_USAGE and "negative" in err
    with Engine.open(url, config, maintenance=False) as engine:
        assert engine.state.budget.accounts["team"].limit == 5000


def test_admin_mistakes_are_usage_or_store_errors_and_record_nothing(
    gateway: tuple[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Unknown credential or flag misuse exits 2, a mistyped store exits 3 and creates nothing."""
    url, config = gateway
    code, _, err = _admin(capsys, url, config, "lift", "--credential", "zz", "--reason", "r")
    assert code == EXIT_USAGE and "'zz'" in err
    assert _admin(capsys, url, config, "lift", "--reason", "r")[0] == EXIT_USAGE
    bad = _admin(
        capsys, url, config, "suspend", "--credential", "a", "--for", "soon", "--reason", "r"
    )
    assert bad[0] == EXIT_USAGE
    typo = f"sqlite:///{tmp_path}/gatway.db"
    assert _admin(capsys, typo, config, "lift", "--all", "--reason", "r")[0] == EXIT_STORE
    assert not (tmp_path / "gatway.db").exists()


def test_durations_read_as_people_write_them() -> None:
    """90s, 15m, 2h, 1d and bare seconds, in microseconds."""
    assert [parse_duration(t) for t in ("90s", "15m", "2h", "1d", "30")] == [
        90_000_000,
        900_000_000,
        7_200_000_000,
        86_400_000_000,
        30_000_000,
    ]


def test_admin_log_lists_what_operators_and_the_file_changed(
    gateway: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`admin log` shows each operator command with actor and reason, and the opened accounts;
    request decisions are not in it."""
    url, config = gateway
    _admin(capsys, url, config, "lift", "--all", "--actor", "bob", "--reason", "after the outage")
    assert main(["admin", "log", "--store", url, "--json"]) == EXIT_OK
    rows = json.loads(capsys.readouterr().out)["events"]
    assert [r["event"] for r in rows] == ["AccountOpened", "OperatorActed", "BlockLifted"]
    acted = rows[1]
    assert (acted["actor"], acted["reason"], acted["action"]) == (
        "bob",
        "after the outage",
        "lift_blocks",
    )
    assert main(["admin", "log", "--store", url]) == EXIT_OK
    assert "OperatorActed" in capsys.readouterr().out
