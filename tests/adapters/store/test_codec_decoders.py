"""The generated decoders: they accept and reject exactly what the detailed converter does."""

from __future__ import annotations

import enum
from typing import Any, Literal

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import routeledger.core.catalog  # noqa: F401  (registers every event type)
from routeledger.adapters.store.codec import Codec, InvalidPayload, default_codec
from routeledger.core.events import REGISTRY, Event, EventRegistry, Origin, event
from routeledger.core.routing.events import AttemptFailed, FailureClass, Phase
from routeledger.core.time import ENGINE_TIME_US_MAX, ENGINE_TIME_US_MIN
from tests.adapters.store.test_codec import CODEC as LOCAL_CODEC
from tests.adapters.store.test_codec import LOCAL
from tests.strategies import STREAM_IDS, instances_of, strategy_for

# --- classes outside the common shape: they take the generators' other paths ----

ODD = EventRegistry()


class Mixed(enum.Enum):
    """Values of two types: looked up by (type, value)."""

    ONE = 1
    TWO = "two"


@attrs.frozen(kw_only=True)
class Checked:
    """A value with a validator: decoded by the detailed cattrs hook, validator included."""

    count: int = attrs.field(validator=attrs.validators.ge(0))


@attrs.frozen(kw_only=True)
class Defaults:
    """A value with a plain default and a factory default."""

    label: str = "none"
    tags: tuple[str, ...] = attrs.field(factory=tuple)


@event("routeledger.OddRecorded", 1, Origin.OBSERVED, registry=ODD)
@attrs.frozen(kw_only=True)
class OddRecorded(Event):
    """Fields the bench events do not use: mixed enums, literals, nested sets and values."""

    mixed: Mixed
    kind: Literal["a", "b"]
    checked: Checked | None
    defaults: Defaults
    groups: tuple[frozenset[int], ...]
    flags: frozenset[Mixed]


@event("routeledger.ValidatedRecorded", 1, Origin.OBSERVED, registry=ODD)
@attrs.frozen(kw_only=True)
class ValidatedRecorded(Event):
    """An event with a validator and an ``init=False`` field: built through ``__init__``."""

    amount: int = attrs.field(validator=attrs.validators.gt(0))
    doubled: int = attrs.field(init=False)

    @doubled.default
    def _double(self) -> int:
        return self.amount * 2


ODD_CODEC = Codec(ODD)
CODECS = {"default": default_codec, "local": lambda: LOCAL_CODEC, "odd": lambda: ODD_CODEC}

# --- the reference: the detailed cattrs converter, plus the codec's own rules ---

REJECTED = object()


def reference(codec: Codec, cls: type[Event], data: object, stream_id: str, version: int) -> Any:
    """What decoding must give: every payload field and no other, then the detailed converter."""
    fields = {f.name for f in attrs.fields(cls) if f.init} - {"stream_id", "version"}
    if type(data) is not dict or set(data) != fields:
        return REJECTED
    try:
        evt = codec._explainer.structure({**data, "stream_id": stream_id, "version": version}, cls)
    except Exception:
        return REJECTED
    if not ENGINE_TIME_US_MIN <= evt.at_us <= ENGINE_TIME_US_MAX:
        return REJECTED
    return evt


def enum_values(registries: list[EventRegistry]) -> list[object]:
    """Every enum value the registered events can hold (so mutations hit valid members too)."""
    values: list[object] = []
    seen: set[type[Any]] = set()

    def walk(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, enum.Enum) and tp not in seen:
            seen.add(tp)
            values.extend(member.value for member in tp)
        elif attrs.has(tp) and tp not in seen:
            seen.add(tp)
            attrs.resolve_types(tp)
            for field in attrs.fields(tp):
                walk(field.type)
        for arg in getattr(tp, "__args__", ()):
            walk(arg)

    for registry in registries:
        for cls in registry:
            walk(cls)
    return values


ENUM_VALUES = enum_values([REGISTRY, LOCAL, ODD])
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(ENUM_VALUES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)


def near_misses(value: object) -> list[object]:
    """Values one step from ``value``: another JSON type that looks alike, or just out of range."""
    common: list[object] = [None, 0.5, {}, []]
    if type(value) is bool:
        return [*common, int(value), 1 - int(value), str(value).lower()]
    if type(value) is int:
        return [*common, True, False, float(value), str(value), 2**63, 2**64 - 1, value + 1]
    if type(value) is str:
        # An enum by its name, or another enum's value; a number as text.
        return [*common, value.upper(), f"{value}x", "", 1, *ENUM_VALUES]
    if type(value) is list:
        repeated = [*value, value[0]] if value else [None]
        return [*common, repeated, value[:-1], [value], {str(i): v for i, v in enumerate(value)}]
    if type(value) is dict:
        return [*common, list(value.values()), {**value, "x": 0}, dict(list(value.items())[1:])]
    return [*common, 0, False, ""]  # None


def paths(node: object, at: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every path below ``node`` (dict keys and list indexes)."""
    found: list[tuple[object, ...]] = []
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        items = ()
    for key, child in items:
        found.append((*at, key))
        found.extend(paths(child, (*at, key)))
    return found


@st.composite
def mutated(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with one value (at any depth) replaced or removed, or one key added, or as it is."""
    data = orjson.loads(orjson.dumps(data))  # a deep copy
    everywhere = paths(data)
    dicts = [(), *(p for p in everywhere if isinstance(get(data, p), dict))]
    actions = ["keep", "near_miss", "near_miss", "near_miss", "replace", "remove", "add"]
    action = draw(st.sampled_from(actions))
    if action == "keep":
        return data
    if action == "add":
        key = draw(st.text(max_size=6) | st.sampled_from(["stream_id", "version", "at_us"]))
        get(data, draw(st.sampled_from(dicts)))[key] = draw(JSON_VALUES)
        return data
    where = draw(st.sampled_from(everywhere))
    parent, key = get(data, where[:-1]), where[-1]
    if action == "remove":
        del parent[key]
    else:
        near = st.sampled_from(near_misses(parent[key]))
        parent[key] = draw(near if action == "near_miss" else JSON_VALUES)
    return data


def get(node: Any, path: tuple[object, ...]) -> Any:
    """The value at ``path`` below ``node``."""
    for key in path:
        node = node[key]
    return node


@st.composite
def cases(draw: st.DrawFn) -> tuple[Codec, Event]:
    """A codec and an event of a class it knows."""
    codec = draw(st.sampled_from([codec() for codec in CODECS.values()]))
    cls = draw(st.sampled_from(list(codec.registry)))
    return codec, draw(events_of(cls))


def events_of(cls: type[Event]) -> st.SearchStrategy[Event]:
    """Instances of ``cls``; ours with validators are built here, in range."""
    envelope = {
        "stream_id": STREAM_IDS,
        "version": st.integers(min_value=1, max_value=2**63 - 1),
        "at_us": st.integers(min_value=ENGINE_TIME_US_MIN, max_value=ENGINE_TIME_US_MAX),
    }
    if cls is ValidatedRecorded:
        return st.builds(cls, **envelope, amount=st.integers(min_value=1, max_value=2**40))
    if cls is OddRecorded:
        checked = st.builds(Checked, count=st.integers(min_value=0, max_value=2**63 - 1))
        return st.builds(
            cls,
            **envelope,
            mixed=st.sampled_from(Mixed),
            kind=st.sampled_from(["a", "b"]),
            checked=st.none() | checked,
            defaults=instances_of(Defaults),
            groups=strategy_for(tuple[frozenset[int], ...]),
            flags=strategy_for(frozenset[Mixed]),
        )
    return instances_of(cls)


@settings(max_examples=600)
@given(cases(), st.data())
def test_decoders_decide_as_the_detailed_converter(
    case: tuple[Codec, Event], data: st.DataObject
) -> None:
    """For any event with one JSON value changed, removed or added, decode agrees with the reference."""
    codec, evt = case
    topic, raw = codec.encode(evt)
    payload = data.draw(mutated(orjson.loads(raw)))
    expected = reference(codec, type(evt), payload, evt.stream_id, evt.version)
    if expected is REJECTED:
        with pytest.raises(InvalidPayload) as caught:
            codec.decode(
                topic,
                orjson.dumps(payload),
                stream_id=evt.stream_id,
                version=evt.version,
                position=9,
            )
        where = (caught.value.topic, caught.value.stream_id, caught.value.version)
        assert where == (topic, evt.stream_id, evt.version)
        assert caught.value.position == 9
        return
    got = codec.decode(topic, orjson.dumps(payload), stream_id=evt.stream_id, version=evt.version)
    assert got == expected
    assert type(got) is type(evt)


# --- every field of every registered event, one wrong value at a time -----------


def _field_names(cls: type[Event]) -> list[str]:
    return [f.name for f in attrs.fields(cls) if f.init and f.name not in ("stream_id", "version")]


def _decode(codec: Codec, evt: Event, payload: dict[str, Any]) -> Event:
    return codec.decode(
        evt.topic(), orjson.dumps(payload), stream_id=evt.stream_id, version=evt.version, position=5
    )


@pytest.mark.parametrize(
    ("registry", "cls"),
    [
        (registry, cls)
        for registry in ("default", "local", "odd")
        for cls in CODECS[registry]().registry
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
@settings(max_examples=3)
@given(data=st.data())
def test_near_misses_in_every_field_are_decided_as_the_converter_does(
    registry: str, cls: type[Event], data: st.DataObject
) -> None:
    """Near misses and missing keys in every field of every event: decided as the reference, named."""
    codec = CODECS[registry]()
    evt = data.draw(events_of(cls))
    payload = orjson.loads(codec.encode(evt)[1])
    for name in _field_names(cls):
        without = {key: value for key, value in payload.items() if key != name}
        candidates = [without, *({**payload, name: wrong} for wrong in near_misses(payload[name]))]
        for candidate in candidates:
            expected = reference(codec, cls, candidate, evt.stream_id, evt.version)
            if expected is not REJECTED:
                assert _decode(codec, evt, candidate) == expected
                continue
            with pytest.raises(InvalidPayload) as caught:
                _decode(codec, evt, candidate)
            reason = caught.value.reason
            assert f"{cls.__name__}.{name}" in reason or f"({name}=" in reason, reason
            assert caught.value.position == 5


def test_a_nested_unknown_key_is_rejected() -> None:
    """A nested value with a key its class does not have is InvalidPayload (it was dropped before)."""
    evt = ODD_CODEC.decode(
        "routeledger.OddRecorded/1",
        orjson.dumps(
            {
                "at_us": 1,
                "mixed": 1,
                "kind": "a",
                "checked": None,
                "defaults": {},
                "groups": [],
                "flags": [],
            }
        ),
        stream_id="o:1",
        version=1,
    )
    assert isinstance(evt, OddRecorded)
    assert evt.defaults == Defaults(label="none", tags=())
    payload = orjson.loads(ODD_CODEC.encode(evt)[1])
    with pytest.raises(InvalidPayload, match=r"extra fields found \(surprise\)"):
        _decode(ODD_CODEC, evt, {**payload, "defaults": {"surprise": 1}})


def test_a_defaulted_event_field_is_required_and_cannot_be_swapped_for_another_key() -> None:
    """A payload lacking a defaulted field is rejected, also when an unknown key takes its place."""
    codec = default_codec()
    evt = AttemptFailed(
        stream_id="request:r1",
        version=2,
        at_us=5,
        request_id="r1",
        attempt_id="r1/1",
        credential_id="c",
        upstream_model="m",
        failure=FailureClass.UNKNOWN,
        phase=Phase.MID_STREAM,
        delivered_chars=3,
        hint_us=None,
        status=None,
        detail="x",
        billed=True,
    )
    payload = orjson.loads(codec.encode(evt)[1])
    del payload["billed"]
    with pytest.raises(InvalidPayload, match=r"required field missing @ AttemptFailed\.billed"):
        _decode(codec, evt, payload)
    with pytest.raises(InvalidPayload, match=r"extra fields found \(bogus\)"):
        _decode(codec, evt, {**payload, "bogus": True})


def test_validators_and_init_false_fields_keep_attrs_semantics() -> None:
    """An event with a validator and a derived field decodes through __init__: both still apply."""
    evt = ValidatedRecorded(stream_id="v:1", version=1, at_us=1, amount=3)
    topic, raw = ODD_CODEC.encode(evt)
    assert orjson.loads(raw) == {"at_us": 1, "amount": 3}
    decoded = ODD_CODEC.decode(topic, raw, stream_id="v:1", version=1)
    assert decoded == evt
    assert isinstance(decoded, ValidatedRecorded)
    assert decoded.doubled == 6
    with pytest.raises(InvalidPayload, match="ValidatedRecorded"):
        ODD_CODEC.decode(topic, b'{"at_us": 1, "amount": 0}', stream_id="v:1", version=1)
    odd = {"at_us": 1, "mixed": "two", "kind": "b", "defaults": {}, "groups": [], "flags": []}
    for checked in ({"count": -1}, {"count": 1, "other": 2}):
        with pytest.raises(InvalidPayload, match=r"OddRecorded\.checked"):
            ODD_CODEC.decode(
                "routeledger.OddRecorded/1",
                orjson.dumps({**odd, "checked": checked}),
                stream_id="o:1",
                version=1,
            )


HOOKED = EventRegistry()


@attrs.frozen(kw_only=True, cache_hash=True)
class Cached:
    """A value whose hash is cached in an extra slot that ``__init__`` fills."""

    n: int


@event("routeledger.HookedRecorded", 1, Origin.OBSERVED, registry=HOOKED)
@attrs.frozen(kw_only=True)
class HookedRecorded(Event):
    """An event whose ``__attrs_post_init__`` checks its fields."""

    low: int
    high: int
    cached: Cached

    def __attrs_post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low above high")


@event("routeledger.UnslottedRecorded", 1, Origin.OBSERVED, registry=HOOKED)
@attrs.frozen(kw_only=True, slots=False)
class UnslottedRecorded(Event):
    """An event without slots of its own."""

    n: int


def test_classes_with_init_hooks_or_other_layouts_are_built_by_init() -> None:
    """Post-init checks still run, cached hashes work, and classes without slots decode."""
    codec = Codec(HOOKED)
    hooked = HookedRecorded(stream_id="h:1", version=1, at_us=1, low=1, high=2, cached=Cached(n=3))
    decoded = codec.decode(*codec.encode(hooked), stream_id="h:1", version=1)
    assert decoded == hooked
    assert isinstance(decoded, HookedRecorded)
    assert hash(decoded.cached) == hash(Cached(n=3))
    bad = b'{"at_us": 1, "low": 3, "high": 2, "cached": {"n": 1}}'
    with pytest.raises(InvalidPayload, match=r"invalid value @ HookedRecorded$"):
        codec.decode("routeledger.HookedRecorded/1", bad, stream_id="h:1", version=1)
    unslotted = UnslottedRecorded(stream_id="u:1", version=1, at_us=1, n=4)
    assert codec.decode(*codec.encode(unslotted), stream_id="u:1", version=1) == unslotted
    with pytest.raises(InvalidPayload, match=r"UnslottedRecorded\.n"):
        codec.decode(
            "routeledger.UnslottedRecorded/1",
            b'{"at_us": 1, "n": true}',
            stream_id="u:1",
            version=1,
        )
