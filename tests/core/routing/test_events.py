"""The routing events as a storage contract: tags, origins and codec-friendly field types."""

from __future__ import annotations

import enum
import types
import typing

import attrs
from hypothesis import given
from hypothesis import strategies as st

from routeledger.adapters.store.codec import default_codec
from routeledger.core.events import REGISTRY, Event, Origin
from routeledger.core.routing import events as routing_events
from routeledger.core.routing.events import BlockEvent, RoutingEvent
from tests.strategies import instances_of

OBSERVED = {"RequestReceived", "AttemptSucceeded", "AttemptFailed", "TokensCounted"}


def _routing_classes() -> list[type[Event]]:
    return [cls for cls in REGISTRY if issubclass(cls, RoutingEvent)]


def _allowed(tp: object) -> bool:
    origin = typing.get_origin(tp)
    if tp in (int, str, bool, type(None)):
        return True
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return all(type(m.value) in (str, int) for m in tp)
    if isinstance(tp, type) and attrs.has(tp):
        return all(_allowed(t) for t in typing.get_type_hints(tp).values())
    if origin in (typing.Union, types.UnionType):
        return all(_allowed(arg) for arg in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return (
            args[-1] is Ellipsis and _allowed(args[0])
            if Ellipsis in args
            else all(map(_allowed, args))
        )
    if origin is frozenset:
        return typing.get_args(tp) == (str,)
    return False


def test_every_routing_event_is_registered_with_a_routeledger_tag() -> None:
    """Storage contract: every class in __all__ that declares a tag is registered under routeledger.<Name>/<schema>."""
    classes = _routing_classes()
    names = {cls.__name__ for cls in classes}
    declared = {
        name
        for name in routing_events.__all__
        if isinstance(getattr(routing_events, name), type)
        and issubclass(getattr(routing_events, name), RoutingEvent)
        and getattr(routing_events, name)
        not in (RoutingEvent, BlockEvent, routing_events.ScopeEvent)
    }
    assert names == declared
    #: Schema versions bumped since 0.1 (each has an upcaster in adapters/store/codec.py).
    bumped = {"AttemptSucceeded": 2, "AttemptFailed": 2}
    for cls in classes:
        assert f"routeledger.{cls.__name__}" == cls.TAG
        assert bumped.get(cls.__name__, 1) == cls.SCHEMA


def test_observations_are_kept_apart_from_decisions() -> None:
    """STYLE 5: adapters' observations are OBSERVED, operators' orders ADMIN, the rest DECIDED."""
    for cls in _routing_classes():
        expected = (
            Origin.OBSERVED
            if cls.__name__ in OBSERVED
            else Origin.ADMIN
            if cls.__name__ in ("BlockLifted", "BlockImposed")
            else Origin.DECIDED
        )
        assert cls.ORIGIN is expected, cls


def test_every_field_has_a_concrete_codec_friendly_type() -> None:
    """Storage contract: fields are int/str/bool/None, str/int enums, frozen attrs values, tuples of those."""
    for cls in _routing_classes():
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            assert _allowed(hints[field.name]), (cls, field.name, hints[field.name])
            assert hints[field.name] is not float


@given(st.sampled_from(_routing_classes()).flatmap(instances_of))
def test_every_routing_event_round_trips_through_the_codec(evt: Event) -> None:
    """Storage contract: decode(encode(e)) == e for every routing event type."""
    codec = default_codec()
    topic, payload = codec.encode(evt)
    assert topic == type(evt).topic()
    assert codec.decode(topic, payload, stream_id=evt.stream_id, version=evt.version) == evt
