"""``routeledger serve``'s app over loopback HTTP, called by the official SDKs as a gateway's clients.

The upstream is the fake provider; the app is :class:`Gateway` on uvicorn in a
thread; the store is SQLite in the test's directory. Everything on loopback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from routeledger.adapters.engine.config import ConfigError, parse_config
from routeledger.adapters.server import Gateway
from routeledger.adapters.store.eventstore import open_store
from routeledger.adapters.testing.fake_provider import Behaviour, FakeProvider
from routeledger.adapters.testing.fake_provider import key_id as fake_key_id
from routeledger.core.routing import FailureClass
from routeledger.core.routing.events import AttemptFailed
from routeledger.projections.budget import BudgetBoard
from tests.adapters.http.gateway import serve
from tests.adapters.http.test_executor import KEYS, config_text

WEB_KEY = "sk-client-web-0123456789"
OPS_KEY = "sk-client-ops-9876543210"
ADMIN_KEY = "sk-admin-5555555555"
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def server_config(base_url: str) -> str:
    """Route ``chat`` (OpenAI, primary then spare), ``claude`` (Anthropic), ``other``; clients."""
    ops_digest = hashlib.sha256(OPS_KEY.encode()).hexdigest()
    return (
        config_text(base_url, "gpt-a", "gpt-b")
        + f"""
[credentials.claude]
provider = "anthropic"
base_url = "{base_url}"
secret_env = "ROUTELEDGER_SECRET_PRIMARY"
[models.claude-a]
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 1_000_000
max_output_tokens = 64
[routes.claude]
[[routes.claude.chain]]
members = [{{ credential = "claude", model = "claude-a" }}]
[routes.other]
[[routes.other.chain]]
members = [{{ credential = "spare", model = "gpt-b" }}]

[clients.web]
key_env = "WEB_CLIENT_KEY"
caller_scope = "team:web"
accounts = ["team"]
routes = ["chat", "claude"]

[clients.ops]
key_sha256 = "{ops_digest}"

[server]
body_bytes_max = 65_536
admin_key_env = "ROUTELEDGER_ADMIN_KEY"
"""
    )


class World:
    def __init__(self, fake: FakeProvider, root: str, gateway: Gateway, store_url: str) -> None:
        self.fake = fake
        self.root = root
        self.gateway = gateway
        self.store_url = store_url
        self.openai = openai.OpenAI(base_url=root + "/v1", api_key=WEB_KEY, max_retries=0)
        self.anthropic = anthropic.Anthropic(base_url=root, api_key=WEB_KEY, max_retries=0)

    def positions(self) -> int:
        with open_store(self.store_url, create=False) as store:
            return store.max_position()

    def scripts(self, **scripts: Any) -> None:
        self.fake.set_scripts(scripts)


@pytest.fixture
def world(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[World]:
    """The gateway on SQLite before the fake; ``@pytest.mark.config_edit(old, new)`` edits
    its configuration text."""
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WEB_CLIENT_KEY", WEB_KEY)
    monkeypatch.setenv("ROUTELEDGER_ADMIN_KEY", ADMIN_KEY)
    store_url = f"sqlite:///{tmp_path}/serve.db"
    edit = request.node.get_closest_marker("config_edit")
    with FakeProvider({"gpt-a": "ok", "gpt-b": "ok", "claude-a": "ok"}) as fake:
        text = server_config(fake.base_url)
        if edit is not None:
            assert edit.args[0] in text
            text = text.replace(*edit.args)
        gateway = Gateway(parse_config(text), store_url)
        with serve(gateway.app) as base_url:  # type: ignore[arg-type]
            yield World(fake, base_url.removesuffix("/v1"), gateway, store_url)


def test_a_completion_names_its_request_and_the_pair_that_served_it(world: World) -> None:
    """Not streamed: the SDK parses the answer; headers give the request id the log holds."""
    raw = world.openai.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, max_tokens=16
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "The quick brown fox jumps over the lazy dog."
    assert completion.model == "gpt-a"
    request_id = raw.headers["x-request-id"]
    assert raw.headers["x-routeledger-credential"] == "primary"
    assert raw.headers["x-routeledger-model"] == "gpt-a"
    with open_store(world.store_url, create=False) as store:
        assert store.load(f"request:{request_id}")  # what `routeledger audit` reads
    call = world.fake.attempts()[-1]
    assert call.key_id == fake_key_id(KEYS["ROUTELEDGER_SECRET_PRIMARY"])  # never the client's key


def test_a_streamed_tool_call_reaches_the_sdk_as_it_streams(world: World) -> None:
    """Streamed: the SDK's chunks carry the tool call's deltas; the stream ends cleanly."""
    world.scripts(**{"gpt-a": Behaviour(kind="ok", tool_call="get_weather")})
    stream = world.openai.chat.completions.create(
        model="chat", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True, max_tokens=16
    )
    arguments = ""
    finish = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.tool_calls:
            for call in chunk.choices[0].delta.tool_calls:
                arguments += (call.function.arguments or "") if call.function else ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert json.loads(arguments) == {"city": "Paris", "unit": "celsius"}
    assert finish == "tool_calls"


def test_a_rate_limited_primary_falls_back_and_logs_the_cooldown(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A 429 on the primary: the spare serves; the failure is an INFO line, the cooldown a
    WARNING, the request an INFO."""
    world.scripts(**{"gpt-a": Behaviour(kind="rate_limited", retry_after=2), "gpt-b": "ok"})
    with caplog.at_level(logging.INFO, logger="routeledger"):
        raw = world.openai.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, max_tokens=16
        )
    assert raw.headers["x-routeledger-credential"] == "spare"
    assert raw.headers["x-routeledger-attempts"] == "2"
    engine = [r for r in caplog.records if r.name == "routeledger.engine"]
    failed, cooldown = engine[0], engine[1]
    assert failed.levelno == logging.INFO
    assert "attempt failed: primary/gpt-a rate_limited (status 429" in failed.getMessage()
    assert failed.routeledger["failure"] == "rate_limited"  # type: ignore[attr-defined]
    assert cooldown.levelno == logging.WARNING
    assert "cooldown started: primary/gpt-a" in cooldown.getMessage()
    lines = [r for r in caplog.records if r.name == "routeledger.server"]
    fields = lines[-1].routeledger  # type: ignore[attr-defined]
    assert fields["request_id"] == raw.headers["x-request-id"]
    assert fields["result"] == "served" and fields["served_by"] == "spare/gpt-b"
    assert fields["attempts"] == 2 and fields["client"] == "web"
    assert WEB_KEY not in caplog.text and KEYS["ROUTELEDGER_SECRET_PRIMARY"] not in caplog.text


def test_a_bad_or_missing_key_is_a_401_the_sdk_raises_and_nothing_is_recorded(
    world: World,
) -> None:
    """An unknown key, no key, or a key in the wrong header: AuthenticationError, no event."""
    before = world.positions()
    wrong = openai.OpenAI(base_url=world.root + "/v1", api_key="sk-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.chat.completions.create(model="chat", messages=MESSAGES)
    assert refused.value.status_code == 401
    assert isinstance(refused.value.body, dict) and refused.value.body["code"] == "invalid_api_key"
    bare = httpx.post(world.root + "/v1/chat/completions", json={"model": "chat"})
    assert bare.status_code == 401 and "x-request-id" in bare.headers
    wrong_claude = anthropic.Anthropic(base_url=world.root, api_key="sk-nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong_claude.messages.create(model="claude", max_tokens=8, messages=MESSAGES)
    assert world.positions() == before
    assert world.fake.attempts() == []


def test_a_route_the_key_may_not_use_looks_like_one_that_does_not_exist(world: World) -> None:
    """A disallowed route and an unknown one are the same 404 model_not_found."""
    for model in ("other", "no-such-route"):
        with pytest.raises(openai.NotFoundError) as missing:
            world.openai.chat.completions.create(model=model, messages=MESSAGES)
        assert isinstance(missing.value.body, dict)
        assert missing.value.body["code"] == "model_not_found"
    ops = openai.OpenAI(base_url=world.root + "/v1", api_key=OPS_KEY, max_retries=0)
    assert ops.chat.completions.create(model="other", messages=MESSAGES).model == "gpt-b"


def test_models_lists_the_routes_the_key_may_use(world: World) -> None:
    """``GET /v1/models`` in the SDK's list shape: web sees its two routes, ops every route."""
    assert sorted(m.id for m in world.openai.models.list()) == ["chat", "claude"]
    ops = openai.OpenAI(base_url=world.root + "/v1", api_key=OPS_KEY, max_retries=0)
    assert sorted(m.id for m in ops.models.list()) == ["chat", "claude", "other"]


@pytest.mark.parametrize(
    ("content", "status", "param"),
    [
        (b"{not json", 400, "body"),
        (b"[1, 2]", 400, "body"),
        (b'{"model": 7, "messages": []}', 400, "model"),
        (b'{"model": "chat"}', 400, "messages"),
        (
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}',
            400,
            "max_tokens",
        ),
    ],
)
def test_a_body_the_gateway_cannot_send_is_a_400_naming_the_field(
    world: World, content: bytes, status: int, param: str
) -> None:
    """Bad bodies are 400s in OpenAI's shape naming the field; nothing reaches the upstream."""
    response = httpx.post(
        world.root + "/v1/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {WEB_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == status
    assert response.json()["error"]["param"] == param
    assert world.fake.attempts() == []


def test_an_oversized_body_is_a_413_and_is_not_read_to_the_end(world: World) -> None:
    """A body above ``server.body_bytes_max`` is refused with 413 before the engine sees it."""
    before = world.positions()
    big = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "x" * 70_000}]})
    response = httpx.post(
        world.root + "/v1/chat/completions",
        content=big,
        headers={"Authorization": f"Bearer {WEB_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert world.positions() == before


def test_a_client_gone_before_its_body_is_logged_and_records_nothing(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that closes after part of its body leaves one INFO line, no error, no event."""
    before = world.positions()
    host, port = world.root.removeprefix("http://").split(":")
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {WEB_KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    with caplog.at_level(logging.INFO):
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(head.encode() + b'{"model": "ch')
            time.sleep(0.2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "went away" not in caplog.text:
            time.sleep(0.05)
    assert "went away before its request body arrived" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert world.positions() == before


def test_anthropic_messages_through_the_server(world: World) -> None:
    """The anthropic SDK, streamed and not, on the Anthropic route; errors are its own types."""
    message = world.anthropic.messages.create(model="claude", max_tokens=16, messages=MESSAGES)
    assert message.model == "claude-a" and message.content[0].type == "text"
    with world.anthropic.messages.stream(
        model="claude", max_tokens=16, messages=MESSAGES
    ) as stream:
        assert stream.get_final_text() == "The quick brown fox jumps over the lazy dog."
    with pytest.raises(anthropic.NotFoundError):
        world.anthropic.messages.create(model="other", max_tokens=8, messages=MESSAGES)


def test_anthropic_count_tokens_is_answered_by_the_provider_and_recorded_as_a_count(
    world: World,
) -> None:
    """G6: the anthropic SDK's count_tokens on a route is counted by the provider of the pair
    the route would use, recorded as TokensCounted (evidence upstream), and is neither a
    request, nor billed, nor an attempt the provider saw as a message."""
    before = world.positions()
    raw = world.anthropic.messages.with_raw_response.count_tokens(model="claude", messages=MESSAGES)
    counted = raw.parse()
    assert counted.input_tokens > 0
    with open_store(world.store_url, create=False) as store:
        recorded = [r.event for r in store.read_all(before)]
    assert [type(e).__name__ for e in recorded] == ["TokensCounted"]
    (event,) = recorded
    assert (event.upstream_model, event.input_tokens) == ("claude-a", counted.input_tokens)
    assert event.evidence.value == "upstream"
    assert raw.headers["x-request-id"] == event.count_id
    assert world.fake.attempts() == []  # counted, never asked to answer
    with pytest.raises(anthropic.NotFoundError):
        world.anthropic.messages.count_tokens(model="other", messages=MESSAGES)
    with pytest.raises(anthropic.BadRequestError):  # an OpenAI route has no count endpoint
        world.anthropic.messages.count_tokens(model="chat", messages=MESSAGES)
    world.scripts(**{"gpt-a": "ok"})  # claude-a unscripted: the provider's 404 passes back
    with pytest.raises(anthropic.NotFoundError):
        world.anthropic.messages.count_tokens(model="claude", messages=MESSAGES)


def test_a_client_gone_mid_stream_closes_the_upstream_and_resolves_the_hold(
    world: World,
) -> None:
    """The client drops a slow stream after two chunks: the upstream call ends, no hold stays."""
    world.scripts(**{"gpt-a": Behaviour(kind="ok", token_interval=0.2)})
    with httpx.stream(
        "POST",
        world.root + "/v1/chat/completions",
        json={"model": "chat", "messages": MESSAGES, "stream": True, "max_tokens": 16},
        headers={"Authorization": f"Bearer {WEB_KEY}"},
    ) as response:
        lines = response.iter_lines()
        seen = [next(lines) for _ in range(3)]
        assert any(line.startswith("data: ") for line in seen)
    deadline = time.monotonic() + 10
    board = BudgetBoard()
    while time.monotonic() < deadline:
        calls = world.fake.attempts()
        with open_store(world.store_url, create=False) as store:
            board = BudgetBoard()
            board.catch_up(store.read_all())
        if calls and calls[-1].outcome != "in_progress" and not board.holds:
            break
        time.sleep(0.05)
    assert world.fake.attempts()[-1].outcome == "client_gone"
    assert board.holds == {}
    assert board.accounts["team"].reserved == 0


def test_health_readiness_and_metrics(world: World) -> None:
    """healthz and readyz answer; /metrics is Prometheus text with the log's and the server's series."""
    world.openai.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=16)
    assert httpx.get(world.root + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(world.root + "/readyz").json()
    assert ready["status"] == "ready" and ready["position"] > 0
    metrics = httpx.get(world.root + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert (
        'routeledger_server_requests_total{result="served",route="chat",status="200"} 1.0' in text
    )
    assert 'routeledger_attempts_total{credential="primary",model="gpt-a"} 1.0' in text
    assert "routeledger_requests_received_total 1.0" in text
    assert 'routeledger_budget_spent{account="team",unit="micros"}' in text
    assert "routeledger_commit_seconds_count" in text
    assert "routeledger_group_commit_commands_bucket" in text
    assert "routeledger_request_duration_seconds_bucket" in text


def test_the_admin_api_needs_its_key_and_answers_as_the_cli(world: World) -> None:
    """``/admin/status`` and ``/admin/budget``: 401 without the admin key, the CLI's JSON with it."""
    world.openai.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=16)
    assert httpx.get(world.root + "/admin/budget").status_code == 401
    client_key = {"Authorization": f"Bearer {WEB_KEY}"}
    assert httpx.get(world.root + "/admin/budget", headers=client_key).status_code == 401
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    budget = httpx.get(world.root + "/admin/budget", headers=admin).json()
    assert set(budget) == {"at_us", "position", "accounts"}
    assert budget["accounts"][0]["account_id"] == "team"
    assert budget["accounts"][0]["spent"] > 0
    status = httpx.get(world.root + "/admin/status", headers=admin).json()
    assert set(status) == {"at_us", "position", "scopes"}


def test_an_operator_lifts_a_suspension_over_the_admin_api_and_the_next_request_routes_there(
    world: World,
) -> None:
    """A 401 suspends the primary; POST /admin/lift records who and why, and the very next
    request is served by the primary again."""
    world.scripts(**{"gpt-a": "unauthorized", "gpt-b": "ok"})
    raw = world.openai.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, max_tokens=16
    )
    assert raw.headers["x-routeledger-credential"] == "spare"
    world.scripts(**{"gpt-a": "ok", "gpt-b": "ok"})
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body = {"credential": "primary", "actor": "alice", "reason": "key fixed", "command_id": "op-7"}
    lifted = httpx.post(world.root + "/admin/lift", json=body, headers=admin)
    assert lifted.status_code == 200, lifted.text
    assert lifted.json() == {
        "command_id": "op-7",
        "action": "lift_blocks",
        "target": "cred:primary",
        "effects": 1,
        "duplicate": False,
    }
    raw = world.openai.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, max_tokens=16
    )
    assert raw.headers["x-routeledger-credential"] == "primary"
    again = httpx.post(world.root + "/admin/lift", json=body, headers=admin).json()
    assert again["duplicate"] is True


@pytest.mark.parametrize(
    ("command", "body", "status", "says"),
    [
        ("lift", {"actor": "a", "reason": "r"}, 400, "credential: is required"),
        ("suspend", {"credential": "primary", "actor": "a", "reason": "r"}, 400, "duration_s"),
        ("lift", {"credential": "nope", "actor": "a", "reason": "r"}, 404, "'nope'"),
        ("set-limit", {"account": "nope", "limit": 5, "actor": "a", "reason": "r"}, 409, "unknown"),
        ("set-limit", {"account": "team", "limit": "5", "actor": "a", "reason": "r"}, 400, "int"),
        ("reboot", {}, 404, "known: correct-spend"),
    ],
)
def test_a_malformed_admin_command_names_what_was_wrong_and_records_nothing(
    world: World, command: str, body: dict[str, Any], status: int, says: str
) -> None:
    """Admin API mistakes are 400/404/409 in the OpenAI error shape; the log is unchanged."""
    before = world.positions()
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    answer = httpx.post(world.root + f"/admin/{command}", json=body, headers=admin)
    assert answer.status_code == status and says in answer.json()["error"]["message"]
    assert httpx.post(world.root + "/admin/lift", json=body).status_code == 401
    assert world.positions() == before


def test_a_client_key_variable_that_is_not_set_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing ``key_env`` variable is a ConfigError naming it, before anything serves."""
    monkeypatch.delenv("WEB_CLIENT_KEY", raising=False)
    monkeypatch.setenv("ROUTELEDGER_ADMIN_KEY", ADMIN_KEY)
    with pytest.raises(ConfigError, match="WEB_CLIENT_KEY"):
        Gateway(parse_config(server_config("http://127.0.0.1:9")), "memory://")


#: A long streamed answer: 2,400 "words" of 16 KiB (~38 MiB), far more than the
#: loopback socket buffers between the upstream, the gateway and the client hold.
LONG_WORD_CHARS = 16 * 1024
LONG_WORDS = 2_400


@pytest.mark.config_edit("total_us = 3_000_000", "total_us = 60_000_000")
def test_a_slow_client_holds_back_the_upstream_read(world: World) -> None:
    """While the client does not read, the gateway stops reading the upstream: what the
    upstream got out stays a bounded part of the answer, and the client still gets it all."""
    content = " ".join("x" * LONG_WORD_CHARS for _ in range(LONG_WORDS))
    world.scripts(**{"gpt-a": Behaviour(kind="ok", content=content, completion_tokens=50)})
    total = len(content)
    body = {"model": "chat", "messages": MESSAGES, "stream": True, "max_tokens": 8}
    headers = {"Authorization": f"Bearer {WEB_KEY}"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", world.root + "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        raw = r.iter_raw()
        received = len(next(raw))
        time.sleep(1.5)  # the buffers between fill up, then the upstream is held back
        upstream_sent = world.fake.attempts()[-1].bytes_sent
        time.sleep(1.0)  # unthrottled, ~10 MiB more would go out in this second
        upstream_growth = world.fake.attempts()[-1].bytes_sent - upstream_sent
        for part in raw:
            received += len(part)
    assert upstream_sent < total / 2, (upstream_sent, total)
    assert upstream_growth < LONG_WORD_CHARS * 16, upstream_growth
    assert received > total  # every character, in SSE framing
    world.fake.wait_idle()
    assert world.fake.attempts()[-1].outcome == "completed"


@pytest.mark.config_edit(
    "[server]\n",
    "[engine]\nmaintenance_every_us = 20_000\nsnapshot_every_events = 5\n\n[server]\n",
)
def test_serve_runs_the_maintenance_loop_and_owns_its_process(world: World) -> None:
    """routeledger serve runs the maintenance thread (snapshots appear without any request
    taking one) and, owning its process, freezes long-lived objects out of the GC; an app
    embedded in another process does not."""
    import gc

    from routeledger.adapters.store.snapshots import snapshot_versions
    from tests.adapters.engine.test_snapshotting import thaw

    engine = world.gateway.engine
    assert engine is not None and not engine.owns_process  # an app in a test's process
    gc.unfreeze()
    try:
        engine.owns_process = True  # as in a `routeledger serve` worker (app_from_environment)
        for _ in range(3):
            world.openai.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=8)
        deadline = time.monotonic() + 10
        with open_store(world.store_url, create=False) as store:
            while not snapshot_versions(store) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert snapshot_versions(store), "the maintenance loop saved a snapshot"
        while not gc.get_freeze_count() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gc.get_freeze_count() > 0
    finally:
        engine.owns_process = False
        thaw()


@pytest.mark.config_edit(
    "[server]\n",
    '[[classification.rules]]\nfailure = "model_not_supported"\nbody = "deployment \\\\S+ was retired"'
    "\n\n[server]\n",
)
def test_serve_classifies_with_the_configured_rules(world: World) -> None:
    """routeledger serve loads [[classification.rules]]: a 400 only the rule knows falls back."""
    retired = "PIPELINE-7731: deployment dep-42 was retired by the operator"
    world.scripts(**{"gpt-a": Behaviour(kind="error", status=400, message=retired), "gpt-b": "ok"})
    raw = world.openai.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, max_tokens=16
    )
    assert raw.headers["x-routeledger-credential"] == "spare"
    with open_store(world.store_url, create=False) as store:
        failed = [r.event for r in store.read_all() if isinstance(r.event, AttemptFailed)]
    assert [(f.failure, f.status) for f in failed] == [(FailureClass.MODEL_NOT_SUPPORTED, 400)]
