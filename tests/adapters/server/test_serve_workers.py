"""Several gateways on one log, driven by the openai SDK from many threads.

``routeledger serve --workers 2`` on one SQLite file, and two ``serve``
processes on one PostgreSQL database (as on two hosts). The command runs as a
user would run it (its own process, its workers spawned by uvicorn); the
upstream is the fake provider on loopback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from routeledger.adapters.store.canonical import context_hashes, state_hash
from routeledger.adapters.store.eventstore import open_store
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.fold import fold_log
from routeledger.projections.budget import BudgetBoard
from tests.adapters.http.test_executor import KEYS
from tests.batches import folded_between_decisions

from .test_server import ADMIN_KEY, MESSAGES, WEB_KEY, server_config

#: The account's limit in micros: at 1 micro per token, about 12 requests'
#: worst-case estimates (~26 micros) and ~20 requests' spend, so most of the 80
#: requests sent are refused and overspending would show.
LIMIT_MICROS = 300
REQUESTS = 80
THREADS = 16


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _serving(config: Path, store_url: str, workers: int) -> Iterator[str]:
    """``routeledger serve`` as a user runs it, in its own process; its root URL."""
    port = _free_port()
    env = {**os.environ, **KEYS, "WEB_CLIENT_KEY": WEB_KEY, "ROUTELEDGER_ADMIN_KEY": ADMIN_KEY}
    command = [
        str(Path(sys.executable).parent / "routeledger"),
        "serve",
        "--config",
        str(config),
        "--store",
        store_url,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=env)
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(root, process)
        yield root
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
            process.kill()
            raise


@pytest.fixture(params=["sqlite-2-workers", "postgresql-2-servers"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    """The gateways' root URLs and their store URL: two workers of one ``serve`` on
    SQLite, or two ``serve`` processes (as on two hosts) on one PostgreSQL."""
    with FakeProvider({"gpt-a": "ok", "gpt-b": "ok", "claude-a": "ok"}) as fake:
        config = tmp_path / "gateway.toml"
        config.write_text(
            server_config(fake.base_url).replace("limit = 1_000_000", f"limit = {LIMIT_MICROS}")
        )
        if request.param.startswith("sqlite"):
            store_url = f"sqlite:///{tmp_path}/serve.db"
            with _serving(config, store_url, workers=2) as root:
                yield [root], store_url
            return
        store_url = str(request.getfixturevalue("postgres_url"))
        with _serving(config, store_url, 1) as one, _serving(config, store_url, 1) as two:
            yield [one, two], store_url


def _wait_ready(root: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "routeledger serve exited"
        try:
            if httpx.get(root + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("routeledger serve did not become ready")


#: Each worker's per-context hashes from its last /admin/state (named when states differ).
CONTEXTS: dict[int, dict[str, str]] = {}


def _states(roots: list[str]) -> dict[int, tuple[int, str]]:
    """Each worker's (position, state hash), asking on fresh connections until both answered."""
    seen: dict[int, tuple[int, str]] = {}
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for n in range(200):
        root = roots[n % len(roots)]
        answer = httpx.get(root + "/admin/state", headers=headers).json()
        seen[answer["pid"]] = (answer["position"], answer["state_hash"])
        CONTEXTS[answer["pid"]] = answer["contexts"]
        if len(seen) == 2:
            break
    return seen


def test_two_workers_never_overspend_leave_no_hold_and_agree_with_the_log(
    served: tuple[list[str], str],
) -> None:
    """80 concurrent SDK requests on a small budget across two workers: the invariants hold."""
    roots, store_url = served
    clients = [
        openai.OpenAI(base_url=root + "/v1", api_key=WEB_KEY, max_retries=0) for root in roots
    ]

    def one(n: int) -> str:
        client = clients[n % len(clients)]
        try:
            client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=16)
        except openai.APIStatusError as error:
            return str(error.status_code)
        return "200"

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(one, range(REQUESTS)))
    assert "200" in outcomes and "402" in outcomes  # served and refused on budget
    assert set(outcomes) <= {"200", "402"}
    with open_store(store_url, create=False) as store:
        records = list(store.read_all())
    for folded in folded_between_decisions(records):
        account = folded.budget.accounts["team"]
        assert account.spent - account.overage + account.reserved <= LIMIT_MICROS
    board = BudgetBoard()
    board.catch_up(records)
    assert board.holds == {} and board.accounts["team"].reserved == 0
    expected = (records[-1].position, state_hash(fold_log(records)))
    states = _states(roots)
    assert len(states) == 2, "both workers answered"
    own = context_hashes(fold_log(records))
    differing = {
        pid: sorted(name for name, digest in parts.items() if own.get(name) != digest)
        for pid, parts in CONTEXTS.items()
    }
    assert set(states.values()) == {expected}, f"parts differing from the log's fold: {differing}"


EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "gateway.toml"


def test_the_documented_example_serves_both_official_sdks_unchanged(tmp_path: Path) -> None:
    """``routeledger serve --config docs/examples/gateway.toml`` (the fake provider at its
    address) answers the openai and anthropic SDKs given only a base URL and a key."""
    with FakeProvider() as fake:  # the default catalogue the example names
        config = tmp_path / "gateway.toml"
        config.write_text(EXAMPLE.read_text().replace("http://127.0.0.1:8089/v1", fake.base_url))
        store_url = f"sqlite:///{tmp_path}/example.db"
        with _serving(config, store_url, workers=1) as root:
            chat = openai.OpenAI(base_url=root + "/v1", api_key=WEB_KEY, max_retries=0)
            answers = [
                chat.chat.completions.with_raw_response.create(
                    model="chat", messages=MESSAGES, max_tokens=16
                )
                for _ in range(2)
            ]
            streamed = chat.chat.completions.create(
                model="chat", messages=MESSAGES, max_tokens=16, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
            claude = anthropic.Anthropic(base_url=root, api_key=WEB_KEY, max_retries=0)
            message = claude.messages.create(model="claude", max_tokens=16, messages=MESSAGES)
            listed = [model.id for model in chat.models.list()]
    served_by = {a.headers["x-routeledger-model"] for a in answers}
    assert served_by == {"ok-model"}  # the round robin's rate-limited member fell back
    assert all(a.parse().choices[0].message.content for a in answers) and text
    assert message.content[0].type == "text" and message.content[0].text
    assert listed == ["chat", "claude"]
