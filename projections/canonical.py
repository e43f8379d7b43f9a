"""A canonical byte encoding of folded states, and the state hash built on it (D1).

``canonical_bytes(obj)`` walks a state generically and writes a byte string
that depends only on the *values* in it, never on dict insertion order, set
iteration order, ``id()`` or ``PYTHONHASHSEED``:

* ``None``, ``bool``, ``int``, ``str`` and ``bytes`` are written with a type
  tag and a length or terminator, so no two values share an encoding;
* ``enum.Enum`` members by their class name and value;
* ``tuple`` and ``list`` in order (a list's order is part of the state: e.g.
  a request's failures in the order they happened);
* ``dict`` as its (key, value) pairs sorted by the key's canonical bytes;
* ``set`` and ``frozenset`` as their members sorted by canonical bytes;
* ``attrs`` classes by field name (fields declared ``eq=False`` are derived
  caches and are skipped), ``__slots__`` classes by slot name (slots listed in
  the class's ``DERIVED_SLOTS`` are derived indexes and are skipped) — both
  with the class name, so two classes with the same fields differ.

Floats are rejected (money and time are integers here, and a float's text is
not a stable identity); so is any other type, loudly, naming the path where it
was found. :func:`state_hash` is the SHA-256 of the canonical bytes of a whole
:class:`~routeledger.adapters.runtime.Folded` state.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import attrs

from routeledger.core.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from routeledger.adapters.runtime import Folded

__all__ = ["DEPTH_MAX", "CanonicalError", "canonical_bytes", "state_hash"]

#: Deepest nesting walked. Why: folded states nest ~6 levels (state -> table ->
#: scope -> event -> value -> tuple); 64 only stops a reference cycle early.
DEPTH_MAX: Final = 64


class CanonicalError(UsageError):
    """A value that has no canonical encoding (a float, an unknown type, a cycle)."""


def _slot_names(cls: type) -> tuple[str, ...]:
    names: set[str] = set()
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        names.update(name for name in slots if name not in ("__weakref__", "__dict__"))
    # A class may name slots that hold derived data (indexes, caches) rebuilt
    # from the rest: they are not part of the state's identity.
    derived = set(getattr(cls, "DERIVED_SLOTS", ()))
    return tuple(sorted(names - derived))


def _str_bytes(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"s%d:%b" % (len(data), data)


#: Per class: its header (tag, class name, field count) and (encoded name, name) per field.
_Spec = tuple[bytes, tuple[tuple[bytes, str], ...]]
_SPECS: dict[type, _Spec | None] = {}
#: Flush the output to the hasher once it holds this many pieces. Why: bounds
#: the memory of hashing a large state (millions of small pieces) to a few MB.
_FLUSH_PIECES: Final = 65_536


def _spec(cls: type) -> _Spec | None:
    if cls in _SPECS:
        return _SPECS[cls]
    if attrs.has(cls):
        names = tuple(sorted(f.name for f in attrs.fields(cls) if f.eq))
    else:
        names = _slot_names(cls)
    spec: _Spec | None = None
    if names:
        header = b"o" + _str_bytes(f"{cls.__module__}.{cls.__qualname__}") + b"%d:" % len(names)
        spec = (header, tuple((_str_bytes(name), name) for name in names))
    _SPECS[cls] = spec
    return spec


class _At(CanonicalError):
    """A :class:`CanonicalError` that collects the path to the offending value."""

    def __init__(self, problem: str, path: tuple[str, ...] = ()) -> None:
        self.problem = problem
        self.path = path
        super().__init__("$" + "".join(path) + f": {problem}")

    def under(self, segment: str) -> _At:
        return _At(self.problem, (segment, *self.path))


def _encode(obj: Any, out: list[bytes], depth: int, sink: Any = None) -> None:
    kind = type(obj)
    if kind is str:
        data = obj.encode("utf-8", "surrogatepass")
        out.append(b"s%d:%b" % (len(data), data))
    elif kind is int:
        out.append(b"i%d;" % obj)
    elif obj is None:
        out.append(b"N")
    elif kind is bool:
        out.append(b"T" if obj else b"F")
    elif depth > DEPTH_MAX:
        raise _At(f"nested deeper than {DEPTH_MAX} (a reference cycle?)")
    elif kind is dict:
        try:
            pairs = sorted(
                [(_sub(key, depth + 1), value) for key, value in obj.items()], key=_first
            )
        except _At as error:
            raise error.under("<key>") from None
        out.append(b"{%d:" % len(pairs))
        for key_bytes, value in pairs:
            out.append(key_bytes)
            try:
                _encode(value, out, depth + 1, sink)
            except _At as error:
                raise error.under(f"[{key_bytes[:40]!r}]") from None
            if sink is not None and len(out) > _FLUSH_PIECES:
                sink.update(b"".join(out))
                out.clear()
    elif kind is tuple or kind is list:
        out.append(b"(%d:" % len(obj) if kind is tuple else b"[%d:" % len(obj))
        for index, item in enumerate(obj):
            try:
                _encode(item, out, depth + 1, sink)
            except _At as error:
                raise error.under(f"[{index}]") from None
    elif kind is bytes:
        out.append(b"b%d:%b" % (len(obj), obj))
    elif kind is float:
        raise _At(f"floats have no canonical encoding ({obj!r})")
    elif isinstance(obj, enum.Enum):
        out.append(b"e" + _str_bytes(f"{kind.__module__}.{kind.__qualname__}"))
        _encode(obj.value, out, depth + 1)
    elif kind is frozenset or kind is set:
        try:
            members = sorted([_sub(item, depth + 1) for item in obj])
        except _At as error:
            raise error.under("<member>") from None
        out.append(b"<%d:" % len(members))
        out.extend(members)
    else:
        spec = _spec(kind)
        if spec is None:
            raise _At(f"no canonical encoding for {kind.__qualname__}")
        header, fields = spec
        out.append(header)
        for name_bytes, name in fields:
            out.append(name_bytes)
            field: Any = getattr(obj, name, None)
            field_kind = type(field)
            if field_kind is int:
                out.append(b"i%d;" % field)
            elif field is None:
                out.append(b"N")
            else:
                try:
                    _encode(field, out, depth + 1, sink)
                except _At as error:
                    raise error.under(f".{name}") from None


def _first(pair: tuple[bytes, object]) -> bytes:
    return pair[0]


def _sub(obj: object, depth: int) -> bytes:
    out: list[bytes] = []
    _encode(obj, out, depth)
    return b"".join(out)


def canonical_bytes(obj: object) -> bytes:
    """The canonical encoding of ``obj`` (see the module docstring).

    Raises :class:`CanonicalError` naming the path (``$.routing.pairs[...]``)
    of a value that has no canonical encoding.
    """
    return _sub(obj, 0)


def digest(obj: object, hasher: Callable[[], Any] = hashlib.sha256) -> str:
    """The hex digest of ``obj``'s canonical bytes (SHA-256 by default), in bounded memory."""
    h = hasher()
    out: list[bytes] = []
    _encode(obj, out, 0, h)
    h.update(b"".join(out))
    return str(h.hexdigest())


def state_hash(folded: Folded) -> str:
    """The SHA-256 hex digest of a folded state's canonical bytes (D1)."""
    return digest(folded)
