"""The storage contract of ledger events, the transition table and check_invariants."""

from __future__ import annotations

import enum
import types
import typing

import attrs
import pytest

from routeledger.core.budget import events as ev
from routeledger.core.budget import ledger
from routeledger.core.budget.values import BALANCE_MAX, HoldStatus, Leg
from routeledger.core.errors import InvariantViolation
from routeledger.core.events import REGISTRY, Event, Origin, envelope_problem

from ._support import T0_US, Ledger

BUDGET_EVENTS = [cls for cls in REGISTRY if issubclass(cls, ev.BudgetEvent)]
ALLOWED_LEAVES = (int, str, bool, type(None))


def _field_types_ok(tp: object) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return all(_field_types_ok(arg) for arg in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return args[-1] is Ellipsis and _field_types_ok(args[0])
    if isinstance(tp, type) and attrs.has(tp):
        return all(_field_types_ok(f.type) for f in attrs.fields(attrs.resolve_types(tp)))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return all(isinstance(m.value, str | int) for m in tp)
    return tp in ALLOWED_LEAVES


def test_every_ledger_event_is_registered_with_a_past_tense_tag() -> None:
    """Storage contract: all 18 ledger events are registered, schema 1, tags named after the class."""
    assert sorted(cls.__name__ for cls in BUDGET_EVENTS) == sorted(
        name for name in ev.__all__ if name not in {"BudgetEvent", "AccountEvent", "HoldEvent"}
    )
    for cls in BUDGET_EVENTS:
        assert f"routeledger.{cls.__name__}" == cls.TAG
        assert cls.SCHEMA == 1
        assert cls.ORIGIN in (Origin.DECIDED, Origin.ADMIN)


@pytest.mark.parametrize("cls", BUDGET_EVENTS, ids=lambda c: c.__name__)
def test_event_fields_use_codec_types_only(cls: type[Event]) -> None:
    """Storage contract: every field is int/str/bool/None/enum/attrs value/tuple of those."""
    for field in attrs.fields(attrs.resolve_types(cls)):
        assert _field_types_ok(field.type), (cls.__name__, field.name, field.type)


def test_decided_events_have_valid_envelopes_and_streams() -> None:
    """Streams: account events go to account:<id>, hold events to hold:<id>, versions contiguous."""
    lg = Ledger()
    lg.open("a", 1_000)
    lg.place("h1", 10)
    lg.settle("h1", 20)
    for e in lg.store.log:
        assert envelope_problem(e) is None
        if isinstance(e, ev.AccountEvent):
            assert e.stream_id == "account:" + e.account_id
        else:
            assert isinstance(e, ev.HoldEvent)
            assert e.stream_id == "hold:" + e.hold_id


def test_l4_evolve_refuses_an_illegal_transition_loudly() -> None:
    """L4: a second resolution event in a log is an InvariantViolation naming event, hold and state."""
    lg = Ledger()
    lg.open("a", 1_000)
    lg.place("h1", 10)
    lg.settle("h1", 10)
    bogus = ev.HoldExpired(
        stream_id="hold:h1", version=3, at_us=T0_US, hold_id="h1", expires_at_us=T0_US
    )
    with pytest.raises(InvariantViolation, match=r"HoldExpired at hold:h1@3.*settled"):
        ledger.evolve(lg.state, bogus)


def test_other_contexts_events_are_ignored() -> None:
    """Contexts ignore each other's events in evolve and fold."""
    state = ledger.initial()
    assert ledger.evolve(state, object()) is state
    assert ledger.fold([object()], state).accounts == {}


def _corrupt(mutate: typing.Callable[[ledger.LedgerState], None]) -> None:
    lg = Ledger()
    lg.open("a", 1_000)
    lg.place("h1", 10)
    lg.place("h2", 20)
    lg.settle("h2", 5)
    mutate(lg.state)
    with pytest.raises(InvariantViolation):
        ledger.check_invariants(lg.state)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: setattr(s.accounts["a"], "reserved", 0),
        lambda s: setattr(s.accounts["a"], "reserved", -10),
        lambda s: setattr(s.accounts["a"], "spent", -1),
        lambda s: setattr(s.accounts["a"], "spent", 10),
        lambda s: setattr(s.accounts["a"], "lifetime_spent", BALANCE_MAX + 1),
        lambda s: s.open_holds.pop("h1"),
        lambda s: setattr(s.holds["h2"], "status", HoldStatus.OPEN),
        lambda s: setattr(s.holds["h1"], "legs", (Leg(account_id="ghost", amount=10),)),
        lambda s: setattr(s.holds["h1"], "legs", (Leg(account_id="a", amount=-1),)),
        lambda s: s.open_holds.__setitem__("zz", s.holds["h1"]),
    ],
)
def test_l1_check_invariants_catches_corruption(
    mutate: typing.Callable[[ledger.LedgerState], None],
) -> None:
    """L1: a reserved that is not the sum of open holds, or any inconsistency, raises; nothing clamps."""
    _corrupt(mutate)


def test_hold_account_ids_of_admitted_and_rejected_holds() -> None:
    """L8: a hold remembers the accounts it named, admitted or rejected."""
    lg = Ledger()
    lg.open("a", 10)
    lg.open("b", 10)
    lg.place("ok", 1, "b", "a")
    lg.place("no", 11, "a", "b")
    assert ledger.hold_account_ids(lg.state.holds["ok"]) == ("b", "a")
    assert ledger.hold_account_ids(lg.state.holds["no"]) == ("a", "b")
