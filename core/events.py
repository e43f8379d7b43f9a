"""The event contract: the base class, the tag registry and the envelope rules.

These names and tags are the storage contract. An event's *tag* (for example
``routeledger.HoldPlaced``) and *schema version* are written next to every
stored event; renaming a class changes nothing, changing a tag or a field
breaks stored logs and needs a new schema version plus an upcaster (see
``routeledger.adapters.store.codec``).

Naming rule (STYLE items 4 and 5). Every event is named in the past tense and
says where it came from:

* :attr:`Origin.OBSERVED` — what an adapter *saw* happen outside
  (``ProviderResponded``, ``StreamInterrupted``, ``UsageReported``). Observations
  are the input of what-if replay: they are re-decided under another policy.
* :attr:`Origin.DECIDED` — what the core *decided* from state, a command and
  ``now`` (``AttemptRouted``, ``CooldownStarted``, ``HoldPlaced``).
* :attr:`Origin.ADMIN` — what an operator *changed* (``LimitChanged``,
  ``CredentialProvisioned`` by an explicit key).

Envelope. Every event carries the three fields a store needs:

* ``stream_id`` — the consistency boundary it is appended to, ``context:key``
  (``hold:req-42``, ``pair:cred-a:gpt-4o``); see :func:`stream_id_problem`;
* ``version`` — its 1-based position within that stream; the store rejects a
  version that is not exactly one past the stream's head (optimistic
  concurrency);
* ``at_us`` — engine time, integer microseconds since the epoch (see
  :mod:`routeledger.core.time` for why); never decreasing within a stream.

Events are ``attrs.frozen(kw_only=True)`` values without behaviour. Fields use
plain types a codec can round-trip strictly: ``int``, ``str``, ``bool``,
``None``, ``enum.Enum`` subclasses with ``str`` or ``int`` values, frozen attrs
value classes, and ``tuple[...]`` of those. No floats for money or time.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar, Final, TypeVar

import attrs

from .errors import UsageError
from .time import ENGINE_TIME_US_MAX, ENGINE_TIME_US_MIN

__all__ = [
    "DETAIL_CHARS_MAX",
    "REGISTRY",
    "STREAM_ID_LENGTH_MAX",
    "Event",
    "EventRegistry",
    "Origin",
    "envelope_problem",
    "event",
    "stream_id_problem",
]

#: Longest stream id, in characters. Why: ids are ``context:key`` built from
#: caller ids (request, credential, model names); 200 leaves room for a UUID,
#: a provider model name (~80 chars seen) and the prefix, while keeping index
#: entries small on every backend.
STREAM_ID_LENGTH_MAX: Final = 200
#: Longest failure detail an outcome may carry, in characters. Why: I4's report
#: caps each attempt's detail at 300 characters.
DETAIL_CHARS_MAX: Final = 300

#: Any whitespace (spaces, tabs, newlines, unicode spaces) in a stream id.
_WHITESPACE_RE: Final = re.compile(r"\s")
#: Stream ids of printable ASCII without spaces, the common case: always storable.
_PLAIN_STREAM_ID_RE: Final = re.compile(rf"[!-~]{{1,{STREAM_ID_LENGTH_MAX}}}")
#: Tag grammar: ``routeledger.`` then a CamelCase past-tense name.
_TAG_RE: Final = re.compile(r"^routeledger\.[A-Z][A-Za-z0-9]{1,63}$")
#: Highest schema version a tag may declare (a sanity limit, not a plan).
SCHEMA_VERSION_MAX: Final = 999


class Origin(enum.Enum):
    """Where an event came from (see the module docstring)."""

    #: An adapter observed it outside (provider responses, streams, usage).
    OBSERVED = "observed"
    #: The core decided it from state, a command and ``now``.
    DECIDED = "decided"
    #: An operator changed configuration or corrected state.
    ADMIN = "admin"


@attrs.frozen(kw_only=True)
class Event:
    """Base of every RouteLedger event: the envelope a store needs.

    Subclasses are declared with the :func:`event` decorator, which sets the
    class attributes below and registers the class under its tag.
    """

    #: Tag without version, e.g. ``routeledger.HoldPlaced``.
    TAG: ClassVar[str] = ""
    #: Current schema version of the payload (1, 2, ...).
    SCHEMA: ClassVar[int] = 0
    #: Observation, decision or admin change.
    ORIGIN: ClassVar[Origin] = Origin.DECIDED

    stream_id: str
    version: int
    at_us: int

    @classmethod
    def topic(cls) -> str:
        """The stored topic: ``tag/schema``, e.g. ``routeledger.HoldPlaced/1``."""
        return f"{cls.TAG}/{cls.SCHEMA}"


E = TypeVar("E", bound=type[Event])


class EventRegistry:
    """Maps tags to event classes; one process-wide :data:`REGISTRY` holds ours."""

    def __init__(self) -> None:
        self._by_tag: dict[str, type[Event]] = {}

    def register(self, cls: type[Event]) -> None:
        """Register ``cls`` under its tag; a second class with the same tag is an error."""
        if not _TAG_RE.match(cls.TAG):
            raise UsageError(
                f"event {cls.__qualname__}: tag {cls.TAG!r} does not match {_TAG_RE.pattern}"
            )
        if not (type(cls.SCHEMA) is int and 1 <= cls.SCHEMA <= SCHEMA_VERSION_MAX):
            raise UsageError(
                f"event {cls.TAG}: schema version {cls.SCHEMA!r} is not an int in "
                f"1..{SCHEMA_VERSION_MAX}"
            )
        existing = self._by_tag.get(cls.TAG)
        if existing is not None and existing is not cls:
            raise UsageError(
                f"event tag {cls.TAG!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        self._by_tag[cls.TAG] = cls

    def get(self, tag: str) -> type[Event] | None:
        """The class registered under ``tag``, or ``None``."""
        return self._by_tag.get(tag)

    def __iter__(self) -> Iterator[type[Event]]:
        """Every registered class, in tag order (deterministic)."""
        return iter([self._by_tag[tag] for tag in sorted(self._by_tag)])

    def __len__(self) -> int:
        return len(self._by_tag)

    def as_mapping(self) -> Mapping[str, type[Event]]:
        """A read-only view of tag -> class."""
        return dict(self._by_tag)


#: The registry every RouteLedger event registers in at import time.
REGISTRY: Final = EventRegistry()


def event(
    tag: str,
    schema: int,
    origin: Origin,
    *,
    registry: EventRegistry = REGISTRY,
) -> Callable[[E], E]:
    """Declare an event class: set its tag, schema version and origin, and register it.

    Use above ``@attrs.frozen(kw_only=True)``::

        @event("routeledger.HoldPlaced", 1, Origin.DECIDED)
        @attrs.frozen(kw_only=True)
        class HoldPlaced(BudgetEvent): ...
    """

    def declare(cls: E) -> E:
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise UsageError(f"@event({tag!r}) decorates {cls!r}, which is not an Event")
        if "__attrs_attrs__" not in cls.__dict__:
            raise UsageError(
                f"@event({tag!r}) must sit above @attrs.frozen(kw_only=True) on {cls.__qualname__}"
            )
        cls.TAG = tag
        cls.SCHEMA = schema
        cls.ORIGIN = origin
        registry.register(cls)
        return cls

    return declare


def stream_id_problem(stream_id: object) -> str | None:
    """Why ``stream_id`` cannot be stored, or ``None`` when it can.

    Allowed: 1..:data:`STREAM_ID_LENGTH_MAX` printable characters with no
    whitespace and no control characters (NUL among them, which PostgreSQL
    ``text`` cannot hold).
    """
    if type(stream_id) is not str:
        return f"stream id must be a str, got {type(stream_id).__name__}"
    if _PLAIN_STREAM_ID_RE.fullmatch(stream_id) is not None:
        return None  # printable ASCII without spaces, within the length limit
    if not stream_id:
        return "stream id is empty"
    if len(stream_id) > STREAM_ID_LENGTH_MAX:
        return f"stream id is {len(stream_id)} characters long, more than {STREAM_ID_LENGTH_MAX}"
    if stream_id.isprintable() and _WHITESPACE_RE.search(stream_id) is None:
        return None  # the common case, checked in C
    for index, char in enumerate(stream_id):  # pragma: no branch - some char is bad
        if not char.isprintable() or char.isspace():
            return f"stream id has a non-printable or space character {char!r} at index {index}"
    raise AssertionError("unreachable: isprintable/whitespace disagree")  # pragma: no cover


def envelope_problem(evt: Event) -> str | None:
    """Why ``evt``'s envelope is invalid on its own, or ``None`` when it is valid.

    Checks the tag is registered, the stream id, the version (an ``int`` >= 1)
    and the engine time (an ``int`` in range). Ordering against the stream's
    head is the store's job.
    """
    stream_id = evt.stream_id
    version = evt.version
    at_us = evt.at_us
    if (
        type(evt).TAG
        and type(stream_id) is str
        and _PLAIN_STREAM_ID_RE.fullmatch(stream_id) is not None
        and type(version) is int
        and version >= 1
        and type(at_us) is int
        and ENGINE_TIME_US_MIN <= at_us <= ENGINE_TIME_US_MAX
    ):
        return None  # the common case (an ASCII stream id), in one pass
    if not type(evt).TAG:
        return f"{type(evt).__qualname__} is not declared with @event"
    problem = stream_id_problem(evt.stream_id)
    if problem is not None:
        return problem
    if type(evt.version) is not int or evt.version < 1:
        return f"version must be an int >= 1, got {evt.version!r}"
    if type(evt.at_us) is not int or not (ENGINE_TIME_US_MIN <= evt.at_us <= ENGINE_TIME_US_MAX):
        return (
            f"at_us must be an int in {ENGINE_TIME_US_MIN}..{ENGINE_TIME_US_MAX}, got {evt.at_us!r}"
        )
    return None
