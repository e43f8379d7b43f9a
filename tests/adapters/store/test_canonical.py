"""Canonical bytes and the state hash (D1)."""

from __future__ import annotations

import enum
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.adapters.store import canonical
from routeledger.adapters.store.canonical import CanonicalError, canonical_bytes, state_hash
from routeledger.adapters.store.eventstore import open_store
from routeledger.core.fold import Folded, fold_log
from tests.backends import sqlite_url
from tests.projections.workload import build

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.binary(max_size=4)
)


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Point:
    x: int
    y: int
    cache: int = attrs.field(default=0, eq=False)


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: object, b: object) -> None:
        self.a = a
        self.b = b


@given(st.dictionaries(st.text(max_size=6), scalars, max_size=12), st.randoms())
def test_dict_bytes_ignore_insertion_order(mapping: dict[str, object], rng: object) -> None:
    """D1: a dict's canonical bytes do not depend on its insertion order."""
    items = list(mapping.items())
    rng.shuffle(items)  # type: ignore[attr-defined]
    assert canonical_bytes(dict(items)) == canonical_bytes(mapping)


@given(st.frozensets(st.one_of(st.integers(), st.text(max_size=5)), max_size=12))
def test_sets_are_sorted(members: frozenset[object]) -> None:
    """D1: a set's canonical bytes do not depend on its iteration order (hash seed)."""
    assert canonical_bytes(members) == canonical_bytes(
        frozenset(sorted(members, key=repr, reverse=True))
    )
    assert canonical_bytes(set(members))[:1] == b"<" and canonical_bytes(members)[:1] == b"<"


@given(scalars, scalars)
def test_distinct_values_have_distinct_bytes(a: object, b: object) -> None:
    """D1: two scalars of different type or value never share an encoding."""
    if type(a) is type(b) and a == b:
        assert canonical_bytes(a) == canonical_bytes(b)
    else:
        assert canonical_bytes(a) != canonical_bytes(b)


def test_containers_classes_and_enums_are_told_apart() -> None:
    """D1: a tuple is not a list, enum members differ, attrs fields with eq=False are skipped."""
    assert canonical_bytes((1, 2)) != canonical_bytes([1, 2])
    assert canonical_bytes(Colour.RED) != canonical_bytes(Colour.BLUE)
    assert canonical_bytes(Colour.RED) != canonical_bytes("red")
    assert canonical_bytes(Point(x=1, y=2)) == canonical_bytes(Point(x=1, y=2, cache=9))
    assert canonical_bytes(Point(x=1, y=2)) != canonical_bytes(Point(x=2, y=1))
    assert canonical_bytes(Slotted(1, "x")) == canonical_bytes(Slotted(1, "x"))
    assert canonical_bytes(Slotted(1, "x")) != canonical_bytes(Slotted(1, "y"))
    assert canonical_bytes({1: "a", "1": "b"}) != canonical_bytes({1: "b", "1": "a"})


def test_floats_unknown_types_and_cycles_are_rejected_with_their_path() -> None:
    """D1: floats, unencodable types and cycles raise CanonicalError naming where they are."""
    with pytest.raises(CanonicalError, match=r"\$\[b's1:k'\]\[1\]: floats"):
        canonical_bytes({"k": (1, 2.5)})
    with pytest.raises(CanonicalError, match=r"\$\.a: no canonical encoding for object"):
        canonical_bytes(Slotted(object(), 1))
    with pytest.raises(CanonicalError, match="<key>"):
        canonical_bytes({1.5: 1})
    with pytest.raises(CanonicalError, match="<member>"):
        canonical_bytes(frozenset({1.5}))
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(CanonicalError, match="deeper"):
        canonical_bytes(loop)


def test_state_hash_of_a_fresh_state_is_stable() -> None:
    """D1: two fresh states hash alike, and a folded state hashes differently."""
    assert state_hash(Folded()) == state_hash(Folded())
    with open_store("memory://") as store:
        build(store, requests=5)
        assert state_hash(fold_log(store.read_all(0))) != state_hash(Folded())


_HASH_SCRIPT = """
import sys
from routeledger.core.fold import fold_log
from routeledger.adapters.store.eventstore import open_store
from routeledger.adapters.store.canonical import state_hash
with open_store(sys.argv[1], create=False) as store:
    print(state_hash(fold_log(store.read_all(0))))
"""


def test_state_hash_is_identical_across_hash_seeds(tmp_path: Path) -> None:
    """D1: folding the same log in processes with different PYTHONHASHSEED gives the same hash."""
    url = sqlite_url(tmp_path)
    with open_store(url) as store:
        build(store, requests=25)
        expected = state_hash(fold_log(store.read_all(0)))
    hashes = set()
    for seed in ("0", "1", "4242", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT, url],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        hashes.add(done.stdout.strip())
    assert hashes == {expected}


class Partial:
    __slots__ = ("a", "b")

    def __init__(self, a: object) -> None:
        self.a = a  # ``b`` stays unset


nested = st.recursive(
    st.one_of(scalars, st.sampled_from(Colour)),
    lambda inner: st.one_of(
        st.tuples(inner, inner),
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), inner, max_size=3),
        st.frozensets(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
        st.builds(Point, x=st.integers(), y=st.integers(), cache=st.integers()),
        st.builds(Slotted, inner, inner),
        st.builds(Partial, inner),
    ),
    max_leaves=12,
)


@given(nested)
def test_the_fast_walk_writes_the_reference_bytes(value: object) -> None:
    """D1: the compiled per-class walk encodes any value exactly as the reference walk does."""
    assert canonical._fast_sub(value, 0) == canonical._sub(value, 0)
    assert canonical_bytes(value) == canonical._sub(value, 0)
    assert canonical.digest(value) == hashlib.sha256(canonical._sub(value, 0)).hexdigest()


def test_the_fast_walk_writes_the_reference_bytes_of_a_folded_state() -> None:
    """D1: on a real folded state (requests, holds, events, enums) both walks agree byte for byte."""
    with open_store("memory://") as store:
        build(store, requests=30, seed=5)
        folded = fold_log(store.read_all(0))
    assert canonical._fast_sub(folded, 0) == canonical._sub(folded, 0)


def test_context_hashes_name_the_part_two_states_differ_in() -> None:
    """Two folded states that differ only in their routing part differ only in its context hash."""
    from routeledger.adapters.store.canonical import context_hashes
    from routeledger.core.fold import Folded

    one, two = Folded(), Folded()
    two.routing.cursors["routes.chat.chain[0]"] = 1
    first, second = context_hashes(one), context_hashes(two)
    assert {"routing", "budget", "credentials", "retention", "position"} <= set(first)
    assert [name for name in first if first[name] != second[name]] == ["routing"]
