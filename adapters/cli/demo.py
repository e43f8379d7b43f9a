"""The demo: RouteLedger as a new user meets it, ``routeledger serve`` behind the openai SDK.

``make demo`` / ``routeledger demo`` writes a readable gateway configuration
(``routeledger-demo.toml``) beside the demo's SQLite store (``./routeledger.db``
unless ``--store`` says otherwise), starts the scripted fake provider on
loopback as the upstream and ``routeledger serve`` in its own process on that
store and configuration, then calls the gateway with the official openai SDK:
a completion, a stream (its chunks printed as they arrive), a tool call, a
fallback (the primary credential answers 429, the spare serves) and a request
the budget refuses (402). It prints each request's id and outcome, stops the
gateway and the fake provider, and prints the commands to look at the log
(``audit``, ``budget``, ``explain``, ``what-if``) and to serve the
configuration yourself.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import httpx
import openai

from routeledger.adapters.cli.main import Problem, format_time
from routeledger.adapters.store.eventstore import open_store
from routeledger.adapters.store.urls import DEFAULT_STORE_URL, STORE_URL_ENV, parse_store_url
from routeledger.adapters.testing.fake_provider import (
    Behaviour,
    FakeProvider,
    FakeProviderError,
    key_id,
)
from routeledger.core.errors import UsageError
from routeledger.core.routing.state import Status
from routeledger.projections.availability import AvailabilityBoard

if TYPE_CHECKING:  # pragma: no cover
    from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

__all__ = ["Outcome", "run_demo"]

Echo = Callable[[str], None]

#: The configuration file the demo writes, in the store's directory.
CONFIG_NAME: Final = "routeledger-demo.toml"
#: The gateway's log (one line per request, cooldowns), beside it.
LOG_NAME: Final = "routeledger-demo.log"
#: Where the demo's fake provider listens when it can. Why: ``routeledger
#: fake-provider``'s default port, so the printed commands re-create the upstream
#: the configuration names; a busy port falls back to a free one.
FAKE_PORT: Final = 8099
#: The port the printed ``routeledger serve`` command uses (its default).
SERVE_PORT: Final = 4000
#: Seconds ``routeledger serve`` gets to answer ``/readyz``. Why: a cold start
#: imports the server and opens the store in about a second; 60 s covers a slow CI.
READY_TIMEOUT_S: Final = 60.0
#: Longest the demo waits for the primary to leave a cooldown an earlier run left.
#: Why: the demo's own 429 cools it for 1 s (2 s when repeated); a longer block is
#: not the demo's, and the completion is then served by the spare.
PRIMARY_WAIT_MAX_S: Final = 5.0
#: Seconds it gets to stop on SIGINT. Why: its own grace for requests in flight is
#: 30 s (none are in flight by then), plus closing the store.
STOP_TIMEOUT_S: Final = 40.0

ROUTE: Final = "chat"
MODEL: Final = "ok-model"
PRIMARY: Final = "primary"
SPARE: Final = "spare"
CLIENT_KEY: Final = "sk-demo-client"
#: The gateway's environment: the credentials' upstream keys and the client key
#: (the configuration names the variables, never the keys).
KEYS: Final = {
    "ROUTELEDGER_DEMO_PRIMARY_KEY": "sk-demo-primary",
    "ROUTELEDGER_DEMO_SPARE_KEY": "sk-demo-spare",
    "ROUTELEDGER_DEMO_CLIENT_KEY": CLIENT_KEY,
}
PRIMARY_KEY: Final = KEYS["ROUTELEDGER_DEMO_PRIMARY_KEY"]
SPARE_KEY: Final = KEYS["ROUTELEDGER_DEMO_SPARE_KEY"]
#: Output tokens of the demo's requests: a worst case of ~0.5 mUSD each.
MAX_TOKENS: Final = 64
#: Words of the document the refused request asks to summarise. Why: 300 KB is
#: ~75,000 input tokens by the gateway's estimate (4 characters a token), a worst
#: case of ~150,000 micros at $2/Mtok: above the account's whole limit.
BIG_PROMPT_WORDS: Final = 50_000

CONFIG: Final = """\
# The gateway `routeledger demo` ran (docs/server.md, docs/examples/gateway.toml).
# Serve it yourself, with the upstream it names:
#   routeledger fake-provider --port {fake_port} &
#   export {exports}
#   routeledger serve --config {config} --store {store}

[engine]
installation_id = "demo"

# Two credentials (two API keys) of one OpenAI-compatible provider, the fake one.
[credentials.primary]
provider = "openai"
base_url = "{base_url}"
secret_env = "ROUTELEDGER_DEMO_PRIMARY_KEY"

[credentials.spare]
provider = "openai"
base_url = "{base_url}"
secret_env = "ROUTELEDGER_DEMO_SPARE_KEY"

[models.ok-model]
input_micros_per_mtok = 2_000_000    # $2 per million input tokens
output_micros_per_mtok = 8_000_000   # $8 per million output tokens
max_output_tokens = 1_024           # assumed when a request sets no max_tokens

# The client's `model` names a route. `chat` calls primary; when primary fails
# (or is cooling down) the request falls back to the route `spare`.
[routes.chat]
fallback = ["spare"]
[[routes.chat.chain]]
members = [{{ credential = "primary", model = "ok-model" }}]

[routes.spare]
[[routes.spare.chain]]
members = [{{ credential = "spare", model = "ok-model" }}]

# A 429 cools the pair down for 1 s (doubling while it repeats); the request moves on.
[failures.rate_limited]
scope = "pair"
action = "cooldown"
base_us = 1_000_000
factor = 2
max_us = 60_000_000

[limits]
attempts_max = 4
wait_total_us_max = 2_000_000

[timeouts]
connect_us = 2_000_000
first_token_us = 5_000_000
idle_us = 5_000_000
total_us = 30_000_000

# 10 cents a day. Each request holds its worst case (its input tokens, estimated,
# and max_tokens at these prices) until it is settled at its real cost; a request
# whose worst case is above what is left is refused with a 402.
[accounts.demo-team]
scope = "team"
unit = "micros"
limit = 100_000
period = {{ kind = "day", zone = "UTC" }}

[clients.demo]
key_env = "ROUTELEDGER_DEMO_CLIENT_KEY"
caller_scope = "team:demo"
accounts = ["demo-team"]
routes = ["chat"]
"""

WEATHER_TOOL: Final[ChatCompletionToolParam] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        },
    },
}


@dataclass(frozen=True)
class Outcome:
    """One request the demo sent: which step, the gateway's request id, what happened."""

    step: str
    request_id: str
    result: str


@dataclass(frozen=True)
class _Place:
    """Where the demo runs: the store (URL, as printed) and its configuration file."""

    url: str
    store_arg: str
    config: Path
    log: Path


def _place(store_url: str | None) -> _Place:
    """The store the demo writes and, beside it (SQLite) or here, its configuration."""
    parsed = parse_store_url(store_url)
    url = store_url or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    if parsed.backend == "memory":
        raise UsageError(
            "the demo runs routeledger serve in its own process, which cannot share a "
            "memory:// store: give --store sqlite:///demo.db or a postgresql:// URL"
        )
    directory = Path(parsed.path).parent if parsed.backend == "sqlite" else Path()
    directory.mkdir(parents=True, exist_ok=True)
    # A URL with a password is never printed: the commands read it from the environment.
    store_arg = shlex.quote(url) if parsed.masked == url else f'"${STORE_URL_ENV}"'
    return _Place(url, store_arg, directory / CONFIG_NAME, directory / LOG_NAME)


def _shown(path: Path) -> str:
    """``path`` as a command line names it: relative to here when below it."""
    resolved = path.resolve()
    with contextlib.suppress(ValueError):
        return shlex.quote(str(resolved.relative_to(Path.cwd())))
    return shlex.quote(str(resolved))


def _exports() -> str:
    return " ".join(f"{name}={value}" for name, value in KEYS.items())


def _write_config(place: _Place, fake: FakeProvider) -> None:
    place.config.write_text(
        CONFIG.format(
            base_url=fake.base_url,
            fake_port=fake.port,
            exports=_exports(),
            config=_shown(place.config),
            store=place.store_arg,
        ),
        encoding="utf-8",
    )


@contextlib.contextmanager
def _fake_provider(port: int) -> Iterator[FakeProvider]:
    """The fake upstream on loopback, on ``port`` when it is free, else on any port."""
    fake = FakeProvider({MODEL: "ok"}, port=port)
    try:
        fake.start()
    except FakeProviderError:
        fake = FakeProvider({MODEL: "ok"}).start()
    try:
        yield fake
    finally:
        fake.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _serving(place: _Place, echo: Echo) -> Iterator[str]:
    """``routeledger serve`` in its own process, as a user runs it; its root URL once ready."""
    port = _free_port()
    env = {**os.environ, **KEYS, STORE_URL_ENV: place.url}
    command = [sys.executable, "-m", "routeledger.adapters.cli.main", "serve"]
    command += ["--config", str(place.config), "--port", str(port)]
    root = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with place.log.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_ready(root, process, place.log)
            echo(
                f"  gateway   routeledger serve on {root}, ready in "
                f"{time.monotonic() - started:.1f}s (its log: {_shown(place.log)})"
            )
            yield root
        finally:
            code = _stop(process)
    echo(f"stopped: routeledger serve (exit {code})")


def _wait_ready(root: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Problem(f"routeledger serve exited ({process.returncode}): {_tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(root + "/readyz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise Problem(f"routeledger serve was not ready in {READY_TIMEOUT_S:.0f}s: {_tail(log)}")


def _tail(log: Path) -> str:
    lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " | ".join(lines[-5:]) or "(nothing logged)"


def _stop(process: subprocess.Popen[bytes]) -> int:
    """Stop the gateway as Ctrl-C does; kill it if it does not stop in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
        process.kill()
        return process.wait()


def _ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def _served(headers: Mapping[str, str]) -> str:
    attempts = headers.get("x-routeledger-attempts", "?")
    return (
        f"served by {headers.get('x-routeledger-credential')}/{headers.get('x-routeledger-model')}"
        f" in {attempts} attempt{'' if attempts == '1' else 's'}"
    )


def _line(n: int, step: str, request_id: str, result: str) -> str:
    return f"{n}. {step:<11} {request_id}  {result}"


def _completion(client: openai.OpenAI, fake: FakeProvider, echo: Echo) -> Outcome:
    """A plain chat completion: served by the primary."""
    fake.set_scripts({MODEL: Behaviour(content="Hello from the upstream, through RouteLedger.")})
    raw = client.chat.completions.with_raw_response.create(
        model=ROUTE, messages=_ask("Say hello."), max_tokens=MAX_TOKENS
    )
    answer = raw.parse().choices[0].message.content
    outcome = Outcome("completion", raw.headers["x-request-id"], _served(raw.headers))
    echo(_line(1, outcome.step, outcome.request_id, outcome.result))
    echo(f"     answer: {answer!r}")
    return outcome


def _stream(client: openai.OpenAI, fake: FakeProvider, echo: Echo) -> Outcome:
    """A streamed completion: each chunk printed as it arrives."""
    text = "Streamed one word at a time, as the upstream sends it."
    fake.set_scripts({MODEL: Behaviour(content=text, token_interval=0.05)})
    stream = client.chat.completions.create(
        model=ROUTE, messages=_ask("Stream something."), max_tokens=MAX_TOKENS, stream=True
    )
    request_id = stream.response.headers["x-request-id"]
    echo(_line(2, "stream", request_id, "streaming, each chunk as it arrives:"))
    started, pieces = time.monotonic(), []
    with stream:
        for chunk in stream:
            piece = chunk.choices[0].delta.content if chunk.choices else None
            if piece:
                pieces.append(piece)
                echo(f"     +{time.monotonic() - started:.2f}s  {piece!r}")
    model = stream.response.headers.get("x-routeledger-model")
    result = f"streamed {len(pieces)} chunks from {model}: {''.join(pieces)!r}"
    echo(f"     {result}")
    return Outcome("stream", request_id, result)


def _tool_call(client: openai.OpenAI, fake: FakeProvider, echo: Echo) -> Outcome:
    """A completion with tools: the model answers with a call of one of them."""
    fake.set_scripts({MODEL: Behaviour(tool_call="get_weather")})
    raw = client.chat.completions.with_raw_response.create(
        model=ROUTE,
        messages=_ask("What is the weather in Paris?"),
        tools=[WEATHER_TOOL],
        max_tokens=MAX_TOKENS,
    )
    choice = raw.parse().choices[0]
    called = ", ".join(
        f"{call.function.name}({call.function.arguments})"
        for call in choice.message.tool_calls or ()
        if call.type == "function"
    )
    result = f"tool call {called or '(none)'}, finish_reason {choice.finish_reason}, " + _served(
        raw.headers
    )
    echo(_line(3, "tool call", raw.headers["x-request-id"], result))
    return Outcome("tool call", raw.headers["x-request-id"], result)


def _fallback(client: openai.OpenAI, fake: FakeProvider, echo: Echo) -> Outcome:
    """The primary's key is answered 429: the request falls back to the spare credential."""
    fake.set_scripts({MODEL: Behaviour(content="Served by the spare credential.")})
    fake.set_key_scripts({PRIMARY_KEY: "rate_limited"})
    seen = len(fake.attempts())
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=ROUTE, messages=_ask("Say hello again."), max_tokens=MAX_TOKENS
        )
    finally:
        fake.set_key_scripts({})
    raw.parse()
    fake.wait_idle()
    names = {key_id(PRIMARY_KEY): PRIMARY, key_id(SPARE_KEY): SPARE}
    upstream = ", ".join(
        f"{names.get(a.key_id or '', '?')} {a.status}" for a in fake.attempts()[seen:]
    )
    outcome = Outcome("fallback", raw.headers["x-request-id"], _served(raw.headers))
    echo(_line(4, outcome.step, outcome.request_id, f"{outcome.result} (upstream saw: {upstream})"))
    for name in sorted(raw.headers):
        if name == "x-request-id" or name.startswith("x-routeledger-"):
            echo(f"     {name}: {raw.headers[name]}")
    return outcome


def _budget(client: openai.OpenAI, echo: Echo) -> Outcome:
    """A request whose worst case is above the account's limit: the SDK raises the 402."""
    document = "Summarise this report: " + "lorem " * BIG_PROMPT_WORDS
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=ROUTE, messages=_ask(document), max_tokens=MAX_TOKENS
        )
    except openai.APIStatusError as error:
        request_id = error.response.headers.get("x-request-id", "-")
        result = (
            f"budget rejected ({error.status_code} {error.code}): "
            f"a {len(document) // 1000} KB prompt, ~{len(document) // 4:,} tokens"
        )
        echo(_line(5, "budget", request_id, result))
        echo(f"     the SDK raised openai.{type(error).__name__}: {error.message}")
        return Outcome("budget", request_id, result)
    result = f"not rejected: {_served(raw.headers)}"  # the account's limit was raised
    echo(_line(5, "budget", raw.headers["x-request-id"], result))
    return Outcome("budget", raw.headers["x-request-id"], result)


def _now_us() -> int:
    return time.time_ns() // 1_000


def _wait_for_primary(url: str, echo: Echo) -> None:
    """Let a cooldown of the primary left by an earlier run (its 429) run out first."""
    board = AvailabilityBoard()
    with open_store(url, create=False) as store:  # the gateway has opened (created) it
        board.catch_up(store.read_all(0, page=10_000))
    until = max(
        (
            row.until_us or 0
            for row in board.rows(_now_us())
            if row.credential_id == PRIMARY and row.status in (Status.COOLING, Status.SUSPENDED)
        ),
        default=0,
    )
    wait_s = (until - _now_us()) / 1_000_000
    if 0 < wait_s <= PRIMARY_WAIT_MAX_S:
        echo(f"  (the primary is cooling down after an earlier run's 429: {wait_s:.1f}s to wait)")
        time.sleep(wait_s)


def _drive(root: str, url: str, fake: FakeProvider, echo: Echo) -> tuple[list[Outcome], int]:
    """The five requests through the openai SDK; the outcomes and the instant after the fallback."""
    echo(f'  client    openai.OpenAI(base_url="{root}/v1", api_key="{CLIENT_KEY}")')
    _wait_for_primary(url, echo)
    echo("")
    with openai.OpenAI(base_url=root + "/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        outcomes = [
            _completion(client, fake, echo),
            _stream(client, fake, echo),
            _tool_call(client, fake, echo),
            _fallback(client, fake, echo),
        ]
        after_fallback = _now_us()
        outcomes.append(_budget(client, echo))
    return outcomes, after_fallback


def _next(echo: Echo, place: _Place, outcomes: list[Outcome], times: tuple[int, int, int]) -> None:
    """The commands to run next: on the log, then to serve the demo's configuration.

    ``times``: when the run started, the instant after the fallback, the fake's port.
    """
    since, after_fallback, fake_port = times
    by_step = {o.step: o.request_id for o in outcomes}
    store, config = place.store_arg, _shown(place.config)
    echo("")
    echo(f"Next, on the log (every request above is in {store}):")
    if place.store_arg.startswith('"$'):
        echo(f"  (set {STORE_URL_ENV} to the store's URL first)")
    echo(f"  routeledger audit {by_step['fallback']} --store {store}")
    echo(f"  routeledger audit {by_step['budget']} --store {store}")
    echo(f"  routeledger budget --store {store}")
    echo(
        f"  routeledger explain --at {format_time(after_fallback)} --policy {config} "
        f"{ROUTE} --store {store}"
    )
    echo(f"  routeledger what-if --policy {config} --since {format_time(since)} --store {store}")
    echo("  (what-if re-decides this run's requests under a policy: edit a copy of the file first)")
    body = '{"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}'
    echo("Serve the demo gateway yourself:")
    echo(f"  routeledger fake-provider --port {fake_port} &")
    echo(f"  export {_exports()}")
    echo(f"  routeledger serve --config {config} --store {store}")
    echo(
        f"  curl -i http://127.0.0.1:{SERVE_PORT}/v1/chat/completions "
        f"-H 'Authorization: Bearer {CLIENT_KEY}' -H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)}"
    )


def run_demo(
    store_url: str | None, *, echo: Echo = print, fake_port: int = FAKE_PORT
) -> list[Outcome]:
    """Serve the demo gateway on ``store_url``, call it with the openai SDK, print what happened."""
    place = _place(store_url)
    since = _now_us()
    with _fake_provider(fake_port) as fake:
        _write_config(place, fake)
        echo("RouteLedger demo: routeledger serve, called with the official openai SDK")
        echo(
            f"  config    {_shown(place.config)} (route {ROUTE}: {PRIMARY}, falling back to {SPARE})"
        )
        echo(f"  store     {parse_store_url(place.url).masked}")
        echo(f"  upstream  the fake provider on {fake.base_url} (scripted per request below)")
        with _serving(place, echo) as root:
            outcomes, after_fallback = _drive(root, place.url, fake, echo)
        port, calls = fake.port, len(fake.attempts())
    echo(f"stopped: the fake provider ({calls} upstream calls)")
    _next(echo, place, outcomes, (since, after_fallback, port))
    return outcomes
