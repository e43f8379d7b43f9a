"""The event contract: declaration, registry, envelope rules."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.core.errors import UsageError
from routeledger.core.events import (
    STREAM_ID_LENGTH_MAX,
    Event,
    EventRegistry,
    Origin,
    envelope_problem,
    event,
    stream_id_problem,
)
from routeledger.core.time import ENGINE_TIME_US_MAX


def test_a_declared_event_carries_its_tag_schema_origin_and_topic() -> None:
    """@event sets TAG, SCHEMA and ORIGIN and registers the class under its tag."""
    registry = EventRegistry()

    @event("routeledger.ThingNoticed", 3, Origin.OBSERVED, registry=registry)
    @attrs.frozen(kw_only=True)
    class ThingNoticed(Event):
        n: int

    assert (ThingNoticed.TAG, ThingNoticed.SCHEMA, ThingNoticed.ORIGIN) == (
        "routeledger.ThingNoticed",
        3,
        Origin.OBSERVED,
    )
    assert ThingNoticed.topic() == "routeledger.ThingNoticed/3"
    assert registry.get("routeledger.ThingNoticed") is ThingNoticed
    assert registry.get("routeledger.Other") is None
    assert list(registry) == [ThingNoticed]
    assert len(registry) == 1
    assert registry.as_mapping() == {"routeledger.ThingNoticed": ThingNoticed}
    registry.register(ThingNoticed)  # re-registering the same class is harmless
    assert len(registry) == 1


def test_registry_iterates_in_tag_order() -> None:
    """Iteration order is by tag, independent of import order (D1)."""
    registry = EventRegistry()
    for name in ("routeledger.Zed", "routeledger.Alpha", "routeledger.Mid"):
        cls = attrs.frozen(kw_only=True)(
            type(name.split(".")[1], (Event,), {"__module__": __name__})
        )
        event(name, 1, Origin.DECIDED, registry=registry)(cls)
    assert [cls.TAG for cls in registry] == [
        "routeledger.Alpha",
        "routeledger.Mid",
        "routeledger.Zed",
    ]


@pytest.mark.parametrize(
    ("tag", "schema", "fragment"),
    [
        ("ThingNoticed", 1, "does not match"),
        ("routeledger.thing", 1, "does not match"),
        ("routeledger.Thing Noticed", 1, "does not match"),
        ("routeledger.ThingNoticed", 0, "schema version"),
        ("routeledger.ThingNoticed", 1000, "schema version"),
        ("routeledger.ThingNoticed", True, "schema version"),
    ],
)
def test_malformed_tags_and_schema_versions_are_rejected(
    tag: str, schema: int, fragment: str
) -> None:
    """Tags must be routeledger.CamelCase and schema versions ints in 1..999."""
    with pytest.raises(UsageError, match=fragment):

        @event(tag, schema, Origin.DECIDED, registry=EventRegistry())
        @attrs.frozen(kw_only=True)
        class Anything(Event):
            pass


def test_a_tag_cannot_name_two_classes() -> None:
    """Two classes under one tag are rejected at declaration, naming the first."""
    registry = EventRegistry()

    @event("routeledger.Once", 1, Origin.DECIDED, registry=registry)
    @attrs.frozen(kw_only=True)
    class First(Event):
        pass

    with pytest.raises(UsageError, match="already registered by"):

        @event("routeledger.Once", 1, Origin.DECIDED, registry=registry)
        @attrs.frozen(kw_only=True)
        class Second(Event):
            pass


def test_event_must_decorate_an_attrs_event_class() -> None:
    """@event refuses non-Event classes and classes not (yet) made attrs classes."""
    with pytest.raises(UsageError, match="not an Event"):
        event("routeledger.Nope", 1, Origin.DECIDED, registry=EventRegistry())(int)  # type: ignore[type-var]

    class Plain(Event):
        pass

    with pytest.raises(UsageError, match="must sit above"):
        event("routeledger.Nope", 1, Origin.DECIDED, registry=EventRegistry())(Plain)


@pytest.mark.parametrize(
    ("stream_id", "fragment"),
    [
        (5, "must be a str"),
        ("", "empty"),
        ("a" * (STREAM_ID_LENGTH_MAX + 1), "more than"),
        ("tab\there", "index 3"),
        ("line\nbreak", "non-printable"),
        ("nul\x00", "non-printable"),
    ],
)
def test_stream_ids_the_store_cannot_hold_are_named(stream_id: object, fragment: str) -> None:
    """stream_id_problem names why an id cannot be stored."""
    problem = stream_id_problem(stream_id)
    assert problem is not None
    assert fragment in problem


def test_ordinary_stream_ids_are_accepted() -> None:
    """context:key ids with model names and unicode are storable."""
    for ok in ("pair:cred-a:openai/gpt-4o", "hold:ré-42", "a" * STREAM_ID_LENGTH_MAX):
        assert stream_id_problem(ok) is None


def test_envelope_problem_checks_declaration_version_and_time() -> None:
    """envelope_problem rejects undeclared classes, bad versions and out-of-range engine time."""
    registry = EventRegistry()

    @event("routeledger.Ticked", 1, Origin.DECIDED, registry=registry)
    @attrs.frozen(kw_only=True)
    class Ticked(Event):
        pass

    @attrs.frozen(kw_only=True)
    class Undeclared(Event):
        pass

    assert envelope_problem(Ticked(stream_id="t:1", version=1, at_us=0)) is None
    assert envelope_problem(Ticked(stream_id="hold:ré-42", version=1, at_us=0)) is None
    assert "not declared" in str(envelope_problem(Undeclared(stream_id="t:1", version=1, at_us=0)))
    assert "empty" in str(envelope_problem(Ticked(stream_id="", version=1, at_us=0)))
    assert "version" in str(envelope_problem(Ticked(stream_id="t:1", version=0, at_us=0)))
    assert "version" in str(envelope_problem(Ticked(stream_id="t:1", version=True, at_us=0)))
    too_late = Ticked(stream_id="t:1", version=1, at_us=ENGINE_TIME_US_MAX + 1)
    assert "at_us" in str(envelope_problem(too_late))
    assert "at_us" in str(envelope_problem(Ticked(stream_id="t:1", version=1, at_us=1.0)))  # type: ignore[arg-type]


def _storable(stream_id: str) -> bool:
    """The stream id rule written out on its own: 1..max printable characters, no whitespace."""
    return (
        1 <= len(stream_id) <= STREAM_ID_LENGTH_MAX
        and stream_id.isprintable()
        and not any(char.isspace() for char in stream_id)
    )


@given(
    stream_id=st.text(max_size=STREAM_ID_LENGTH_MAX + 2)
    | st.text(alphabet=st.characters(min_codepoint=0x1F, max_codepoint=0x7F), max_size=210),
    version=st.integers(-1, 3) | st.booleans(),
    at_us=st.integers(-1, 2) | st.just(ENGINE_TIME_US_MAX + 1),
)
def test_stream_id_and_envelope_checks_agree_with_the_written_out_rule(
    stream_id: str, version: int, at_us: int
) -> None:
    """The fast check for ASCII stream ids accepts exactly what the written-out rule accepts."""
    registry = EventRegistry()

    @event("routeledger.Ticked", 1, Origin.DECIDED, registry=registry)
    @attrs.frozen(kw_only=True)
    class Ticked(Event):
        pass

    assert (stream_id_problem(stream_id) is None) == _storable(stream_id)
    valid = (
        _storable(stream_id)
        and type(version) is int
        and version >= 1
        and 0 <= at_us <= ENGINE_TIME_US_MAX
    )
    problem = envelope_problem(Ticked(stream_id=stream_id, version=version, at_us=at_us))
    assert (problem is None) == valid, problem
