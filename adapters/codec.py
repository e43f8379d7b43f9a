"""The event codec: cattrs (orjson preconf) with strict decoding of our own store.

Every registered event (``routeledger.core.events.REGISTRY``) is stored as a
*topic* ``tag/schema`` (``routeledger.HoldPlaced/1``) and a JSON *payload*
holding every field except the two envelope fields the store keeps in its own
columns (``stream_id`` and ``version``).

Decoding is strict, because a log that silently changes meaning on read is
worse than one that refuses to load. Each of these raises a typed
:class:`DecodeError` naming the tag, stream, version and log position:

* the bytes are not JSON, or not a JSON object (:class:`MalformedPayload`);
* the tag is unknown (:class:`UnknownEventTag`);
* the schema version is newer than this code knows (:class:`FutureSchemaVersion`);
* a field is unknown or missing, or has the wrong type — no ``"5"`` for an int,
  no ``1`` for a bool, no float for an int (:class:`InvalidPayload`);
* an older schema version has no upcaster path to the current one.

Older schema versions are upcast payload-by-payload (a dict in, a dict out)
with the functions registered in an :class:`Upcasters` table before the
payload is structured.

``frozenset`` fields are written as *sorted* lists so that the bytes of an
event never depend on ``PYTHONHASHSEED`` (D1).
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, TypedDict, TypeVar

import attrs
import orjson
from cattrs import transform_error
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import OrjsonConverter, make_converter

from routeledger.core.errors import DataError, UsageError
from routeledger.core.events import REGISTRY, Event, EventRegistry
from routeledger.core.time import ENGINE_TIME_US_MAX, ENGINE_TIME_US_MIN

__all__ = [
    "Codec",
    "DecodeError",
    "EncodeError",
    "FutureSchemaVersion",
    "InvalidPayload",
    "MalformedPayload",
    "UnknownEventTag",
    "Upcasters",
    "default_codec",
    "split_topic",
]

#: Payloads carry only non-envelope fields; these two live in store columns.
_ENVELOPE_COLUMNS: Final = ("stream_id", "version")
#: Largest integer JSON may carry for us: signed 64 bits (SQL bigint, orjson).
INT_MAX: Final = 2**63 - 1
INT_MIN: Final = -(2**63)

T = TypeVar("T")
Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class _Where(TypedDict):
    topic: str
    stream_id: str | None
    version: int | None
    position: int | None


class DecodeError(DataError):
    """A stored event could not be decoded; names where it sits in the log."""

    def __init__(
        self,
        reason: str,
        *,
        topic: str,
        stream_id: str | None,
        version: int | None,
        position: int | None,
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.stream_id = stream_id
        self.version = version
        self.position = position
        where = (
            f"stream {stream_id!r} version {version}, log position "
            f"{position if position is not None else 'unknown (read by stream)'}"
        )
        super().__init__(f"cannot decode event {topic!r} at {where}: {reason}")


class MalformedPayload(DecodeError):
    """The stored bytes are not a JSON object."""


class UnknownEventTag(DecodeError):
    """The stored topic names a tag no registered event class has."""


class FutureSchemaVersion(DecodeError):
    """The stored schema version is newer than this code knows: upgrade RouteLedger."""


class InvalidPayload(DecodeError):
    """The payload is JSON but does not match the event's fields and types."""


class EncodeError(UsageError):
    """An event cannot be encoded (unregistered class, or a value JSON cannot hold)."""


def split_topic(topic: str) -> tuple[str, int] | None:
    """Split ``tag/schema`` into its parts, or return ``None`` if it is not of that form."""
    tag, sep, schema = topic.rpartition("/")
    if not sep or not tag or not schema.isdigit() or schema != str(int(schema)):
        return None
    return tag, int(schema)


class Upcasters:
    """Payload upgrade functions keyed by ``(tag, from_schema)``: each returns schema + 1."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, tag: str, from_schema: int) -> Callable[[Upcaster], Upcaster]:
        """Decorate a function that turns a ``from_schema`` payload into ``from_schema + 1``."""

        def add(step: Upcaster) -> Upcaster:
            key = (tag, from_schema)
            if key in self._steps:
                raise UsageError(f"an upcaster for {tag}/{from_schema} is already registered")
            self._steps[key] = step
            return step

        return add

    def upcast(self, tag: str, schema: int, target: int, payload: Payload) -> Payload:
        """Apply every step from ``schema`` to ``target``; :class:`MissingUpcaster` if one is absent."""
        while schema < target:
            step = self._steps.get((tag, schema))
            if step is None:
                raise MissingUpcaster(tag, schema)
            payload = step(payload)
            schema += 1
        return payload


class MissingUpcaster(LookupError):
    """No upcaster is registered for ``tag`` from ``schema``."""

    def __init__(self, tag: str, schema: int) -> None:
        self.tag = tag
        self.schema = schema
        super().__init__(f"no upcaster from {tag}/{schema}")


# --- strict primitive hooks -------------------------------------------------


def _strict_int(value: object, _: object) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__} {value!r}")
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"integer {value} does not fit in signed 64 bits")
    return value


def _strict_str(value: object, _: object) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _strict_bool(value: object, _: object) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected a boolean, got {type(value).__name__} {value!r}")
    return value


def _reject_float(value: object, _: object) -> float:
    raise TypeError(f"floats are not allowed in stored events (got {value!r})")


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def _is_frozenset(tp: Any) -> bool:
    return typing.get_origin(tp) is frozenset


def _build_converter(registry: EventRegistry, *, detailed: bool) -> OrjsonConverter:
    # The fast converter checks the key count instead of the key set (see decode).
    conv = make_converter(forbid_extra_keys=detailed, detailed_validation=detailed)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(float, _reject_float)

    def enum_hook(tp: type[enum.Enum]) -> Callable[[object, object], enum.Enum]:
        # Keyed by (type, value) so that True never finds the member whose value is 1.
        members = {(type(member.value), member.value): member for member in tp}

        def structure(value: object, _: object) -> enum.Enum:
            member = members.get((type(value), value))
            if member is None:
                raise TypeError(f"expected a {tp.__name__} value, got {value!r}")
            return member

        return structure

    conv.register_structure_hook_factory(_is_enum, enum_hook)

    def tuple_hook(tp: Any) -> Callable[[object, object], tuple[Any, ...]]:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = conv.get_structure_hook(args[0])
            inner = args[0]

            def homogeneous(value: object, _: object) -> tuple[Any, ...]:
                if type(value) is not list:
                    raise TypeError(f"expected a list, got {type(value).__name__}")
                return tuple(item(element, inner) for element in value)

            return homogeneous
        hooks = [(conv.get_structure_hook(arg), arg) for arg in args]

        def fixed(value: object, _: object) -> tuple[Any, ...]:
            if type(value) is not list or len(value) != len(hooks):
                raise TypeError(f"expected a list of {len(hooks)} items, got {value!r}")
            return tuple(h(element, arg) for (h, arg), element in zip(hooks, value, strict=True))

        return fixed

    conv.register_structure_hook_factory(_is_tuple, tuple_hook)

    def frozenset_structure(tp: Any) -> Callable[[object, object], frozenset[Any]]:
        (inner,) = typing.get_args(tp)
        item = conv.get_structure_hook(inner)

        def structure(value: object, _: object) -> frozenset[Any]:
            if type(value) is not list:
                raise TypeError(f"expected a list, got {type(value).__name__}")
            result = frozenset(item(element, inner) for element in value)
            if len(result) != len(value):
                raise ValueError("a set field holds duplicate items")
            return result

        return structure

    def frozenset_unstructure(tp: Any) -> Callable[[frozenset[Any]], list[Any]]:
        args = typing.get_args(tp)
        inner = args[0] if args else Any

        def unstructure(value: frozenset[Any]) -> list[Any]:
            items = [conv.unstructure(element, unstructure_as=inner) for element in value]
            return sorted(items, key=orjson.dumps)

        return unstructure

    conv.register_structure_hook_factory(_is_frozenset, frozenset_structure)
    conv.register_unstructure_hook_factory(_is_frozenset, frozenset_unstructure)

    omit_envelope = {name: override(omit=True) for name in _ENVELOPE_COLUMNS}
    for cls in registry:
        attrs.resolve_types(cls)
        conv.register_unstructure_hook(
            cls,
            make_dict_unstructure_fn(cls, conv, **omit_envelope),  # type: ignore[arg-type]
        )
        conv.register_structure_hook(
            cls,
            make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=detailed),
        )
    return conv


def _describe(error: BaseException, cls: type[Any]) -> str:
    if isinstance(error, ClassValidationError):
        messages = transform_error(error, path=cls.__name__)
        return "; ".join(messages)
    if isinstance(error, ForbiddenExtraKeysError):
        return f"unknown field(s) {sorted(error.extra_fields)}"
    return f"{type(error).__name__}: {error}"


class Codec:
    """Encodes events to ``(topic, payload)`` and decodes them back, strictly."""

    def __init__(
        self,
        registry: EventRegistry = REGISTRY,
        upcasters: Upcasters | None = None,
    ) -> None:
        self._registry = registry
        self._upcasters = upcasters or Upcasters()
        # Two converters over the same hooks: a fast one for the happy path and a
        # detailed one, used only to explain a payload the fast one rejected.
        self._converter = _build_converter(registry, detailed=False)
        self._explainer = _build_converter(registry, detailed=True)
        self._classes: Mapping[str, type[Event]] = registry.as_mapping()
        self._topics: dict[type[Event], str] = {cls: cls.topic() for cls in registry}
        self._unstructure = {cls: self._converter.get_unstructure_hook(cls) for cls in self._topics}
        self._structure = {cls: self._converter.get_structure_hook(cls) for cls in self._topics}
        #: current topic -> (class, payload field count); other topics take the slow path.
        self._known_topics: dict[str, tuple[type[Event], int]] = {
            topic: (cls, len(attrs.fields(cls)) - len(_ENVELOPE_COLUMNS))
            for cls, topic in self._topics.items()
        }

    @property
    def registry(self) -> EventRegistry:
        """The registry this codec knows."""
        return self._registry

    def encode(self, evt: Event) -> tuple[str, bytes]:
        """Return ``(topic, payload)``; :class:`EncodeError` if it cannot be stored."""
        cls = type(evt)
        topic = self._topics.get(cls)
        if topic is None:
            raise EncodeError(
                f"{cls.__module__}.{cls.__qualname__} is not a registered event "
                f"(declare it with @event and import it before building the codec)"
            )
        try:
            return topic, orjson.dumps(self._unstructure[cls](evt))
        except (orjson.JSONEncodeError, TypeError, ValueError, OverflowError) as error:
            raise EncodeError(
                f"cannot encode {topic} for stream {evt.stream_id!r} version {evt.version}: {error}"
            ) from error

    def decode(
        self,
        topic: str,
        payload: bytes,
        *,
        stream_id: str,
        version: int,
        position: int | None = None,
    ) -> Event:
        """Decode one stored event, strictly (see the module docstring)."""
        known = self._known_topics.get(topic)
        if known is None:
            return self._decode_slow(topic, payload, stream_id, version, position)
        cls, field_count = known
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as error:
            raise MalformedPayload(
                f"the payload is not JSON ({error})",
                topic=topic,
                stream_id=stream_id,
                version=version,
                position=position,
            ) from error
        # Hot path, inlined: a JSON object of the right size, no envelope keys.
        if (
            type(data) is dict
            and len(data) == field_count
            and "stream_id" not in data
            and "version" not in data
        ):
            data["stream_id"] = stream_id
            data["version"] = version
            try:
                evt: Event = self._structure[cls](data, cls)
            except Exception:
                pass  # explained by _finish below
            else:
                if ENGINE_TIME_US_MIN <= evt.at_us <= ENGINE_TIME_US_MAX and version >= 1:
                    return evt
            del data["stream_id"], data["version"]
        return self._finish(topic, cls, data, field_count, stream_id, version, position)

    def _finish(
        self,
        topic: str,
        cls: type[Event],
        data: object,
        field_count: int,
        stream_id: str,
        version: int,
        position: int | None,
    ) -> Event:
        if type(data) is not dict:
            raise MalformedPayload(
                f"the payload is JSON {type(data).__name__}, not an object",
                topic=topic,
                stream_id=stream_id,
                version=version,
                position=position,
            )
        # Envelope columns must not be in the payload: a payload of the right
        # length that holds one is missing a real field, and is explained below.
        if len(data) == field_count and "stream_id" not in data and "version" not in data:
            data["stream_id"] = stream_id
            data["version"] = version
            try:
                evt: Event = self._structure[cls](data, cls)
            except Exception as error:
                raise InvalidPayload(
                    self._explain(data, cls, error),
                    topic=topic,
                    stream_id=stream_id,
                    version=version,
                    position=position,
                ) from error
            if ENGINE_TIME_US_MIN <= evt.at_us <= ENGINE_TIME_US_MAX and version >= 1:
                return evt  # reached after an upcast
            reason = f"envelope out of range (at_us={evt.at_us}, version={version})"
        else:
            reason = self._explain_shape(data, cls)
        raise InvalidPayload(
            reason, topic=topic, stream_id=stream_id, version=version, position=position
        )

    def _explain_shape(self, data: Payload, cls: type[Event]) -> str:
        for column in _ENVELOPE_COLUMNS:
            if column in data:
                return f"the payload holds the envelope field {column!r}, kept by the store"
        data = {**data, "stream_id": "-", "version": 1}
        return self._explain(data, cls, ValueError("field count mismatch"))

    def _decode_slow(
        self,
        topic: str,
        payload: bytes,
        stream_id: str,
        version: int,
        position: int | None,
    ) -> Event:
        """Topics that are unknown, malformed, too new, or older than current (upcast)."""
        where: _Where = {
            "topic": topic,
            "stream_id": stream_id,
            "version": version,
            "position": position,
        }
        parts = split_topic(topic)
        if parts is None:
            raise UnknownEventTag("the topic is not of the form 'tag/schema'", **where)
        tag, schema = parts
        cls = self._classes.get(tag)
        if cls is None:
            raise UnknownEventTag(f"no event class is registered under tag {tag!r}", **where)
        if schema > cls.SCHEMA:
            raise FutureSchemaVersion(
                f"schema version {schema} is newer than {cls.SCHEMA}, the newest this "
                f"code knows for {tag}; upgrade RouteLedger to read this log",
                **where,
            )
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as error:
            raise MalformedPayload(f"the payload is not JSON ({error})", **where) from error
        if type(data) is not dict:
            raise MalformedPayload(
                f"the payload is JSON {type(data).__name__}, not an object", **where
            )
        try:
            data = self._upcasters.upcast(tag, schema, cls.SCHEMA, data)
        except MissingUpcaster as error:
            raise InvalidPayload(f"{error} towards schema {cls.SCHEMA}", **where) from error
        except Exception as error:
            raise InvalidPayload(f"upcasting failed: {error!r}", **where) from error
        _, field_count = self._known_topics[cls.topic()]
        return self._finish(topic, cls, data, field_count, stream_id, version, position)

    def _explain(self, data: Payload, cls: type[Any], fast_error: Exception) -> str:
        try:
            self._explainer.structure(data, cls)
        except Exception as error:
            return _describe(error, cls)
        return _describe(fast_error, cls)  # pragma: no cover - both converters share hooks

    def dumps_value(self, value: object, as_type: type[Any] | None = None) -> bytes:
        """Encode any supported value (snapshots, records) to JSON bytes."""
        try:
            return orjson.dumps(self._converter.unstructure(value, unstructure_as=as_type))
        except (orjson.JSONEncodeError, TypeError, ValueError, OverflowError) as error:
            raise EncodeError(f"cannot encode {type(value).__name__}: {error}") from error

    def loads_value(self, data: bytes, as_type: type[T]) -> T:
        """Decode JSON bytes into ``as_type`` strictly; :class:`DataError` on any mismatch."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise DataError(f"cannot decode {as_type!r}: not JSON ({error})") from error
        try:
            return self._converter.structure(raw, as_type)
        except Exception as error:
            raise DataError(
                f"cannot decode {as_type!r}: {self._explain(raw, as_type, error)}"
            ) from error


_DEFAULT: dict[int, Codec] = {}


def default_codec() -> Codec:
    """A codec over every event registered so far (rebuilt when new events register).

    Importing ``routeledger.core`` context modules registers their events; the
    codec is cached per registry size so late imports are still picked up.
    """
    size = len(REGISTRY)
    codec = _DEFAULT.get(size)
    if codec is None:
        _DEFAULT.clear()
        codec = _DEFAULT[size] = Codec(REGISTRY)
    return codec
