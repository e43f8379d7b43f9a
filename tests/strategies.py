"""Hypothesis strategies derived from event field types, so every event type is covered.

:func:`instances_of` builds any registered event (or value class) from its attrs
field annotations. A field whose type it does not know fails loudly: an event
with a type the codec cannot round-trip must not slip past the property test.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

import attrs
from hypothesis import strategies as st

from routeledger.core.events import STREAM_ID_LENGTH_MAX, Event
from routeledger.core.time import ENGINE_TIME_US_MAX

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
EDGE_INTS = st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 2**31, 10**12])
STREAM_IDS = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF, categories=["L", "N", "P", "S"]),
    min_size=1,
    max_size=STREAM_ID_LENGTH_MAX,
).filter(lambda s: s.isprintable() and not any(c.isspace() for c in s))


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for values of annotation ``tp`` (the types events may use)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is int:
        return st.one_of(EDGE_INTS, INT64)
    if tp is str:
        return st.text(max_size=40)
    if tp is bool:
        return st.booleans()
    if tp is type(None):
        return st.none()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(arg) for arg in args])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=4).map(tuple)
        return st.tuples(*(strategy_for(arg) for arg in args))
    if origin is frozenset:
        return st.frozensets(strategy_for(args[0]), max_size=4)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if attrs.has(tp):
        return instances_of(tp)
    raise TypeError(f"no strategy for field type {tp!r}: events may not use it")


def instances_of(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Instances of an attrs class built from its annotated fields."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in attrs.fields(cls):
        if isinstance(cls, type) and issubclass(cls, Event):
            if field.name == "stream_id":
                fields[field.name] = STREAM_IDS
                continue
            if field.name == "version":
                fields[field.name] = st.integers(min_value=1, max_value=2**63 - 1)
                continue
            if field.name == "at_us":
                fields[field.name] = st.integers(min_value=0, max_value=ENGINE_TIME_US_MAX)
                continue
        fields[field.name] = strategy_for(hints[field.name])
    return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))
