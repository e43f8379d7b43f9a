"""A fault-injecting, OpenAI-compatible fake provider on loopback (tests and the demo).

The behaviour is scripted per model name (the request's ``model`` field) and,
taking precedence, per API key (``key_scripts``): a :class:`Script` is a sequence
of :class:`Behaviour` steps played one per attempt (the last step repeats),
optionally guarded by an API key, a prefill rejection and a "down" window of the
server's own monotonic time. A request whose last message is an assistant prefix
is answered with the rest of the scripted text after that prefix (a continuation).
Every chat-completion attempt is recorded with timings (:class:`UpstreamCall`) so
tests can check the *conduct* of a client — attempt counts, gaps, no hammering —
not only its outcome.

In-process use::

    with FakeProvider({"m": ["overloaded", "overloaded", "ok"]}) as fake:
        httpx.post(f"{fake.base_url}/chat/completions", json={...})
        assert [a.status for a in fake.attempts()] == [503]

:func:`serve` runs the same server in the foreground (``routeledger fake-provider``)
with :data:`DEFAULT_SCRIPTS`, one model name per behaviour. See
``docs/fake-provider.md``.

Standard library only (``http.server``): it is a test double, not a production
server. It binds loopback addresses only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, TypeAlias

from routeledger.core.errors import UsageError

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_SCRIPTS",
    "KINDS",
    "LISTEN_BACKLOG_CONNECTIONS",
    "Behaviour",
    "FakeProvider",
    "FakeProviderError",
    "Script",
    "ScriptLike",
    "ScriptsLike",
    "UpstreamCall",
    "key_id",
    "parse_key_scripts",
    "parse_script",
    "parse_scripts",
    "serve",
]

#: The content of a successful answer unless a behaviour sets its own.
DEFAULT_CONTENT: Final = "The quick brown fox jumps over the lazy dog."
#: The key the default ``needs-key`` model requires.
DEFAULT_API_KEY: Final = "sk-fake-key"
#: Longest the server holds a connection it does not answer (no response, stall).
DEFAULT_MAX_HOLD: Final = 30.0
#: First-token delay of ``slow_first_token`` when the behaviour does not set one.
DEFAULT_SLOW_DELAY: Final = 1.0
_LOOPBACK: Final = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1"}
_POLL: Final = 0.02
#: Connections the kernel queues for the server before it accepts them (the
#: ``listen()`` backlog). Why: the standard library's 5 makes the kernel drop or reset
#: connections once ~50 clients connect at once; 1024 takes the load tests and
#: benchmarks (256+ concurrent streams) with room, and Linux caps it at
#: ``net.core.somaxconn`` (4096 by default) anyway.
LISTEN_BACKLOG_CONNECTIONS: Final = 1024
#: How a handler waits on its own connection: ``poll`` where the platform has it,
#: because ``select`` fails on descriptors numbered over FD_SETSIZE (1024), which a
#: process with hundreds of connections reaches; ``select`` elsewhere (Windows,
#: where that limit counts sockets, not descriptor numbers).
_SELECTOR: Final[type[selectors.BaseSelector]] = getattr(
    selectors, "PollSelector", selectors.SelectSelector
)

#: Answered with an error status and an OpenAI error body.
_ERROR_KINDS: Final = frozenset(
    {
        "rate_limited",
        "server_error",
        "overloaded",
        "error",
        "context_length",
        "content_filter",
        "model_not_supported",
        "unauthorized",
    }
)
#: Answered 200 with content (streamed or not), possibly with a fault part-way.
_CONTENT_KINDS: Final = frozenset(
    {"ok", "slow_first_token", "cut", "stall", "malformed_chunk", "no_done", "error_event"}
)
#: Every behaviour kind.
KINDS: Final = _ERROR_KINDS | _CONTENT_KINDS | {"reset", "no_response"}

#: The parameter that ``"kind:value"`` shorthand sets, per kind.
_SHORTHAND: Final[dict[str, tuple[str, Callable[[str], Any]]]] = {
    "rate_limited": ("retry_after", float),
    "overloaded": ("retry_after", float),
    "error": ("status", int),
    "slow_first_token": ("first_token_delay", float),
    "ok": ("content", str),
    "cut": ("after_tokens", int),
    "stall": ("after_tokens", int),
    "malformed_chunk": ("after_tokens", int),
    "error_event": ("after_tokens", int),
    "no_response": ("hold", float),
}


class FakeProviderError(UsageError):
    """The fake provider was misused: a non-loopback host, or an invalid script."""


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    """How one attempt is answered. ``kind`` is one of :data:`KINDS`; the other fields
    tune it and are ignored where they do not apply."""

    kind: str = "ok"
    #: Success: the answer text (streamed one word per chunk).
    content: str = DEFAULT_CONTENT
    #: Success: reported usage; ``completion_tokens`` defaults to the number of chunks.
    prompt_tokens: int = 10
    completion_tokens: int | None = None
    finish_reason: str = "stop"
    #: Seconds before the first chunk (before the response when not streaming).
    first_token_delay: float = 0.0
    #: Streaming: seconds before the response headers (the status line).
    headers_delay: float = 0.0
    #: Seconds between content chunks.
    token_interval: float = 0.0
    #: cut / stall / malformed_chunk / error_event: content chunks sent before the fault.
    after_tokens: int = 3
    #: rate_limited / overloaded / error: ``Retry-After`` header in seconds (none if None).
    retry_after: float | None = None
    #: no_response / stall: seconds to hold the connection (capped by the server's max hold).
    hold: float | None = None
    #: error: the status; error kinds: overrides the message of the error body.
    status: int | None = None
    message: str | None = None
    #: Success: answer with a call of this function (streamed as tool-call deltas,
    #: ``finish_reason = "tool_calls"``) instead of text.
    tool_call: str | None = None
    #: The call's arguments (a JSON text), streamed a few characters per chunk.
    tool_arguments: str = '{"city": "Paris", "unit": "celsius"}'
    #: Extra response headers sent with the status line of any answer that has one,
    #: e.g. announced limits (``x-ratelimit-remaining-requests``, ``retry-after-ms``).
    #: A mapping in the JSON forms; kept as ``(name, value)`` pairs.
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        headers = self.headers
        if isinstance(headers, Mapping):
            headers = tuple(headers.items())
        if not all(
            isinstance(pair, tuple | list)
            and len(pair) == 2
            and all(
                isinstance(part, str) and "\n" not in part and "\r" not in part for part in pair
            )
            for pair in headers
        ):
            raise FakeProviderError(f"headers must map names to one-line strings, not {headers!r}")
        object.__setattr__(self, "headers", tuple((str(n), str(v)) for n, v in headers))
        if self.kind not in KINDS:
            raise FakeProviderError(
                f"unknown fake-provider behaviour {self.kind!r}; expected one of {sorted(KINDS)}"
            )
        if self.kind == "error" and (self.status is None or not 400 <= self.status <= 599):
            raise FakeProviderError("behaviour 'error' needs a status between 400 and 599")
        if self.after_tokens < 0:
            raise FakeProviderError("after_tokens must be >= 0")


@dataclass(frozen=True, kw_only=True)
class Script:
    """The behaviour of one model name, or of one API key (see ``key_scripts``).

    Checked in this order for each chat-completion attempt: ``api_key`` (401 when the
    request's bearer key differs), ``reject_prefill`` (400 when the last message has
    role ``assistant``), ``down`` (``down_behaviour`` while the seconds since the
    server's start or last reset are in ``[down[0], down[1])``), then ``steps``:
    the n-th attempt that gets this far is answered by ``steps[n]``, the last step
    repeating forever.
    """

    steps: tuple[Behaviour, ...] = (Behaviour(),)
    api_key: str | None = None
    reject_prefill: bool = False
    down: tuple[float, float] | None = None
    down_behaviour: Behaviour = Behaviour(kind="overloaded")

    def __post_init__(self) -> None:
        if not self.steps:
            raise FakeProviderError("a script needs at least one step")
        if self.down is not None and not 0 <= self.down[0] <= self.down[1]:
            raise FakeProviderError("down must be (from, until) with 0 <= from <= until")


#: A script in any of its forms (see :func:`parse_script`); checked when parsed. A
#: collection rather than Sequence | Mapping so a dict literal mixing the forms types.
ScriptLike: TypeAlias = Script | Behaviour | str | Collection[Any]
ScriptsLike: TypeAlias = Mapping[str, ScriptLike]


@dataclass(frozen=True)
class UpstreamCall:
    """One chat-completion request the fake received, and what it did with it.

    Times are ``time.monotonic()`` values of this process (comparable with the test's
    own clock); ``since_start`` is relative to the server's start or last reset.
    """

    seq: int
    model: str | None
    stream: bool
    received_at: float
    since_start: float
    #: :func:`key_id` of the bearer key (never the key itself), None without one.
    key_id: str | None
    last_role: str | None
    #: The behaviour kind applied, or ``unauthorized`` (key check), ``prefill_rejected``,
    #: ``unknown_model``, ``bad_request`` (body not a JSON object with a model).
    behaviour: str
    #: The index of the script step used (None when a guard answered).
    step: int | None
    #: The HTTP status sent, None when no status line was sent (reset, no response).
    status: int | None
    #: When the first byte (status line) and the first SSE event (streaming) were sent.
    first_byte_at: float | None
    first_chunk_at: float | None
    finished_at: float | None
    bytes_sent: int
    #: SSE ``data:`` events sent (including a malformed one and ``[DONE]``).
    chunks_sent: int
    #: Content chunks sent (streaming), the tokens the client may have seen.
    tokens_sent: int
    #: ``in_progress``, ``completed``, ``cut``, ``reset``, ``stalled``, ``held``
    #: (no response until the hold ended), ``client_gone``, ``stopped``.
    outcome: str
    #: The request body as received (a JSON object), for tests of what was sent.
    body: dict[str, Any] | None = None
    #: The ``anthropic-*`` request headers received (names lower-cased).
    anthropic_headers: dict[str, str] = field(default_factory=dict)
    #: Whose script answered: ``key`` (the request's API key has one), ``model``, or
    #: None (bad request, unknown model).
    scripted_by: str | None = None
    #: Characters of the scripted answer left out because the request's assistant
    #: prefix already holds them (a continuation); 0 when the full answer was sent.
    continued_chars: int = 0

    def to_json(self) -> dict[str, Any]:
        """The attempt as a JSON-ready dict (the ``/_fake/attempts`` entry)."""
        return dataclasses.asdict(self)


def key_id(key: str) -> str:
    """How an API key appears in the attempt log: a short hash, never the key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _behaviour(value: Any) -> Behaviour:
    if isinstance(value, Behaviour):
        return value
    if isinstance(value, str):
        kind, sep, arg = value.partition(":")
        if not sep:
            return Behaviour(kind=kind)
        if kind not in _SHORTHAND:
            raise FakeProviderError(f"behaviour {kind!r} takes no ':' argument ({value!r})")
        name, convert = _SHORTHAND[kind]
        try:
            return Behaviour(kind=kind, **{name: convert(arg)})
        except ValueError as error:
            raise FakeProviderError(f"bad argument in behaviour {value!r}: {error}") from None
    if isinstance(value, Mapping):
        try:
            return Behaviour(**value)
        except TypeError as error:
            raise FakeProviderError(f"bad behaviour {dict(value)!r}: {error}") from None
    raise FakeProviderError(f"a behaviour is a str, a mapping or a Behaviour, not {value!r}")


def parse_script(value: ScriptLike) -> Script:
    """A :class:`Script` from its declarative forms.

    ``"kind"`` or ``"kind:arg"`` (one behaviour, e.g. ``"rate_limited:2"``,
    ``"cut:3"``, ``"error:502"``), a :class:`Behaviour`, a sequence of those
    (steps), or a mapping ``{"steps": [...], "api_key": ..., "reject_prefill": ...,
    "down": [from, until], "down_behaviour": ...}`` (a mapping with ``kind`` is a
    single behaviour).
    """
    if isinstance(value, Script):
        return value
    if isinstance(value, Behaviour | str):
        return Script(steps=(_behaviour(value),))
    if isinstance(value, Mapping):
        if "kind" in value:
            return Script(steps=(_behaviour(value),))
        unknown = set(value) - {"steps", "api_key", "reject_prefill", "down", "down_behaviour"}
        if unknown:
            raise FakeProviderError(f"unknown script keys {sorted(unknown)}")
        steps = value.get("steps", ["ok"])
        if isinstance(steps, (str | Behaviour, Mapping)):
            steps = [steps]
        down = value.get("down")
        if down is not None:
            if not isinstance(down, Sequence) or len(down) != 2:
                raise FakeProviderError(f"down must be [from, until] in seconds, not {down!r}")
            down = (float(down[0]), float(down[1]))
        api_key = value.get("api_key")
        if api_key is not None and not isinstance(api_key, str):
            raise FakeProviderError("api_key must be a string")
        return Script(
            steps=tuple(_behaviour(step) for step in steps),
            api_key=api_key,
            reject_prefill=bool(value.get("reject_prefill", False)),
            down=down,
            down_behaviour=_behaviour(value.get("down_behaviour", "overloaded")),
        )
    if isinstance(value, Sequence):
        return Script(steps=tuple(_behaviour(step) for step in value))
    raise FakeProviderError(f"cannot read a fake-provider script from {value!r}")


def parse_scripts(scripts: ScriptsLike) -> dict[str, Script]:
    """Scripts per model name, each read by :func:`parse_script`."""
    if not isinstance(scripts, Mapping):
        raise FakeProviderError("scripts must map model names to scripts")
    parsed: dict[str, Script] = {}
    for model, value in scripts.items():
        if not isinstance(model, str) or not model:
            raise FakeProviderError(f"model names must be non-empty strings, not {model!r}")
        try:
            parsed[model] = parse_script(value)
        except FakeProviderError as error:
            raise FakeProviderError(f"script for model {model!r}: {error}") from None
    return parsed


def parse_key_scripts(key_scripts: ScriptsLike) -> dict[str, Script]:
    """Scripts per API key, each read by :func:`parse_script`; errors name the
    :func:`key_id`, never the key."""
    if not isinstance(key_scripts, Mapping):
        raise FakeProviderError("key scripts must map API keys to scripts")
    parsed: dict[str, Script] = {}
    for key, value in key_scripts.items():
        if not isinstance(key, str) or not key:
            raise FakeProviderError("API keys of key scripts must be non-empty strings")
        try:
            parsed[key] = parse_script(value)
        except FakeProviderError as error:
            raise FakeProviderError(f"script for key {key_id(key)}: {error}") from None
    return parsed


#: The catalogue :func:`serve` uses by default: one model name per behaviour.
DEFAULT_SCRIPTS: Final[Mapping[str, ScriptLike]] = {
    "ok-model": "ok",
    "slow-first-token": Behaviour(kind="slow_first_token", first_token_delay=2.0),
    "rate-limited": Behaviour(kind="rate_limited", retry_after=2),
    "rate-limited-no-retry-after": "rate_limited",
    "server-error-once": ["server_error", "ok"],
    "overloaded": "overloaded",
    "recovers-after-2": ["overloaded", "overloaded", "ok"],
    "reset-before-headers": "reset",
    "no-response": "no_response",
    "cut-after-3": "cut:3",
    "stall-after-3": "stall:3",
    "malformed-chunk": "malformed_chunk:2",
    "no-done": "no_done",
    "error-event": "error_event:2",
    "context-length": "context_length",
    "content-filter": "content_filter",
    "model-not-supported": "model_not_supported",
    "invalid-key": "unauthorized",
    "needs-key": {"steps": ["ok"], "api_key": DEFAULT_API_KEY},
    "flapping": {"steps": ["ok"], "down": [0, 10]},
    "no-prefill": {"steps": ["ok"], "reject_prefill": True},
}


# --- response bodies ---------------------------------------------------------------


def _error_body(
    message: str, type_: str | None, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error_response(
    behaviour: Behaviour, model: str
) -> tuple[int, list[tuple[str, str]], dict[str, Any]]:
    kind, override = behaviour.kind, behaviour.message
    headers: list[tuple[str, str]] = []
    if behaviour.retry_after is not None:
        headers.append(("Retry-After", f"{behaviour.retry_after:g}"))
    if kind == "rate_limited":
        wait = f"{behaviour.retry_after:g}s" if behaviour.retry_after is not None else "1s"
        message = (
            f"Rate limit reached for {model} in organization org-fake on tokens per min (TPM): "
            f"Limit 30000, Used 30000, Requested 120. Please try again in {wait}."
        )
        return 429, headers, _error_body(override or message, "tokens", None, "rate_limit_exceeded")
    if kind == "server_error":
        message = "The server had an error while processing your request. Sorry about that!"
        return 500, headers, _error_body(override or message, "server_error")
    if kind == "overloaded":
        message = "The server is overloaded or not ready yet."
        return 503, headers, _error_body(override or message, "server_error")
    if kind == "context_length":
        message = (
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9000 tokens. Please reduce the length of the messages."
        )
        body = _error_body(
            override or message, "invalid_request_error", "messages", "context_length_exceeded"
        )
        return 400, headers, body
    if kind == "content_filter":
        message = (
            "The response was filtered due to the prompt triggering Azure OpenAI's content "
            "management policy. Please modify your prompt and retry."
        )
        body = _error_body(override or message, None, "prompt", "content_filter")
        body["error"]["status"] = 400
        body["error"]["innererror"] = {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {"hate": {"filtered": True, "severity": "high"}},
        }
        return 400, headers, body
    if kind == "model_not_supported":
        message = f"The model `{model}` is not supported with this method."
        body = _error_body(
            override or message, "invalid_request_error", "model", "model_not_supported"
        )
        return 400, headers, body
    if kind == "unauthorized":
        return 401, headers, _invalid_key_body(override)
    status = behaviour.status or 500
    message = override or f"Fake provider error {status}."
    type_ = "invalid_request_error" if status < 500 else "server_error"
    return status, headers, _error_body(message, type_)


def _invalid_key_body(message: str | None = None) -> dict[str, Any]:
    return _error_body(
        message
        or "Incorrect API key provided: sk-***. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    )


def _tokens(content: str) -> list[str]:
    return re.findall(r"\s*\S+", content)


def _assistant_prefix(request: Mapping[str, Any]) -> str | None:
    """The text of the request's last message when it is an assistant prefix (a string
    content, or its text blocks joined, in either dialect); None otherwise."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    content = last.get("content")
    if last.get("role") != "assistant":
        return None
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts: list[str] = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            if not isinstance(text, str):
                return None
            parts.append(text)
    return "".join(parts)


def _continued(behaviour: Behaviour, prefix: str | None) -> tuple[Behaviour, int]:
    """The behaviour that goes on after ``prefix``, and the characters it leaves out.

    A text answer that starts with a non-empty ``prefix`` keeps only the rest, so
    prefix + answer is the scripted text; any other answer is sent whole.
    """
    applies = behaviour.kind in _CONTENT_KINDS and behaviour.tool_call is None
    if not applies or not prefix or not behaviour.content.startswith(prefix):
        return behaviour, 0
    return dataclasses.replace(behaviour, content=behaviour.content[len(prefix) :]), len(prefix)


def _usage(behaviour: Behaviour, tokens: list[str]) -> dict[str, int]:
    completion = (
        behaviour.completion_tokens if behaviour.completion_tokens is not None else len(tokens)
    )
    return {
        "prompt_tokens": behaviour.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": behaviour.prompt_tokens + completion,
    }


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


#: Response headers of a streamed answer (chunked server-sent events).
_STREAM_HEADERS: Final = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache"),
    ("Transfer-Encoding", "chunked"),
)


@dataclass(frozen=True)
class _ChunkHead:
    """The fields every chunk of one streamed completion repeats."""

    ident: str
    created: int
    model: str

    def chunk(self, delta: dict[str, Any], include_usage: bool, finish: str | None = None) -> bytes:
        """One ``chat.completion.chunk`` carrying ``delta`` (and ``usage: null`` if asked)."""
        value: dict[str, Any] = {
            "id": self.ident,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            value["usage"] = None
        return _json_bytes(value)

    def usage_chunk(self, usage: dict[str, int]) -> bytes:
        """The final chunk of a stream that asked for usage: no choices, the usage."""
        return _json_bytes(
            {
                "id": self.ident,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": usage,
            }
        )


# --- the server ----------------------------------------------------------------------


@dataclass
class _Record:
    seq: int
    model: str | None
    stream: bool
    received_at: float
    since_start: float
    key_id: str | None
    last_role: str | None
    behaviour: str = "bad_request"
    step: int | None = None
    status: int | None = None
    first_byte_at: float | None = None
    first_chunk_at: float | None = None
    finished_at: float | None = None
    bytes_sent: int = 0
    chunks_sent: int = 0
    tokens_sent: int = 0
    outcome: str = "in_progress"
    body: dict[str, Any] | None = None
    anthropic_headers: dict[str, str] = field(default_factory=dict)
    scripted_by: str | None = None
    continued_chars: int = 0

    def freeze(self) -> UpstreamCall:
        return UpstreamCall(**dataclasses.asdict(self))


@dataclass(frozen=True)
class _Verdict:
    """What answers one attempt: a guard (``unknown``, ``unauthorized``, ``prefill``)
    or a ``behaviour`` of the script of ``scripted_by`` (its step, None in a down window)."""

    kind: str
    scripted_by: str | None = None
    behaviour: Behaviour | None = None
    step: int | None = None


class _State:
    """Scripts, sequence positions and the attempt log, shared by the handler threads.

    A sequence position belongs to one script: ``("model", name)`` or ``("key", key)``.
    """

    def __init__(
        self,
        scripts: dict[str, Script],
        key_scripts: dict[str, Script],
        max_hold: float,
        verbose: bool,
    ) -> None:
        self.lock = threading.Lock()
        self.scripts = scripts
        self.key_scripts = key_scripts
        self.positions: dict[tuple[str, str], int] = {}
        self.records: list[_Record] = []
        self.epoch = time.monotonic()
        self.stopping = threading.Event()
        self.idle = threading.Condition(self.lock)
        self.in_progress = 0
        self.max_hold = max_hold
        self.verbose = verbose

    def reset(self) -> None:
        with self.lock:
            self.records = []
            self.positions = {}
            self.epoch = time.monotonic()

    def set_scripts(self, scripts: dict[str, Script]) -> None:
        with self.lock:
            self.scripts = scripts
            self.positions = {k: v for k, v in self.positions.items() if k[0] != "model"}

    def set_key_scripts(self, key_scripts: dict[str, Script]) -> None:
        with self.lock:
            self.key_scripts = key_scripts
            self.positions = {k: v for k, v in self.positions.items() if k[0] != "key"}

    def begin(self, **fields: Any) -> _Record:
        with self.lock:
            now = time.monotonic()
            record = _Record(
                seq=len(self.records),
                received_at=now,
                since_start=now - self.epoch,
                **fields,
            )
            self.records.append(record)
            self.in_progress += 1
            return record

    def end(self, record: _Record, outcome: str) -> None:
        with self.lock:
            if record.outcome == "in_progress":
                record.outcome = outcome
                record.finished_at = time.monotonic()
                self.in_progress -= 1
                self.idle.notify_all()
        if self.verbose:
            print(
                f"fake-provider: #{record.seq} model={record.model} stream={record.stream} "
                f"{record.behaviour} -> {record.status or '-'} {record.outcome} "
                f"chunks={record.chunks_sent}",
                file=sys.stderr,
                flush=True,
            )

    def choose(self, model: str, key: str | None, last_role: str | None) -> _Verdict:
        """What answers this attempt: the key's script if it has one, else the model's."""
        with self.lock:
            if key is not None and key in self.key_scripts:
                owner, script = ("key", key), self.key_scripts[key]
            elif model in self.scripts:
                owner, script = ("model", model), self.scripts[model]
            else:
                return _Verdict("unknown")
            by = owner[0]
            if script.api_key is not None and key != script.api_key:
                return _Verdict("unauthorized", by)
            if script.reject_prefill and last_role == "assistant":
                return _Verdict("prefill", by)
            if script.down is not None:
                elapsed = time.monotonic() - self.epoch
                if script.down[0] <= elapsed < script.down[1]:
                    return _Verdict("behaviour", by, script.down_behaviour)
            position = self.positions.get(owner, 0)
            self.positions[owner] = position + 1
            index = min(position, len(script.steps) - 1)
            return _Verdict("behaviour", by, script.steps[index], index)


class _Server(ThreadingHTTPServer):
    # One thread per connection, without a cap: a held or stalled connection must
    # not delay any other. Not daemons, so stop() joins them all (block_on_close).
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG_CONNECTIONS

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        #: Connections accepted since the server started.
        self.accepted = 0
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
            self.accepted += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            lingering = list(self.connections)
        for connection in lingering:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished mid-write is a normal event for this server.
        error = sys.exc_info()[1]
        if isinstance(error, OSError | ValueError) or self.state.stopping.is_set():
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Abort(Exception):
    """The connection ended while answering (client gone, server stopping)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "RouteLedgerFakeProvider/1"
    #: ``openai`` (``/v1/chat/completions``) or ``anthropic`` (``/v1/messages``).
    dialect = "openai"
    disable_nagle_algorithm = True
    timeout = 120

    record: _Record | None = None
    #: The scripted behaviour's extra response headers, for the current answer only.
    extra_headers: tuple[tuple[str, str], ...] = ()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def state(self) -> _State:
        return self.server.state

    # --- low-level writes

    def _write(self, data: bytes) -> None:
        if self.state.stopping.is_set():
            raise _Abort("stopped")
        try:
            self.wfile.write(data)
        except OSError:
            raise _Abort("stopped" if self.state.stopping.is_set() else "client_gone") from None
        record = self.record
        if record is not None:
            if record.first_byte_at is None:
                record.first_byte_at = time.monotonic()
            record.bytes_sent += len(data)

    def _head(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        if self.record is not None:
            self.record.status = status
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines.append(f"Server: {self.server_version}")
        lines.append(f"Date: {self.date_time_string()}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        lines.extend(f"{name}: {value}" for name, value in self.extra_headers)
        self._write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _send_json(self, status: int, body: Any, headers: Sequence[tuple[str, str]] = ()) -> None:
        payload = body if isinstance(body, bytes) else _json_bytes(body)
        self._head(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                *headers,
            ],
        )
        self._write(payload)

    def _chunk(self, data: bytes) -> None:
        self._write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _event(self, data: bytes) -> None:
        self._chunk(b"data: " + data + b"\n\n")
        if self.record is not None:
            if self.record.first_chunk_at is None:
                self.record.first_chunk_at = time.monotonic()
            self.record.chunks_sent += 1

    def _hold(self, seconds: float) -> str:
        """Wait up to ``seconds`` (capped by the max hold) without answering:
        ``elapsed``, ``client_gone`` or ``stopped``."""
        deadline = time.monotonic() + min(seconds, self.state.max_hold)
        connection = self.connection
        with _SELECTOR() as selector:
            try:
                selector.register(connection, selectors.EVENT_READ)
            except (OSError, ValueError):
                return "stopped" if self.state.stopping.is_set() else "client_gone"
            while True:
                if self.state.stopping.is_set():
                    return "stopped"
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "elapsed"
                try:
                    readable = bool(selector.select(min(remaining, _POLL)))
                    gone = readable and not connection.recv(1, socket.MSG_PEEK)
                except (OSError, ValueError):
                    gone = True
                if gone:
                    return "stopped" if self.state.stopping.is_set() else "client_gone"
                if readable:  # the client sent more (pipelining): do not spin on it
                    time.sleep(min(remaining, _POLL))

    def _delay(self, seconds: float) -> None:
        if seconds > 0:
            outcome = self._hold(seconds)
            if outcome != "elapsed":
                raise _Abort(outcome)

    def _drop(self, *, reset: bool) -> None:
        """End the connection without finishing the response: FIN, or RST when ``reset``."""
        self.close_connection = True
        try:
            if reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                # rfile holds a reference to the socket: close both so the RST goes now.
                self.rfile.close()
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- routing

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            with self.state.lock:
                names = sorted(self.state.scripts)
            models = [
                {"id": name, "object": "model", "created": 0, "owned_by": "fake-provider"}
                for name in names
            ]
            self._control(200, {"object": "list", "data": models})
        elif path == "/_fake/attempts":
            with self.state.lock:
                attempts = [record.freeze().to_json() for record in self.state.records]
            self._control(200, {"attempts": attempts})
        else:
            self._not_found()

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        body = self._read_body()
        if path == "/v1/chat/completions":
            self._chat(body)
        elif path == "/v1/messages":
            self.dialect = "anthropic"
            self._chat(body)
        elif path == "/v1/messages/count_tokens":
            self._count_tokens(body)
        elif path == "/_fake/reset":
            self.state.reset()
            self._control(200, {"ok": True})
        elif path == "/_fake/script":
            try:
                scripts = parse_scripts(json.loads(body or b"null"))
            except (ValueError, FakeProviderError) as error:
                self._control(400, _error_body(str(error), "invalid_request_error"))
                return
            self.state.set_scripts(scripts)
            self._control(200, {"ok": True, "models": sorted(scripts)})
        elif path == "/_fake/key-script":
            try:
                key_scripts = parse_key_scripts(json.loads(body or b"null"))
            except (ValueError, FakeProviderError) as error:
                self._control(400, _error_body(str(error), "invalid_request_error"))
                return
            self.state.set_key_scripts(key_scripts)
            self._control(200, {"ok": True, "keys": sorted(key_id(k) for k in key_scripts)})
        else:
            self._not_found()

    def _count_tokens(self, body: bytes) -> None:
        """Anthropic's ``count_tokens``: ``{"input_tokens": n}``, a character count / 4 of
        the text of ``system`` and ``messages`` (never an attempt; 400 for a body without
        messages; 404 for an unscripted model, as a real provider would)."""
        try:
            request = json.loads(body or b"null")
        except ValueError:
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            self._control(400, _error_body("messages: field required", "invalid_request_error"))
            return
        with self.state.lock:
            known = request.get("model") in self.state.scripts
        if not known:
            self._control(404, _error_body("model not found", "not_found_error"))
            return
        text = json.dumps([request.get("system"), request["messages"]])
        self._control(200, {"input_tokens": max(1, len(text) // 4)})

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def _control(self, status: int, body: Any) -> None:
        try:
            self._send_json(status, body)
        except _Abort:
            self.close_connection = True

    def _not_found(self) -> None:
        self._control(404, _error_body(f"Unknown path {self.path}", "invalid_request_error"))

    # --- chat completions

    def _chat(self, raw: bytes) -> None:
        try:
            request = json.loads(raw)
        except ValueError:
            request = None
        request = request if isinstance(request, dict) else {}
        model = request.get("model") if isinstance(request.get("model"), str) else None
        stream = request.get("stream") is True
        messages = request.get("messages")
        last_role = None
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            role = messages[-1].get("role")
            last_role = role if isinstance(role, str) else None
        authorization = self.headers.get("Authorization") or ""
        scheme, _, token = authorization.partition(" ")
        key = token.strip() if scheme.lower() == "bearer" and token.strip() else None
        if self.dialect == "anthropic":
            key = self.headers.get("x-api-key") or None
        record = self.state.begin(
            model=model,
            stream=stream,
            key_id=key_id(key) if key is not None else None,
            last_role=last_role,
            body=request,
            anthropic_headers={
                name.lower(): value
                for name, value in self.headers.items()
                if name.lower().startswith("anthropic-")
            },
        )
        self.record = record
        outcome = "completed"
        try:
            outcome = self._answer(request, model, stream, key, last_role, record)
        except _Abort as abort:
            outcome = abort.outcome
            self.close_connection = True
        finally:
            self.record = None
            self.extra_headers = ()
            self.state.end(record, outcome)

    def _answer(
        self,
        request: dict[str, Any],
        model: str | None,
        stream: bool,
        key: str | None,
        last_role: str | None,
        record: _Record,
    ) -> str:
        if model is None:
            record.behaviour = "bad_request"
            message = "The request body must be a JSON object with a string `model`."
            self._send_error(400, _error_body(message, "invalid_request_error", "model"))
            return "completed"
        verdict = self.state.choose(model, key, last_role)
        record.scripted_by = verdict.scripted_by
        if verdict.behaviour is None:
            self._refuse(verdict.kind, model, record)
            return "completed"
        behaviour, record.continued_chars = _continued(
            verdict.behaviour, _assistant_prefix(request)
        )
        record.behaviour, record.step = behaviour.kind, verdict.step
        self.extra_headers = behaviour.headers
        kind = behaviour.kind
        if kind in _ERROR_KINDS:
            self._delay(behaviour.first_token_delay)
            status, headers, body = _error_response(behaviour, model)
            self._send_error(status, body, headers)
            return "completed"
        if kind == "reset":
            self._drop(reset=True)
            return "reset"
        if kind == "no_response":
            outcome = self._hold(behaviour.hold or self.state.max_hold)
            self._drop(reset=False)
            return "held" if outcome == "elapsed" else outcome
        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        if not stream:
            return self._complete(behaviour, model)
        if self.dialect == "anthropic":
            return self._stream_anthropic(behaviour, model, record)
        return self._stream(behaviour, model, include_usage, record)

    def _refuse(self, verdict: str, model: str, record: _Record) -> None:
        """Answer a guard's verdict (``unknown``, ``unauthorized``, ``prefill``)."""
        if verdict == "unknown":
            record.behaviour = "unknown_model"
            message = f"The model `{model}` does not exist or you do not have access to it."
            body = _error_body(message, "invalid_request_error", None, "model_not_found")
            self._send_error(404, body)
        elif verdict == "unauthorized":
            record.behaviour = "unauthorized"
            self._send_error(401, _invalid_key_body())
        else:
            record.behaviour = "prefill_rejected"
            message = (
                "prefill not supported: the last message must not have role 'assistant' "
                "(continuing a partial answer is not available on this target)."
            )
            body = _error_body(
                message, "invalid_request_error", "messages", "prefill_not_supported"
            )
            self._send_error(400, body)

    def _send_error(
        self, status: int, body: dict[str, Any], headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """An error response in this request's dialect (Anthropic: ``{"type": "error"}``)."""
        if self.dialect == "anthropic":
            body = _anthropic_error(status, body)
        self._send_json(status, body, headers)

    def _named_event(self, payload: dict[str, Any]) -> None:
        """One Anthropic SSE event: ``event: <type>`` then its data."""
        self._chunk(b"event: " + str(payload["type"]).encode() + b"\n")
        self._event(_json_bytes(payload))

    def _stream_anthropic(self, behaviour: Behaviour, model: str, record: _Record) -> str:
        """Answer a ``/v1/messages`` call with Anthropic's event stream (text or one tool use)."""
        tool = behaviour.tool_call
        tokens = _tokens(behaviour.content) if tool is None else _pieces(behaviour)
        usage = _usage(behaviour, tokens)
        self._delay(behaviour.headers_delay)
        self._head(200, _STREAM_HEADERS)
        self._delay(self._first_delay(behaviour))
        message: dict[str, Any] = {
            "id": f"msg_fake_{record.seq}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": 1},
        }
        self._named_event({"type": "message_start", "message": message})
        block: dict[str, Any] = {"type": "text", "text": ""}
        if tool is not None:
            block = {"type": "tool_use", "id": "toolu_fake_0", "name": tool, "input": {}}
        self._named_event({"type": "content_block_start", "index": 0, "content_block": block})
        for index in range(len(tokens) + 1):
            if index == behaviour.after_tokens and behaviour.kind != "ok":
                ended = self._interrupt_anthropic(behaviour)
                if ended is not None:
                    return ended
            if index == len(tokens):
                break
            if index > 0:
                self._delay(behaviour.token_interval)
            delta = (
                {"type": "text_delta", "text": tokens[index]}
                if tool is None
                else {"type": "input_json_delta", "partial_json": tokens[index]}
            )
            self._named_event({"type": "content_block_delta", "index": 0, "delta": delta})
            record.tokens_sent += 1
        self._named_event({"type": "content_block_stop", "index": 0})
        stop = "end_turn" if tool is None else "tool_use"
        self._named_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage["completion_tokens"]},
            }
        )
        if behaviour.kind != "no_done":
            self._named_event({"type": "message_stop"})
        self._chunk(b"")
        return "completed"

    def _interrupt_anthropic(self, behaviour: Behaviour) -> str | None:
        """Misbehave where the script says (Anthropic stream); how it ended, or ``None``."""
        if behaviour.kind == "error_event":
            error = {"type": "overloaded_error", "message": behaviour.message or "Overloaded"}
            self._named_event({"type": "error", "error": error})
            self._chunk(b"")
            return "completed"
        return self._interrupt(behaviour, "msg_fake")

    def _first_delay(self, behaviour: Behaviour) -> float:
        if behaviour.kind == "slow_first_token" and behaviour.first_token_delay <= 0:
            return DEFAULT_SLOW_DELAY
        return behaviour.first_token_delay

    def _complete(self, behaviour: Behaviour, model: str) -> str:
        """Answer with one JSON body in this request's dialect; how the connection ended."""
        self._delay(self._first_delay(behaviour))
        seq = self.record.seq if self.record else 0
        if behaviour.kind == "error_event":
            message = "The server had an error while processing your request. Sorry about that!"
            self._send_error(200, _error_body(behaviour.message or message, "server_error"))
            return "completed"
        answer = _anthropic_message if self.dialect == "anthropic" else _openai_completion
        body = _json_bytes(answer(behaviour, model, seq))
        if behaviour.kind == "malformed_chunk":
            self._send_json(200, body[: len(body) // 2])
            return "completed"
        if behaviour.kind in {"cut", "stall"}:
            self._head(
                200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            self._write(body[: len(body) // 2])
            if behaviour.kind == "stall":
                outcome = self._hold(behaviour.hold or self.state.max_hold)
                self._drop(reset=False)
                return "stalled" if outcome == "elapsed" else outcome
            self._drop(reset=False)
            return "cut"
        self._send_json(200, body)
        return "completed"

    def _stream(
        self, behaviour: Behaviour, model: str, include_usage: bool, record: _Record
    ) -> str:
        """Answer with a server-sent event stream; how the connection ended."""
        tokens = _tokens(behaviour.content) if behaviour.tool_call is None else _pieces(behaviour)
        head = _ChunkHead(
            ident=f"chatcmpl-fake-{record.seq}", created=int(time.time()), model=model
        )
        self._delay(behaviour.headers_delay)
        self._head(200, _STREAM_HEADERS)
        self._delay(self._first_delay(behaviour))
        self._event(
            head.chunk({"role": "assistant", "content": "", "refusal": None}, include_usage)
        )
        for index in range(len(tokens) + 1):
            if index == behaviour.after_tokens:
                ended = self._interrupt(behaviour, head.ident)
                if ended is not None:
                    return ended
            if index == len(tokens):
                break
            if index > 0:
                self._delay(behaviour.token_interval)
            self._event(head.chunk(_delta(behaviour, index, tokens[index]), include_usage))
            record.tokens_sent += 1
        finish = behaviour.finish_reason if behaviour.tool_call is None else "tool_calls"
        self._event(head.chunk({}, include_usage, finish))
        if include_usage:
            self._event(head.usage_chunk(_usage(behaviour, tokens)))
        if behaviour.kind != "no_done":
            self._event(b"[DONE]")
        self._chunk(b"")
        return "completed"

    def _interrupt(self, behaviour: Behaviour, ident: str) -> str | None:
        """Misbehave where the script says; how the connection ended, or ``None`` to go on."""
        kind = behaviour.kind
        if kind == "cut":
            self._drop(reset=False)
            return "cut"
        if kind == "stall":
            outcome = self._hold(behaviour.hold or self.state.max_hold)
            self._drop(reset=False)
            return "stalled" if outcome == "elapsed" else outcome
        if kind == "malformed_chunk":
            self._event(b'{"id": "' + ident.encode() + b'", "choices": [{"delta": {"con')
        if kind == "error_event":
            message = behaviour.message or (
                "The server had an error while processing your request. Sorry about that!"
            )
            self._event(_json_bytes(_error_body(message, "server_error")))
            self._chunk(b"")
            return "completed"
        return None


#: Anthropic's error ``type`` for an HTTP status (its API's own names).
_ANTHROPIC_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _reason(status: int) -> str:
    """The status line's reason phrase; Anthropic's 529 is not in ``HTTPStatus``."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Error"


def _anthropic_error(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped error body in Anthropic's shape, the message kept."""
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status < 503 else "overloaded_error")
    return {"type": "error", "error": {"type": kind, "message": message or f"HTTP {status}"}}


def _openai_completion(behaviour: Behaviour, model: str, seq: int) -> dict[str, Any]:
    """The non-streamed answer as an OpenAI ``chat.completion``."""
    finish = behaviour.finish_reason if behaviour.tool_call is None else "tool_calls"
    return {
        "id": f"chatcmpl-fake-{seq}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": _message(behaviour), "logprobs": None, "finish_reason": finish}
        ],
        "usage": _usage(behaviour, _tokens(behaviour.content)),
        "system_fingerprint": "fp_fake",
    }


def _anthropic_message(behaviour: Behaviour, model: str, seq: int) -> dict[str, Any]:
    """The non-streamed answer as an Anthropic ``message`` (text or one tool use)."""
    tool = behaviour.tool_call
    tokens = _tokens(behaviour.content) if tool is None else _pieces(behaviour)
    usage = _usage(behaviour, tokens)
    block: dict[str, Any] = {"type": "text", "text": behaviour.content}
    if tool is not None:
        block = {"type": "tool_use", "id": "toolu_fake_0", "name": tool, "input": _input(behaviour)}
    return {
        "id": f"msg_fake_{seq}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": "end_turn" if tool is None else "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
        },
    }


def _input(behaviour: Behaviour) -> Any:
    """A tool call's arguments parsed (Anthropic's ``input``); ``{}`` when not a JSON object."""
    try:
        value = json.loads(behaviour.tool_arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


#: Characters of a tool call's arguments per streamed chunk (OpenAI sends a few).
_ARGUMENT_CHARS: Final = 6


def _pieces(behaviour: Behaviour) -> list[str]:
    """A tool call's arguments in the pieces the stream sends them in."""
    text = behaviour.tool_arguments
    return [text[i : i + _ARGUMENT_CHARS] for i in range(0, len(text), _ARGUMENT_CHARS)] or [""]


def _delta(behaviour: Behaviour, index: int, piece: str) -> dict[str, Any]:
    """The delta of the ``index``-th content chunk: text, or a piece of a tool call."""
    if behaviour.tool_call is None:
        return {"content": piece}
    call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
    if index == 0:
        call.update(id="call_fake_0", type="function")
        call["function"]["name"] = behaviour.tool_call
    return {"tool_calls": [call]}


def _message(behaviour: Behaviour) -> dict[str, Any]:
    """The non-streamed answer's message: text, or the tool call."""
    if behaviour.tool_call is None:
        return {"role": "assistant", "content": behaviour.content, "refusal": None}
    call = {
        "id": "call_fake_0",
        "type": "function",
        "function": {"name": behaviour.tool_call, "arguments": behaviour.tool_arguments},
    }
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}


# --- public entry points -------------------------------------------------------------


def _loopback(host: str) -> str:
    address = _LOOPBACK.get(host)
    if address is None:
        raise FakeProviderError(
            f"the fake provider binds loopback only (127.0.0.1, ::1 or localhost), not {host!r}"
        )
    return address


class FakeProvider:
    """The fake provider running in a background thread, for tests.

    ``with FakeProvider(scripts) as fake:`` starts it on a free loopback port
    (``port=0``) and stops it on exit, ending lingering connections at once.
    ``scripts`` maps model names to scripts (:func:`parse_script` forms);
    None means :data:`DEFAULT_SCRIPTS`. ``key_scripts`` maps API keys to scripts: a
    request bearing such a key (``Authorization: Bearer``, Anthropic ``x-api-key``)
    is answered by its key's script, whatever its model.
    """

    def __init__(
        self,
        scripts: ScriptsLike | None = None,
        *,
        key_scripts: ScriptsLike | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_hold: float = DEFAULT_MAX_HOLD,
        verbose: bool = False,
    ) -> None:
        self._address = (_loopback(host), port)
        self._state = _State(
            parse_scripts(DEFAULT_SCRIPTS if scripts is None else scripts),
            parse_key_scripts(key_scripts or {}),
            max_hold,
            verbose,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle

    def start(self) -> FakeProvider:
        """Bind and serve in a background thread (idempotent)."""
        if self._server is None:
            server_class = _Server6 if ":" in self._address[0] else _Server
            self._state.stopping.clear()
            try:
                self._server = server_class(self._address, self._state)
            except OSError as error:
                host, port = self._address
                raise FakeProviderError(
                    f"the fake provider cannot listen on {host}:{port}: {error.strerror or error}"
                ) from error
            self._state.reset()
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-provider:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end open connections and join every handler thread."""
        server, self._server = self._server, None
        if server is None:
            return
        self._state.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (used by :func:`serve`)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses

    @property
    def port(self) -> int:
        """The bound port (the free port chosen when started with ``port=0``)."""
        if self._server is None:
            raise FakeProviderError("the fake provider is not running")
        return int(self._server.server_address[1])

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted since started: shows whether clients reuse connections."""
        if self._server is None:
            raise FakeProviderError("the fake provider is not running")
        return self._server.accepted

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:PORT`` (control endpoints live here)."""
        host = self._address[0]
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in ``/v1``."""
        return f"{self.url}/v1"

    # --- scripts and the attempt log

    def set_scripts(self, scripts: ScriptsLike) -> None:
        """Replace every model's script; their sequences restart from their first step
        (key scripts are kept)."""
        self._state.set_scripts(parse_scripts(scripts))

    def set_key_scripts(self, key_scripts: ScriptsLike) -> None:
        """Replace every API key's script; their sequences restart from their first step
        (model scripts are kept)."""
        self._state.set_key_scripts(parse_key_scripts(key_scripts))

    def models(self) -> list[str]:
        """The scripted model names."""
        with self._state.lock:
            return sorted(self._state.scripts)

    def attempts(self, model: str | None = None) -> list[UpstreamCall]:
        """The chat-completion attempts received since the start or last reset, in order
        (only those for ``model`` when given)."""
        with self._state.lock:
            records = [r.freeze() for r in self._state.records]
        return [a for a in records if model is None or a.model == model]

    def reset(self) -> None:
        """Clear the attempt log, restart every sequence, and restart the clock of
        ``down`` windows."""
        self._state.reset()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no attempt is in progress (its record is final); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._state.idle:
            while self._state.in_progress > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._state.idle.wait(remaining)
        return True


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8089,
    scripts: ScriptsLike | None = None,
    key_scripts: ScriptsLike | None = None,
    max_hold: float = DEFAULT_MAX_HOLD,
    verbose: bool = True,
) -> None:
    """Run the fake provider in the foreground until interrupted (Ctrl-C).

    Loopback only; ``scripts`` defaults to :data:`DEFAULT_SCRIPTS`, ``key_scripts`` to
    none. With ``verbose``, one line per attempt goes to stderr.
    """
    fake = FakeProvider(
        scripts,
        key_scripts=key_scripts,
        host=host,
        port=port,
        max_hold=max_hold,
        verbose=verbose,
    )
    fake.start()
    print(
        f"fake provider on {fake.base_url} — models: {', '.join(fake.models())}",
        file=sys.stderr,
        flush=True,
    )
    try:
        fake.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
