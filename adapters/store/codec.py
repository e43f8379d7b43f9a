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
  no ``1`` for a bool, no float for an int (:class:`InvalidPayload`); this holds
  inside nested values too, where only a field with a default may be left out
  (a stored event itself must hold every field, defaulted or not);
* an older schema version has no upcaster path to the current one.

Older schema versions are upcast payload-by-payload (a dict in, a dict out)
with the functions registered in an :class:`Upcasters` table before the
payload is structured.

Payloads are structured by decoders generated per event class (see
``_DecoderBuilder`` for why not cattrs); a rejected payload is explained by the
detailed cattrs converter, so every error names the field at fault.

``frozenset`` fields are written as *sorted* lists so that the bytes of an
event never depend on ``PYTHONHASHSEED`` (D1).
"""

from __future__ import annotations

import enum
import itertools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, TypedDict, TypeVar

import attrs
import orjson
from cattrs import transform_error
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.fns import identity
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import OrjsonConverter, make_converter

from routeledger.core.errors import DataError, UsageError
from routeledger.core.events import REGISTRY, Event, EventRegistry
from routeledger.core.time import ENGINE_TIME_US_MAX, ENGINE_TIME_US_MIN

__all__ = [
    "DEFAULT_UPCASTERS",
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

    def merged(self, other: Upcasters) -> Upcasters:
        """A table with this one's steps and ``other``'s (a step in both is an error)."""
        table = Upcasters()
        for source in (self, other):
            for (tag, schema), step in source._steps.items():
                table.register(tag, schema)(step)
        return table


#: RouteLedger's own upcasters: every codec applies them (a caller's table adds to them).
DEFAULT_UPCASTERS: Final = Upcasters()

#: Fields ``AttemptSucceeded``/``AttemptFailed`` gained in schema 2 (G6): measured
#: timings and the provider's announced limits; schema-1 events had none of them.
_OUTCOME_FIELDS_V2: Final = ("ttft_us", "duration_us", "announced")


@DEFAULT_UPCASTERS.register("routeledger.AttemptSucceeded", 1)
@DEFAULT_UPCASTERS.register("routeledger.AttemptFailed", 1)
def _outcome_v1_to_v2(payload: Payload) -> Payload:
    """A 0.1 outcome observation: nothing was measured or announced (``None``)."""
    return {**payload, **dict.fromkeys(_OUTCOME_FIELDS_V2)}


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


#: Field types orjson writes exactly as the generic unstructuring would, with no
#: Python call: a scalar, a homogeneous tuple of one (orjson writes a tuple as
#: an array, as it writes the list cattrs would build), or an optional scalar.
_SCALARS: Final = (str, int, bool)


def _is_plain_json(tp: Any) -> bool:
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS
    if origin in (typing.Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        return len(args) == 2 and len(rest) == 1 and rest[0] in _SCALARS
    return False


def _build_converter(registry: EventRegistry, *, detailed: bool) -> OrjsonConverter:
    # The fast converter checks the key count instead of the key set (see decode).
    conv = make_converter(forbid_extra_keys=detailed, detailed_validation=detailed)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(float, _reject_float)
    conv.register_structure_hook_factory(_is_enum, _enum_hook)
    conv.register_structure_hook_factory(_is_tuple, lambda tp: _tuple_hook(conv, tp))
    conv.register_structure_hook_factory(_is_frozenset, lambda tp: _frozenset_structure(conv, tp))
    conv.register_unstructure_hook_factory(
        _is_frozenset, lambda tp: _frozenset_unstructure(conv, tp)
    )
    # Inlined by the generated unstructure functions (cattrs skips identity hooks).
    conv.register_unstructure_hook_factory(_is_plain_json, lambda _: identity)
    _register_events(conv, registry, detailed=detailed)
    return conv


def _enum_hook(tp: type[enum.Enum]) -> Callable[[object, object], enum.Enum]:
    # Keyed by (type, value) so that True never finds the member whose value is 1.
    members = {(type(member.value), member.value): member for member in tp}

    def structure(value: object, _: object) -> enum.Enum:
        member = members.get((type(value), value))
        if member is None:
            raise TypeError(f"expected a {tp.__name__} value, got {value!r}")
        return member

    return structure


def _tuple_hook(conv: OrjsonConverter, tp: Any) -> Callable[[object, object], tuple[Any, ...]]:
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


def _frozenset_structure(
    conv: OrjsonConverter, tp: Any
) -> Callable[[object, object], frozenset[Any]]:
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


def _frozenset_unstructure(conv: OrjsonConverter, tp: Any) -> Callable[[frozenset[Any]], list[Any]]:
    args = typing.get_args(tp)
    inner = args[0] if args else Any

    def unstructure(value: frozenset[Any]) -> list[Any]:
        items = [conv.unstructure(element, unstructure_as=inner) for element in value]
        return sorted(items, key=orjson.dumps)

    return unstructure


def _register_events(conv: OrjsonConverter, registry: EventRegistry, *, detailed: bool) -> None:
    """Register each event class's generated hooks (payloads omit the envelope columns)."""
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


# --- generated per-class decoders ---------------------------------------------
#
# Why generated here and not by cattrs (the project otherwise lets cattrs do
# this): cattrs' make_dict_structure_fn, even with detailed validation off,
# makes one Python call per field into the strict hooks above and then calls
# attrs' frozen ``__init__`` with keywords (``object.__setattr__`` per slot);
# those two costs were most of a decode, and cattrs has no option that avoids
# either. The decoders below are compiled once per class when the codec is
# built: the type checks are inlined (``type(v) is int``), an enum is one dict
# lookup, and a plain attrs class (no validators, converters or init hooks) is
# filled through its slots' member descriptors without running ``__init__``
# (one C call per slot; nothing cheaper can write a frozen slot). Figures:
# bench/README.md. Validators, ``init=False`` fields and converters still go
# through ``__init__``; nested classes that are not plain, and types outside the
# event contract, go through the detailed cattrs hook: their semantics stay attrs'
# and cattrs'.
#
# A decoder only says "here is the event" or "no" (any exception). The detailed
# cattrs converter explains every "no", and property tests hold both to the same
# decisions on every registered event (tests/adapters/store/test_codec_decoders.py).

#: A generated event decoder: (payload dict, stream_id, version) -> event, or raises.
_Decoder = Callable[[object, str, int], Event]


class _Reject(Exception):
    """Raised by a generated decoder: the payload does not fit (the explainer says why)."""


#: Marks a defaulted value-class field absent from its JSON object.
_ABSENT: Final = object()


def _plain_attrs(cls: type[Any]) -> bool:
    """Whether an instance can be built by filling its slots, skipping ``__init__``.

    True for slotted attrs classes whose generated ``__init__`` only assigns: no
    validators, converters, ``init=False`` fields, ``__attrs_pre_init__``,
    ``__attrs_post_init__`` or own ``__new__``, and no slot besides the fields
    (``cache_hash`` adds one).
    """
    fields = attrs.fields(cls)
    if any(f.validator or f.converter or not f.init for f in fields):
        return False
    if hasattr(cls, "__attrs_pre_init__") or hasattr(cls, "__attrs_post_init__"):
        return False
    code = getattr(cls.__init__, "__code__", None)
    if code is None or not code.co_filename.startswith("<attrs generated"):
        return False
    slots: set[str] = set()
    for klass in cls.__mro__[:-1]:
        if "__slots__" not in klass.__dict__ or "__new__" in klass.__dict__:
            return False
        slots.update(klass.__dict__["__slots__"])
    return slots - {"__weakref__"} == {f.name for f in fields}


def _member(cls: type[Any], name: str) -> Any:
    """The slot descriptor that stores ``name`` on instances of ``cls``."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            descriptor = klass.__dict__[name]
            assert isinstance(descriptor, types.MemberDescriptorType), (cls, name)
            return descriptor
    raise AssertionError(f"{cls!r} has no slot {name!r}")  # pragma: no cover - _plain_attrs


class _DecoderBuilder:
    """Writes and compiles the decoders of one codec (see the comment above)."""

    def __init__(self, explainer: Callable[[], OrjsonConverter]) -> None:
        self._explainer = explainer  # built on first use
        self._globals: dict[str, Any] = {
            "_Reject": _Reject,
            "_new": object.__new__,
            "_ABSENT": _ABSENT,
        }
        self._names = itertools.count()
        self._helpers: dict[Any, str] = {}

    def _bind(self, prefix: str, value: object) -> str:
        name = f"_{prefix}{next(self._names)}"
        self._globals[name] = value
        return name

    def _compile(self, name: str, lines: list[str]) -> Any:
        source = "\n".join(lines)
        exec(compile(source, f"<routeledger codec {name}>", "exec"), self._globals)
        return self._globals[name]

    def _check(self, tp: Any, v: str) -> tuple[str, list[str]]:
        """A condition that local ``v`` has type ``tp`` and statements converting it in place."""
        if tp is str:
            return f"type({v}) is str", []
        if tp is bool:
            return f"type({v}) is bool", []
        if tp is int:
            return f"type({v}) is int and {INT_MIN} <= {v} <= {INT_MAX}", []
        if tp is type(None):
            return f"{v} is None", []
        if tp is float:
            return "False", []
        if _is_enum(tp):
            value_types = {type(member.value) for member in tp}
            if value_types == {str} or value_types == {int}:
                (value_type,) = value_types
                members = self._bind("E", {member.value: member for member in tp})
                return f"type({v}) is {value_type.__name__}", [f"{v} = {members}[{v}]"]
            # Keyed by (type, value), as the cattrs hook: True never finds the member 1.
            keyed = self._bind("E", {(type(member.value), member.value): member for member in tp})
            return "True", [f"{v} = {keyed}[type({v}), {v}]"]
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
            (inner,) = (arg for arg in args if arg is not type(None))
            cond, convert = self._check(inner, v)
            if convert:
                convert = [f"if {v} is not None:", *(f"    {line}" for line in convert)]
            return f"({v} is None or {cond})", convert
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"type({v}) is list", [*self._each(args[0], v), f"{v} = tuple({v})"]
        if origin is tuple and args and Ellipsis not in args:
            items = ", ".join(f"{self._helper(arg)}({v}[{i}])" for i, arg in enumerate(args))
            return f"type({v}) is list and len({v}) == {len(args)}", [f"{v} = ({items},)"]
        if origin is frozenset and len(args) == 1:
            return f"type({v}) is list", [
                *self._each(args[0], v),
                f"{v}_set = frozenset({v})",
                f"if len({v}_set) != len({v}): raise _Reject",  # duplicates
                f"{v} = {v}_set",
            ]
        if attrs.has(tp):
            return "True", [f"{v} = {self._helper(tp)}({v})"]
        # Outside the event contract: the detailed cattrs hook, slower but the same answer.
        hook = self._bind("H", self._explainer().get_structure_hook(tp))
        return "True", [f"{v} = {hook}({v}, {self._bind('T', tp)})"]

    def _each(self, tp: Any, v: str) -> list[str]:
        """Statements that check (and convert in place) every item of list ``v``."""
        cond, convert = self._check(tp, "e")
        if convert:
            return [f"{v} = [{self._helper(tp)}(e) for e in {v}]"]
        return [f"for e in {v}:", f"    if not ({cond}): raise _Reject"]

    def _helper(self, tp: Any) -> str:
        """The name of a generated function structuring one value of ``tp``."""
        name = self._helpers.get(tp)
        if name is not None:
            return name
        name = self._helpers[tp] = self._bind("S", None)  # reserved first: recursive types
        if attrs.has(tp):
            self._globals[name] = self._value_class(name, tp)
            return name
        cond, convert = self._check(tp, "v")
        lines = [f"def {name}(v):", f"    if not ({cond}): raise _Reject"]
        lines += [f"    {line}" for line in convert]
        lines.append("    return v")
        self._compile(name, lines)
        return name

    def _value_class(self, name: str, cls: type[Any]) -> Any:
        """A decoder for a nested attrs value: strict, with its defaults, no unknown keys."""
        attrs.resolve_types(cls)
        fields = attrs.fields(cls)
        factories = [f.default for f in fields if isinstance(f.default, attrs.Factory)]  # type: ignore[arg-type]
        if not _plain_attrs(cls) or any(factory.takes_self for factory in factories):
            hook = self._explainer().get_structure_hook(cls)
            return lambda value: hook(value, cls)
        defaults = any(f.default is not attrs.NOTHING for f in fields)
        lines = [f"def {name}(d):"]
        if defaults:
            lines += ["    if type(d) is not dict: raise _Reject", "    k = len(d)"]
        else:
            lines += [f"    if type(d) is not dict or len(d) != {len(fields)}: raise _Reject"]
        for i, field in enumerate(fields):
            local = f"a{i}"
            cond, convert = self._check(field.type, local)
            check = [f"if not ({cond}): raise _Reject"] if cond != "True" else []
            if field.default is attrs.NOTHING:
                lines.append(f"    {local} = d[{field.name!r}]")
                lines += [f"    {line}" for line in (*check, *convert)]
                continue
            if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                default = f"{self._bind('F', field.default.factory)}()"
            else:
                default = self._bind("D", field.default)
            lines += [
                f"    {local} = d.get({field.name!r}, _ABSENT)",
                f"    if {local} is _ABSENT:",
                f"        {local} = {default}",
                "        k += 1",
                "    else:",
                *(f"        {line}" for line in (*check, *convert) or ["pass"]),
            ]
        if defaults:
            lines.append(f"    if k != {len(fields)}: raise _Reject")  # unknown keys
        lines += self._construct(cls, {f.name: f"a{i}" for i, f in enumerate(fields)})
        return self._compile(name, lines)

    def _construct(self, cls: type[Any], values: Mapping[str, str]) -> list[str]:
        """Statements returning an instance of ``cls`` from locals (field name -> local)."""
        target = self._bind("C", cls)
        if not _plain_attrs(cls):  # __init__ runs validators, converters and hooks
            fields = attrs.fields(cls)
            kwargs = ", ".join(f"{f.alias}={values[f.name]}" for f in fields if f.init)
            return [f"    return {target}({kwargs})"]
        lines = [f"    o = _new({target})"]
        for field_name, value in values.items():
            setter = self._bind("set_", _member(cls, field_name).__set__)
            lines.append(f"    {setter}(o, {value})")
        return [*lines, "    return o"]

    def event(self, cls: type[Event]) -> _Decoder:
        """The decoder of a registered event: every payload field present, nothing else.

        Payload fields are those cattrs writes: every ``init`` field but the envelope.
        """
        attrs.resolve_types(cls)
        name = self._bind("event_", None)
        fields = [f for f in attrs.fields(cls) if f.init]
        lines = [
            f"def {name}(d, stream_id, version):",
            f"    if type(d) is not dict or len(d) != {len(fields) - len(_ENVELOPE_COLUMNS)}:",
            "        raise _Reject",
        ]
        conds = ["type(stream_id) is str", f"type(version) is int and 1 <= version <= {INT_MAX}"]
        converts: list[str] = []
        values = {}
        for i, field in enumerate(fields):
            if field.name in _ENVELOPE_COLUMNS:
                values[field.name] = field.name  # the decoder's arguments
                continue
            local = values[field.name] = f"a{i}"
            lines.append(f"    {local} = d[{field.name!r}]")
            if field.name == "at_us":
                low, high = max(INT_MIN, ENGINE_TIME_US_MIN), min(INT_MAX, ENGINE_TIME_US_MAX)
                conds.append(f"type({local}) is int and {low} <= {local} <= {high}")
                continue
            cond, convert = self._check(field.type, local)
            if cond != "True":
                conds.append(cond)
            converts += convert
        lines.append(f"    if not ({' and '.join(f'({c})' for c in conds)}): raise _Reject")
        lines += [f"    {line}" for line in converts]
        lines += self._construct(cls, values)
        decoder: _Decoder = self._compile(name, lines)
        return decoder


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
        self._upcasters = (
            DEFAULT_UPCASTERS if upcasters is None else DEFAULT_UPCASTERS.merged(upcasters)
        )
        # The fast converter encodes and serves dumps_value/loads_value; the detailed
        # one explains a payload the generated decoders rejected (and decodes the
        # odd type they leave to cattrs). It is built on first use: most processes
        # never read a bad row, and building it costs as much as the fast one.
        self._converter = _build_converter(registry, detailed=False)
        self._detailed: OrjsonConverter | None = None
        self._classes: Mapping[str, type[Event]] = registry.as_mapping()
        self._topics: dict[type[Event], str] = {cls: cls.topic() for cls in registry}
        self._unstructure = {cls: self._converter.get_unstructure_hook(cls) for cls in self._topics}
        builder = _DecoderBuilder(lambda: self._explainer)
        self._decoders: dict[type[Event], _Decoder] = {cls: builder.event(cls) for cls in registry}
        #: current topic -> its decoder; other topics take the slow path.
        self._by_topic: dict[str, _Decoder] = {
            topic: self._decoders[cls] for cls, topic in self._topics.items()
        }

    @property
    def registry(self) -> EventRegistry:
        """The registry this codec knows."""
        return self._registry

    @property
    def _explainer(self) -> OrjsonConverter:
        """The detailed converter (two threads may both build it: the same, harmlessly)."""
        if self._detailed is None:
            self._detailed = _build_converter(self._registry, detailed=True)
        return self._detailed

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
        decoder = self._by_topic.get(topic)
        if decoder is not None:
            try:
                return decoder(orjson.loads(payload), stream_id, version)
            except Exception:
                # Not JSON, or rejected: the slow path parses again and says why.
                return self._decode_slow(topic, payload, stream_id, version, position)
        return self._decode_slow(topic, payload, stream_id, version, position)

    def _finish(
        self, cls: type[Event], data: object, stream_id: str, version: int, where: _Where
    ) -> Event:
        """Decode a payload of the current schema, or raise the error explaining why not."""
        if type(data) is not dict:
            raise MalformedPayload(
                f"the payload is JSON {type(data).__name__}, not an object", **where
            )
        try:
            return self._decoders[cls](data, stream_id, version)
        except Exception as error:
            reason, cause = self._why(cls, data, stream_id, version, error)
        raise InvalidPayload(reason, **where) from cause

    def _why(
        self, cls: type[Event], data: Payload, stream_id: str, version: int, error: Exception
    ) -> tuple[str, BaseException]:
        """Why a decoder rejected ``data``, in the detailed converter's words where it has some."""
        for column in _ENVELOPE_COLUMNS:
            if column in data:
                return f"the payload holds the envelope field {column!r}, kept by the store", error
        try:
            evt = self._explainer.structure(
                {**data, "stream_id": stream_id, "version": version}, cls
            )
        except Exception as explained:
            return _describe(explained, cls), explained
        # The converter fills defaults; a stored payload must hold every field.
        missing = [
            f"required field missing @ {cls.__name__}.{field.name}"
            for field in attrs.fields(cls)
            if field.name not in data and field.name not in _ENVELOPE_COLUMNS and field.init
        ]
        if missing:
            return "; ".join(missing), error
        if not (ENGINE_TIME_US_MIN <= evt.at_us <= ENGINE_TIME_US_MAX and version >= 1):
            return f"envelope out of range (at_us={evt.at_us}, version={version})", error
        return _describe(error, cls), error  # pragma: no cover - the decoder test holds them equal

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
        return self._finish(cls, data, stream_id, version, where)

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
