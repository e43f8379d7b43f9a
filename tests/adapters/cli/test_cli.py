"""The ``routeledger`` CLI run for real against a store recorded by a real workload."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import orjson
import pytest
from eventsourcing.persistence import StoredEvent

from routeledger.adapters.cli import main as cli
from routeledger.adapters.cli.main import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_STORE,
    EXIT_USAGE,
    main,
    parse_time,
)
from routeledger.adapters.store.canonical import state_hash
from routeledger.adapters.store.eventstore import StoredSnapshot, open_store
from routeledger.adapters.store.snapshots import (
    SNAPSHOT_STREAM,
    SNAPSHOT_TOPIC,
    encode_snapshot,
    save_snapshot,
)
from routeledger.core.fold import fold_log
from tests.backends import sqlite_url
from tests.projections.workload import NO_FALLBACK_TOML, POLICY_TOML, SECRET, T0, build

CONSOLE = Path(sys.executable).with_name("routeledger")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A SQLite store recorded by a 40-request workload, its endings and policy files."""
    directory = tmp_path_factory.mktemp("cli")
    url = sqlite_url(directory)
    with open_store(url) as store:
        endings = build(store, requests=40, seed=7)
        expected_hash = state_hash(fold_log(store.read_all(0)))
        last = store.max_position()
    (directory / "policy.toml").write_text(POLICY_TOML)
    (directory / "strict.toml").write_text(NO_FALLBACK_TOML)
    return {"url": url, "dir": directory, "endings": endings, "hash": expected_hash, "last": last}


@pytest.fixture
def store_copy(recorded: dict[str, object], tmp_path: Path) -> str:
    """A private copy of the recorded SQLite store (for tests that add to it)."""
    source = Path(str(recorded["url"]).removeprefix("sqlite:///"))
    target = tmp_path / "copy.db"
    shutil.copy(source, target)
    return sqlite_url(tmp_path, "copy.db")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_everywhere_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command answers --help with exit 0; the group's help lists the exit codes."""
    code, out, _ = run(capsys, "--help")
    assert (
        code == EXIT_OK
        and "Exit codes: 0 ok, 1 a problem was found, 2 usage error, 3 store error" in out
    )
    for command in (
        "status",
        "budget",
        "audit",
        "explain",
        "replay",
        "what-if",
        "export",
        "fake-provider",
        "demo",
    ):
        code, out, _ = run(capsys, command, "--help")
        assert code == EXIT_OK and "Usage: routeledger" in out, command
        if command not in ("fake-provider", "demo"):
            assert "--store" in out and "--json" in out, command


def test_status_shows_the_availability_board(
    capsys: pytest.CaptureFixture[str], recorded: dict[str, object]
) -> None:
    """A3: status lists every routed pair with its status, deadline, failure class and since-event."""
    at = str(T0 + 30_000_000)
    code, out, _ = run(capsys, "status", "--store", str(recorded["url"]), "--at", at, "--json")
    assert code == EXIT_OK
    board = json.loads(out)
    assert board["position"] == recorded["last"]
    pairs = {(s["credential_id"], s["upstream_model"]): s for s in board["scopes"]}
    assert ("openai-main", "gpt-4.1") in pairs and ("groq", "gpt-oss-120b") in pairs
    cooling = [s for s in board["scopes"] if s["status"] == "cooling"]
    assert cooling and all(
        s["until_us"] > int(at) and s["reason"] and s["since_position"] for s in cooling
    )
    code, out, _ = run(
        capsys, "status", "--store", str(recorded["url"]), "--at", "2026-11-22T14:00:30Z"
    )
    assert (
        code == EXIT_OK and "Availability at 2026-11-22T14:00:30.000Z" in out and "cooling" in out
    )


def test_budget_shows_accounts_and_open_holds(
    capsys: pytest.CaptureFixture[str], recorded: dict[str, object]
) -> None:
    """L1: budget shows the account's limit, spends, reserved = open holds, with their ages."""
    at = T0 + 3_600_000_000
    code, out, _ = run(capsys, "budget", "--store", str(recorded["url"]), "--at", str(at), "--json")
    assert code == EXIT_OK
    (account,) = json.loads(out)["accounts"]
    open_ids = {rid for rid, ending in recorded["endings"].items() if ending == "open"}  # type: ignore[attr-defined]
    assert {h["hold_id"] for h in account["holds"]} == open_ids
    assert account["reserved"] == sum(h["amount"] for h in account["holds"])
    assert all(h["age_us"] == at - h["placed_at_us"] for h in account["holds"])
    code, out, _ = run(capsys, "budget", "--store", str(recorded["url"]))
    assert code == EXIT_OK and "acct-team" in out and "10,000,000" in out


def test_audit_tells_a_requests_story(
    capsys: pytest.CaptureFixture[str], recorded: dict[str, object]
) -> None:
    """I4/E1: audit lists hold, arrival, attempts, skips and failures in order, details scrubbed."""
    endings: dict[str, str] = recorded["endings"]  # type: ignore[assignment]
    failed_then = next(
        rid
        for rid in endings
        if _kinds(capsys, recorded, rid).count("failed") and endings[rid] == "served"
    )
    code, out, _ = run(capsys, "audit", failed_then, "--store", str(recorded["url"]), "--json")
    entries = json.loads(out)["entries"]
    assert code == EXIT_OK
    assert [e["position"] for e in entries] == sorted(e["position"] for e in entries)
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "hold_placed" and kinds[1] == "received" and "attempt" in kinds
    assert kinds.index("failed") < kinds.index("succeeded") < kinds.index("hold_settled")
    assert SECRET not in out
    code, text, _ = run(capsys, "audit", failed_then, "--store", str(recorded["url"]))
    assert code == EXIT_OK and "failed on" in text and "hold settled" in text and SECRET not in text


def _kinds(capsys: pytest.CaptureFixture[str], recorded: dict[str, object], rid: str) -> list[str]:
    main(["audit", rid, "--store", str(recorded["url"]), "--json"])
    out, _ = capsys.readouterr()
    return [e["kind"] for e in json.loads(out)["entries"]]


def test_audit_of_an_exhausted_request_shows_skips_and_the_end(
    capsys: pytest.CaptureFixture[str], recorded: dict[str, object]
) -> None:
    """A7: an exhausted request's audit ends with fallback exhausted and the hold refunded."""
    endings: dict[str, str] = recorded["endings"]  # type: ignore[assignment]
    rid = next(r for r, e in endings.items() if e == "exhausted")
    code, out, _ = run(capsys, "audit", rid, "--store", str(recorded["url"]))
    assert code == EXIT_OK and "fallback exhausted" in out and "hold refunded" in out


def test_unknown_request_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], recorded: dict[str, object]
) -> None:
    """An unknown request id exits 2 and says so."""
    code, out, err = run(capsys, "audit", "req-nope", "--store", str(recorded["url"]))
    assert code == EXIT_USAGE and out == "" and "no request 'req-nope' in the log" in err


def test_explain_lists_each_member_and_why(
    capsys: pytest.CaptureFixture[str], recorded: dict[str, object]
) -> None:
    """A5/A6: explain folds the log up to TIME and says, per chain member, usable or why not."""
    policy = str(Path(str(recorded["dir"])) / "policy.toml")
    at = T0 + 30_000_000
    code, out, _ = run(
        capsys,
        "explain",
        "--at",
        str(at),
        "--policy",
        policy,
        "chat",
        "--store",
        str(recorded["url"]),
        "--json",
    )
    assert code == EXIT_OK
    doc = json.loads(out)
    members = doc["members"]
    assert [(m["credential_id"], m["upstream_model"]) for m in members] == [
        ("openai-main", "gpt-4.1"),
        ("openai-spare", "gpt-4.1"),
        ("openai-main", "gpt-4.1-mini"),
        ("groq", "gpt-oss-120b"),
    ]
    with open_store(str(recorded["url"]), create=False) as store:
        prefix = [r for r in store.read_all(0) if r.event.at_us <= at]
    folded = fold_log(prefix)
    assert doc["position"] == folded.position
    for member in members:
        scope = folded.routing.pairs.get(
            f"pair:{member['credential_id']}:{member['upstream_model']}"
        )
        blocked = scope is not None and scope.ready_us > at
        assert member["usable"] is not blocked
        if blocked:
            assert member["why_not"] and member["until_us"] == scope.until_us  # type: ignore[union-attr]
    code, text, _ = run(
        capsys,
        "explain",
        "--at",
        "2026-11-22T14:00:30Z",
        "--policy",
        policy,
        "chat",
        "--store",
        str(recorded["url"]),
    )
    assert code == EXIT_OK and "routes.cheap.chain[0]" in text


def test_explain_rejects_an_unknown_route(
    capsys: pytest.CaptureFixture[str], recorded: dict[str, object]
) -> None:
    """A route the policy does not define is a usage error."""
    policy = str(Path(str(recorded["dir"])) / "policy.toml")
    code, _, err = run(
        capsys, "explain", "--at", "0", "--policy", policy, "nope", "--store", str(recorded["url"])
    )
    assert code == EXIT_USAGE and "route 'nope'" in err


def test_policy_file_errors_name_line_and_key(
    capsys: pytest.CaptureFixture[str], recorded: dict[str, object], tmp_path: Path
) -> None:
    """A policy file with a wrong value exits 2 naming the file, the line and the key."""
    bad = tmp_path / "bad.toml"
    bad.write_text(POLICY_TOML.replace('provider = "groq"', "provider = 3"))
    for argv in (
        ["explain", "--at", "0", "--policy", str(bad), "chat"],
        ["what-if", "--policy", str(bad)],
    ):
        code, _, err = run(capsys, *argv, "--store", str(recorded["url"]))
        assert code == EXIT_USAGE
        line = POLICY_TOML.splitlines().index('provider = "groq"') + 1
        assert f"bad.toml:{line}" in err and "credentials.groq.provider" in err


def test_bad_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], recorded: dict[str, object]
) -> None:
    """Unknown options and malformed times exit 2."""
    assert run(capsys, "status", "--frobnicate")[0] == EXIT_USAGE
    code, _, err = run(capsys, "status", "--at", "yesterday-ish", "--store", str(recorded["url"]))
    assert code == EXIT_USAGE and "is not engine µs" in err


def test_parse_time_reads_integers_and_iso_8601() -> None:
    """Engine time from µs or ISO 8601 (UTC when no offset)."""
    assert parse_time("123") == 123
    assert parse_time("2026-11-22T14:00:00Z") == T0
    assert parse_time("2026-11-22T15:00:00+01:00") == T0
    assert parse_time("2026-11-22T14:00:00") == T0
    assert cli.format_time(T0) == "2026-11-22T14:00:00.000Z" and cli.format_time(None) == "-"
    assert [cli.format_duration(us) for us in (1_500_000, 200_000_000, 7_300_000_000)] == [
        "1.5s",
        "3m20s",
        "2h01m",
    ]


def test_replay_verify_prints_the_state_hash(
    capsys: pytest.CaptureFixture[str], recorded: dict[str, object]
) -> None:
    """D1/D2: replay --verify re-folds the log, finds no mismatch and prints the canonical hash."""
    code, out, _ = run(capsys, "replay", "--verify", "--store", str(recorded["url"]), "--json")
    doc = json.loads(out)
    assert code == EXIT_OK and doc["ok"] and doc["state_hash"] == recorded["hash"]
    assert doc["events"] == recorded["last"] and set(doc["projections_checked"]) == {
        "timeline",
        "metrics",
    }
    code, out, err = run(capsys, "replay", "--store", str(recorded["url"]), "--progress")
    assert code == EXIT_OK and f"state hash: {recorded['hash']}" in out and "events/s" in err


def test_replay_verify_checks_snapshots(
    capsys: pytest.CaptureFixture[str], store_copy: str
) -> None:
    """D2: good snapshots pass (snapshot + tail == full fold); a tampered one exits 1 naming its position."""
    with open_store(store_copy) as store:
        records = list(store.read_all(0))
        save_snapshot(store, fold_log(records[:100]))
        save_snapshot(store, fold_log(records[: len(records) - 3]))
    code, out, _ = run(capsys, "replay", "--verify", "--store", store_copy, "--json")
    assert code == EXIT_OK and json.loads(out)["snapshots_checked"] == 2
    with open_store(store_copy) as store:
        tampered = fold_log(records[:150])
        tampered.budget.accounts["acct-team"].spent += 1
        save_snapshot(store, tampered)
    code, out, err = run(capsys, "replay", "--verify", "--store", store_copy)
    position = records[149].position
    assert code == EXIT_PROBLEM
    assert f"MISMATCH at position {position}: snapshot" in err
    assert f"first divergent position {position}" in err


def test_replay_verify_reports_a_damaged_snapshot(
    capsys: pytest.CaptureFixture[str], store_copy: str
) -> None:
    """A snapshot whose bytes were damaged is a problem found (exit 1), and foreign formats are ignored."""
    with open_store(store_copy) as store:
        folded = fold_log(list(store.read_all(0))[:20])
        payload = encode_snapshot(folded)
        store.save_snapshot(
            StoredSnapshot(SNAPSHOT_STREAM, folded.position, SNAPSHOT_TOPIC, payload[:-30])
        )
        store.save_snapshot(
            StoredSnapshot(SNAPSHOT_STREAM, folded.position + 1, "routeledger.snapshot/0.x", b"")
        )
    code, out, _ = run(capsys, "replay", "--verify", "--store", store_copy, "--json")
    doc = json.loads(out)
    assert code == EXIT_PROBLEM and doc["snapshots_ignored"] == 1
    assert doc["mismatches"][0]["position"] == folded.position


def test_what_if_compares_policies_side_by_side(
    capsys: pytest.CaptureFixture[str], recorded: dict[str, object]
) -> None:
    """What-if under the recorded policy reproduces what was decided; without the fallback requests end differently."""
    directory = Path(str(recorded["dir"]))
    code, out, _ = run(
        capsys,
        "what-if",
        "--policy",
        str(directory / "policy.toml"),
        "--store",
        str(recorded["url"]),
        "--json",
    )
    same = json.loads(out)
    assert code == EXIT_OK
    for key in ("served", "attempts", "waits", "tokens", "cost_micros"):
        assert same["recorded"][key] == same["what_if"][key], key
    code, out, _ = run(
        capsys,
        "what-if",
        "--policy",
        str(directory / "strict.toml"),
        "--store",
        str(recorded["url"]),
        "--json",
    )
    strict = json.loads(out)
    assert code == EXIT_OK and strict["changed_count"] >= 1
    assert strict["what_if"]["attempts"] != strict["recorded"]["attempts"]
    code, text, _ = run(
        capsys,
        "what-if",
        "--policy",
        str(directory / "strict.toml"),
        "--since",
        "2026-11-22T14:00:30Z",
        "--store",
        str(recorded["url"]),
    )
    assert code == EXIT_OK and "summary:" in text and "exhaustions" in text


def test_export_writes_scrubbed_jsonl(
    recorded: dict[str, object], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """E1: export writes one JSON object per event with its envelope; no secret survives."""
    code = main(["export", "--store", str(recorded["url"])])
    out, _ = capsysbinary.readouterr()
    lines = out.splitlines()
    assert code == EXIT_OK and len(lines) == recorded["last"]
    first = orjson.loads(lines[0])
    assert set(first) == {"position", "tag", "schema", "stream_id", "version", "at_us", "fields"}
    assert first["tag"] == "routeledger.AccountOpened" and first["position"] == 1
    assert SECRET.encode() not in out and b"[REDACTED]" in out


def test_missing_store_file_is_a_store_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A read command on a missing SQLite file exits 3 and creates nothing."""
    path = tmp_path / "absent.db"
    for argv in (["status"], ["budget"], ["audit", "x"], ["replay", "--verify"], ["export"]):
        code, _, err = run(capsys, *argv, "--store", f"sqlite:///{path}")
        assert code == EXIT_STORE and "does not exist" in err, argv
    assert not path.exists()


def test_unreachable_database_is_a_store_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A PostgreSQL URL nobody listens on exits 3 with the password masked."""
    url = "postgresql://u:hunter2secret@127.0.0.1:9/db?connect_timeout=1"
    code, _, err = run(capsys, "status", "--store", url)
    assert code == EXIT_STORE and "hunter2secret" not in err and "cannot open" in err


def test_corrupt_event_is_reported_with_its_position_and_nothing_is_modified(
    capsys: pytest.CaptureFixture[str], store_copy: str
) -> None:
    """A stored event that does not decode exits 3 naming its log position; the store is unchanged."""
    with open_store(store_copy) as store:
        store._events.insert_events(
            [
                StoredEvent(
                    originator_id="request:evil",
                    originator_version=1,
                    topic="routeledger.RequestReceived/1",
                    state=b"\xff{not json",
                )
            ]
        )
        position = store.max_position()
    path = Path(store_copy.removeprefix("sqlite:///"))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for argv in (["replay", "--verify"], ["status"], ["audit", "req-001"], ["export"]):
        code, _, err = run(capsys, *argv, "--store", store_copy)
        assert code == EXIT_STORE, argv
        assert f"log position {position}" in err, argv
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_fake_provider_serves_through_the_module(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fake-provider passes --host and --port to routeledger.adapters.testing.fake_provider.serve."""
    calls: list[dict[str, object]] = []
    module = types.ModuleType("routeledger.adapters.testing.fake_provider")
    module.serve = lambda **kwargs: calls.append(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "routeledger.adapters.testing.fake_provider", module)
    code, _, _ = run(capsys, "fake-provider", "--host", "0.0.0.0", "--port", "9123")
    assert code == EXIT_OK and calls == [{"host": "0.0.0.0", "port": 9123}]


def test_console_script_runs_and_hash_is_stable_across_hash_seeds(
    recorded: dict[str, object],
) -> None:
    """D1: the installed console script prints the same state hash under different PYTHONHASHSEED."""
    hashes = set()
    for seed in ("0", "123"):
        done = subprocess.run(
            [str(CONSOLE), "replay", "--verify", "--json", "--store", str(recorded["url"])],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == EXIT_OK, done.stderr
        hashes.add(json.loads(done.stdout)["state_hash"])
    assert hashes == {recorded["hash"]}
    missing = subprocess.run(
        [str(CONSOLE), "status", "--store", "sqlite:////nonexistent/x.db"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == EXIT_STORE


@pytest.fixture
def empty_url(tmp_path: Path) -> str:
    """An empty SQLite store."""
    url = sqlite_url(tmp_path, "empty.db")
    open_store(url).close()
    return url


def test_an_empty_log_verifies(capsys: pytest.CaptureFixture[str], empty_url: str) -> None:
    """An empty store replays to the fresh state's hash and shows empty boards."""
    code, out, _ = run(capsys, "replay", "--verify", "--store", empty_url, "--json")
    assert code == EXIT_OK and json.loads(out)["events"] == 0
    code, out, _ = run(capsys, "status", "--store", empty_url, "--json")
    assert code == EXIT_OK and json.loads(out)["scopes"] == []


def test_explain_names_lifecycle_credential_blocks_and_probes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """I0/A4: explain says not provisioned, model not resolved, credential suspended, probing, half-open."""
    from routeledger.core.credentials.events import (
        CredentialMetadata,
        CredentialProvisioned,
        ModelsResolved,
    )
    from routeledger.core.routing import events as rev
    from routeledger.core.routing.failures import FailureClass

    meta = CredentialMetadata(
        provider="openai",
        base_url="https://api.example",
        region=None,
        expires_at_us=None,
        validates_model_names=True,
    )
    block = {"request_id": "r", "attempt_id": "a"}
    url = sqlite_url(tmp_path, "explain.db")
    with open_store(url) as store:
        for cred in ("openai-main", "openai-spare"):
            store.append(
                [
                    CredentialProvisioned(
                        stream_id=f"cred:{cred}",
                        version=1,
                        at_us=T0,
                        credential_id=cred,
                        installation_id="gw",
                        metadata=meta,
                    ),
                    ModelsResolved(
                        stream_id=f"cred:{cred}",
                        version=2,
                        at_us=T0,
                        credential_id=cred,
                        models=frozenset({"gpt-4.1"}),
                        roles=(),
                    ),
                ]
            )
        store.append(
            [
                rev.CredentialSuspended(
                    stream_id="cred:openai-spare",
                    version=3,
                    at_us=T0 + 1,
                    credential_id="openai-spare",
                    upstream_model=None,
                    until_us=T0 + 100_000_000,
                    reason=FailureClass.AUTH_ERROR,
                    **block,
                ),
                rev.CooldownStarted(
                    stream_id="pair:openai-main:gpt-4.1",
                    version=1,
                    at_us=T0 + 1,
                    credential_id="openai-main",
                    upstream_model="gpt-4.1",
                    until_us=T0 + 5_000_000,
                    reason=FailureClass.RATE_LIMITED,
                    level=1,
                    hint_us=None,
                    clamp=rev.Clamp.NO_HINT,
                    **block,
                ),
                rev.ProbeAllowed(
                    stream_id="pair:openai-main:gpt-4.1",
                    version=2,
                    at_us=T0 + 5_000_000,
                    credential_id="openai-main",
                    upstream_model="gpt-4.1",
                    until_us=T0 + 20_000_000,
                    **block,
                ),
            ]
        )
    (tmp_path / "p.toml").write_text(POLICY_TOML)
    policy = str(tmp_path / "p.toml")

    def members(at: int) -> dict[tuple[str, str], dict[str, object]]:
        code, out, _ = run(
            capsys, "explain", "--at", str(at), "--policy", policy, "chat", "--store", url, "--json"
        )
        assert code == EXIT_OK
        return {(m["credential_id"], m["upstream_model"]): m for m in json.loads(out)["members"]}

    early = members(T0 + 10_000_000)
    assert early[("openai-main", "gpt-4.1")]["status"] == "probing"
    assert early[("openai-main", "gpt-4.1")]["why_not"] == "probe_in_flight"
    assert early[("openai-spare", "gpt-4.1")]["why_not"] == "credential suspended (auth_error)"
    assert early[("openai-main", "gpt-4.1-mini")]["why_not"] == "model_not_resolved"
    assert early[("groq", "gpt-oss-120b")]["why_not"] == "not_provisioned"
    late = members(T0 + 30_000_000)
    assert (
        late[("openai-main", "gpt-4.1")]["status"] == "half_open"
        and late[("openai-main", "gpt-4.1")]["usable"]
    )
    code, text, _ = run(
        capsys, "explain", "--at", str(T0 + 10_000_000), "--policy", policy, "chat", "--store", url
    )
    assert code == EXIT_OK and "credential suspended" in text
