"""OpenAI chat completions as the executor sees them: the client's body, the chunks, the answer.

Pure values and functions, no I/O:

* :func:`parse_chat_body` checks a client's body (JSON object, ``messages``,
  ``max_tokens``/``max_completion_tokens``) and raises :class:`ChatRequestError`
  naming the field; a caller's mistake is never sent upstream, so it can never
  count as a provider's failure;
* :func:`upstream_payload` is the client's body passed through unchanged
  except ``model``, ``stream`` and ``stream_options`` (and, when an attempt
  continues a cut answer, the messages that carry the text already delivered);
* :class:`Assembly` merges streamed chunks into the ``chat.completion`` object a
  non-streaming client expects: content, refusal, tool calls (by index),
  finish reason, logprobs, usage, and any field it does not know, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from routeledger.adapters.engine.lifecycle import CHARS_PER_TOKEN
from routeledger.core.errors import UsageError

__all__ = [
    "Assembly",
    "ChatRequestError",
    "MessageAssembly",
    "anthropic_payload",
    "parse_chat_body",
    "upstream_payload",
]

#: The output-token fields a client may set (OpenAI's old and new names).
_OUTPUT_FIELDS: Final = ("max_tokens", "max_completion_tokens")


class ChatRequestError(UsageError):
    """A client's chat body is not one we can send: ``param`` names the field."""

    def __init__(self, param: str | None, problem: str) -> None:
        self.param = param
        self.problem = problem
        super().__init__(f"{param}: {problem}" if param else problem)


def _content_chars(content: object) -> int:
    """Characters of a message's content: a string, or text parts of a list."""
    if isinstance(content, str):
        return len(content)
    chars = 0
    for part in content if isinstance(content, list) else ():
        text = part.get("text") if isinstance(part, dict) else None
        chars += len(text) if isinstance(text, str) else 0
    return chars


def _output_tokens(body: Mapping[str, Any], limit: int | None) -> int | None:
    """The client's output-token cap, checked: a positive integer within the models' limit."""
    found: int | None = None
    for name in _OUTPUT_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if type(value) is not int:
            raise ChatRequestError(name, f"must be an integer, got {type(value).__name__}")
        if value <= 0:
            raise ChatRequestError(name, f"must be at least 1, got {value}")
        if limit is not None and value > limit:
            raise ChatRequestError(name, f"{value} is above this model's limit of {limit}")
        found = value if found is None else min(found, value)
    return found


def parse_chat_body(
    body: object, *, output_limit: int | None = None
) -> tuple[dict[str, Any], int, int | None]:
    """The body as a dict, its input-token estimate and output cap; :class:`ChatRequestError` if bad."""
    if isinstance(body, bytes | bytearray | memoryview | str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise ChatRequestError(None, f"the body is not valid JSON: {error}") from None
    if not isinstance(body, Mapping):
        raise ChatRequestError(None, f"the body must be a JSON object, got {type(body).__name__}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ChatRequestError("messages", "a non-empty array of messages is required")
    chars = _content_chars(body.get("system"))  # Anthropic's top-level system prompt
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ChatRequestError(f"messages[{index}]", "must be an object with a string role")
        chars += _content_chars(message.get("content"))
    tokens = _output_tokens(body, output_limit)
    return dict(body), -(-chars // CHARS_PER_TOKEN), tokens


def upstream_payload(
    body: Mapping[str, Any],
    model: str,
    *,
    delivered: str = "",
    instruction: str = "",
) -> dict[str, Any]:
    """What one attempt sends: the client's body with ``model`` and streaming set.

    ``delivered``: text the client already has, sent as an assistant prefix
    (prefill) so the model goes on from it; with ``instruction`` (a model
    without prefill) a user message after it asks the model to continue.
    """
    options = body.get("stream_options")
    payload = {
        **body,
        "model": model,
        "stream": True,
        "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True},
    }
    return _continued(payload, delivered, instruction)


def _continued(payload: dict[str, Any], delivered: str, instruction: str) -> dict[str, Any]:
    """``payload`` whose messages end with the text delivered (and the instruction, if any)."""
    if delivered:
        messages = [*payload["messages"], {"role": "assistant", "content": delivered}]
        if instruction:
            messages.append({"role": "user", "content": instruction})
        payload["messages"] = messages
    return payload


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether the client asked for the usage chunk (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class _Choice:
    """One choice's deltas merged: text, refusal, tool calls by index, finish reason."""

    __slots__ = ("calls", "extra", "finish_reason", "index", "logprobs", "parts", "refusal")

    def __init__(self, index: int) -> None:
        self.index = index
        self.parts: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.extra: dict[str, Any] = {}
        self.finish_reason: object = None
        self.logprobs: dict[str, list[Any]] | None = None

    def add(self, choice: Mapping[str, Any]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key, value in delta.items():
                if key == "content":
                    if isinstance(value, str):
                        self.parts.append(value)
                elif key == "refusal":
                    if isinstance(value, str):
                        self.refusal.append(value)
                elif key == "tool_calls":
                    self._calls(value)
                elif key != "role" and value is not None:
                    self.extra[key] = value  # fields we do not know pass through
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            merged = self.logprobs if self.logprobs is not None else {}
            for key, value in logprobs.items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
            self.logprobs = merged

    def _calls(self, calls: object) -> None:
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict):
                continue
            index = call.get("index", len(self.calls))
            slot = self.calls.get(index)
            if slot is None:
                slot = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                self.calls[index] = slot
            for key in ("id", "type"):
                if call.get(key):
                    slot[key] = call[key]
            function = call.get("function")
            if isinstance(function, dict):
                for key in ("name", "arguments"):
                    if isinstance(function.get(key), str):
                        slot["function"][key] += function[key]

    def tool_calls(self) -> list[dict[str, Any]]:
        return [self.calls[index] for index in sorted(self.calls)]

    def message(self) -> dict[str, Any]:
        calls = self.tool_calls()
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.parts) if self.parts or not calls else None,
            "refusal": "".join(self.refusal) or None,
        }
        if calls:
            message["tool_calls"] = calls
        message.update(self.extra)
        return {
            "index": self.index,
            "message": message,
            "finish_reason": self.finish_reason,
            "logprobs": self.logprobs,
        }


class Assembly:
    """Streamed chunks merged into one ``chat.completion`` (across continued attempts)."""

    def __init__(self) -> None:
        self.top: dict[str, Any] = {}
        self.choices: dict[int, _Choice] = {}
        #: The last usage object an upstream sent (its details are kept as sent).
        self.usage: dict[str, Any] | None = None

    def restart(self) -> None:
        """A partial answer was abandoned: forget its choices."""
        self.choices = {}

    def add(self, chunk: Mapping[str, Any]) -> None:
        """Merge one ``chat.completion.chunk``."""
        for key, value in chunk.items():
            if key == "choices":
                for choice in value if isinstance(value, list) else ():
                    if isinstance(choice, dict):
                        index = choice.get("index", 0)
                        slot = self.choices.get(index)
                        if slot is None:
                            slot = self.choices[index] = _Choice(index)
                        slot.add(choice)
            elif key == "usage":
                if isinstance(value, dict):
                    self.usage = value
            elif key != "object":
                self.top[key] = value

    def first(self) -> _Choice | None:
        """The first choice (what ``Completion`` summarises)."""
        return self.choices[min(self.choices)] if self.choices else None

    def completion(self, model: str, usage: Mapping[str, int] | None) -> dict[str, Any]:
        """The ``chat.completion`` object, ``model`` the one that served, ``usage`` as billed."""
        merged_usage: dict[str, Any] | None = None
        if usage is not None:
            merged_usage = {**(self.usage or {}), **usage}
        return {
            **self.top,
            "object": "chat.completion",
            "model": model,
            "choices": [self.choices[index].message() for index in sorted(self.choices)],
            "usage": merged_usage,
        }


def anthropic_payload(
    body: Mapping[str, Any], model: str, *, delivered: str = "", instruction: str = ""
) -> dict[str, Any]:
    """What one Anthropic attempt sends: the client's body with ``model`` and ``stream`` set.

    ``delivered`` is sent as the assistant turn the model goes on from
    (Anthropic's prefill); ``instruction``, for a model that cannot, follows it.
    """
    payload = {**body, "model": model, "stream": True}
    return _continued(payload, delivered, instruction)


class MessageAssembly:
    """Anthropic stream events merged into one ``message`` (across continued attempts)."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self.blocks: list[dict[str, Any]] = []
        self._json: dict[int, list[str]] = {}
        #: Blocks of earlier attempts: a continued attempt's indexes start after them.
        self._base = 0
        self.stop: dict[str, Any] = {}

    def restart(self) -> None:
        """A partial answer was abandoned: forget its blocks."""
        self.blocks, self._json, self._base = [], {}, 0

    def add(self, event: Mapping[str, Any]) -> None:
        """Merge one event (``message_start``, ``content_block_*``, ``message_delta``)."""
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            self._base = len(self.blocks)
            self.message = {k: v for k, v in event["message"].items() if k != "content"}
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            self.blocks.append(dict(event["content_block"]))
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
            index = self._base + _int_index(event)
            if index < len(self.blocks):
                self._delta(index, event["delta"])
        elif kind == "content_block_stop":
            index = self._base + _int_index(event)
            parts = self._json.pop(index, None)
            if parts is not None and index < len(self.blocks):
                try:
                    self.blocks[index]["input"] = orjson.loads("".join(parts) or "{}")
                except orjson.JSONDecodeError:
                    self.blocks[index]["input"] = {}
        elif kind == "message_delta" and isinstance(event.get("delta"), dict):
            self.stop.update(event["delta"])

    def _delta(self, index: int, delta: Mapping[str, Any]) -> None:
        block = self.blocks[index]
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            block["text"] = block.get("text", "") + delta["text"]
        elif kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            self._json.setdefault(index, []).append(delta["partial_json"])
        elif kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            block["thinking"] = block.get("thinking", "") + delta["thinking"]

    def text(self) -> str:
        """The text blocks' text, in order."""
        return "".join(b.get("text", "") for b in self.blocks if b.get("type") == "text")

    def tool_calls(self) -> list[dict[str, Any]]:
        """The ``tool_use`` blocks."""
        return [b for b in self.blocks if b.get("type") == "tool_use"]

    def completion(self, model: str, usage: Mapping[str, int] | None) -> dict[str, Any]:
        """The ``message`` object, ``model`` the one that served, ``usage`` as billed."""
        billed = None
        if usage is not None:
            billed = {
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage["completion_tokens"],
            }
        return {
            **self.message,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": self.blocks,
            "stop_reason": self.stop.get("stop_reason"),
            "stop_sequence": self.stop.get("stop_sequence"),
            "usage": billed,
        }


def _int_index(event: Mapping[str, Any]) -> int:
    index = event.get("index")
    return index if type(index) is int and index >= 0 else 0
