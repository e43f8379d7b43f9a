"""The codec: strict decoding, upcasting, determinism, and a round-trip for every event type."""

from __future__ import annotations

import enum
import os
import subprocess
import sys
import textwrap

import attrs
import orjson
import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import given
from hypothesis import strategies as st

import routeledger.core.catalog  # noqa: F401  (registers every event type)
from routeledger.adapters.store.codec import (
    Codec,
    EncodeError,
    FutureSchemaVersion,
    InvalidPayload,
    MalformedPayload,
    UnknownEventTag,
    Upcasters,
    default_codec,
    split_topic,
)
from routeledger.adapters.store.eventstore import open_store
from routeledger.core.errors import DataError, UsageError
from routeledger.core.events import REGISTRY, Event, EventRegistry, Origin, event
from tests.strategies import instances_of

LOCAL = EventRegistry()


class Tier(enum.Enum):
    FREE = "free"
    PAID = "paid"


class Rank(enum.Enum):
    LOW = 1
    HIGH = 2


@attrs.frozen(kw_only=True)
class Usage:
    input_tokens: int
    output_tokens: int


@event("routeledger.EverythingRecorded", 1, Origin.OBSERVED, registry=LOCAL)
@attrs.frozen(kw_only=True)
class EverythingRecorded(Event):
    """A test event using every field type events may use."""

    amount_micros: int
    note: str | None
    tier: Tier
    rank: Rank
    flag: bool
    tags: frozenset[str]
    usages: tuple[Usage, ...]
    pair: tuple[str, int]
    usage: Usage | None


CODEC = Codec(LOCAL)


def sample(**changes: object) -> EverythingRecorded:
    base = EverythingRecorded(
        stream_id="request:r1",
        version=3,
        at_us=1_700_000_000_000_000,
        amount_micros=1_500_000,
        note=None,
        tier=Tier.PAID,
        rank=Rank.HIGH,
        flag=True,
        tags=frozenset({"b", "a", "c"}),
        usages=(Usage(input_tokens=3, output_tokens=4),),
        pair=("x", 1),
        usage=None,
    )
    return attrs.evolve(base, **changes)


def payload_of(evt: Event, **changes: object) -> bytes:
    _, raw = CODEC.encode(evt)
    data = orjson.loads(raw)
    data.update(changes)
    return orjson.dumps(data)


def decode(payload: bytes, topic: str = "routeledger.EverythingRecorded/1") -> Event:
    return CODEC.decode(topic, payload, stream_id="request:r1", version=3, position=41)


@given(instances_of(EverythingRecorded))
def test_every_supported_field_type_round_trips(evt: EverythingRecorded) -> None:
    """decode(encode(e)) == e for generated values of every field type the contract allows."""
    topic, payload = CODEC.encode(evt)
    assert topic == "routeledger.EverythingRecorded/1"
    assert CODEC.decode(topic, payload, stream_id=evt.stream_id, version=evt.version) == evt


@st.composite
def any_registered_event(draw: st.DrawFn) -> Event:
    cls = draw(st.sampled_from(list(REGISTRY)))
    return draw(instances_of(cls))  # type: ignore[no-any-return]


@given(any_registered_event())
def test_every_registered_event_type_round_trips(evt: Event) -> None:
    """Every event type in the registry survives encode -> decode unchanged (new ones included)."""
    codec = default_codec()
    topic, payload = codec.encode(evt)
    assert topic == type(evt).topic()
    assert codec.decode(topic, payload, stream_id=evt.stream_id, version=evt.version) == evt


def test_the_registry_covers_every_context() -> None:
    """The catalog registers events of routing, budget and credentials (nothing escapes the codec)."""
    modules = {cls.__module__.split(".")[2] for cls in REGISTRY}
    assert {"routing", "budget", "credentials"} <= modules
    for cls in REGISTRY:
        strategy = instances_of(cls)  # raises for a field type the codec cannot hold
        assert strategy is not None


def test_payload_omits_the_envelope_columns_and_sorts_sets() -> None:
    """Stored payloads hold no stream_id/version and write sets as sorted lists."""
    _, payload = CODEC.encode(sample())
    data = orjson.loads(payload)
    assert "stream_id" not in data
    assert "version" not in data
    assert data["tags"] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"amount_micros": "5"}, "expected int @ EverythingRecorded.amount_micros"),
        ({"amount_micros": True}, "expected int"),
        ({"amount_micros": 1.5}, "expected int"),
        ({"amount_micros": 2**63}, "EverythingRecorded.amount_micros"),
        ({"amount_micros": None}, "EverythingRecorded.amount_micros"),
        ({"flag": 1}, "expected bool @ EverythingRecorded.flag"),
        ({"note": 5}, "EverythingRecorded.note"),
        ({"tier": "gold"}, "expected Tier"),
        ({"rank": "1"}, "expected Rank"),
        ({"rank": True}, "expected Rank"),
        ({"tags": ["a", 1]}, "EverythingRecorded.tags"),
        (
            {"usages": [{"input_tokens": 1, "output_tokens": 2, "x": 0}]},
            "extra fields found (x) @ EverythingRecorded.usages",
        ),
        (
            {"usage": {"input_tokens": 1, "output_tokens": 2, "x": 0}},
            "extra fields found (x) @ EverythingRecorded.usage",
        ),
        ({"pair": ["x", 1, 2]}, "EverythingRecorded.pair"),
        ({"tags": "abc"}, "EverythingRecorded.tags"),
        ({"tags": ["a", "a"]}, "EverythingRecorded.tags"),
        ({"usages": [{"input_tokens": 1}]}, "required field missing"),
        ({"usages": "xy"}, "EverythingRecorded.usages"),
        ({"pair": ["x"]}, "EverythingRecorded.pair"),
        ({"at_us": -5}, "envelope out of range"),
        ({"at_us": 2**63 + 1}, "EverythingRecorded.at_us"),
        ({"surprise": 1}, "extra fields found (surprise)"),
        ({"stream_id": "other"}, "envelope field 'stream_id'"),
    ],
)
def test_decoding_is_strict_about_fields_and_types(
    changes: dict[str, object], fragment: str
) -> None:
    """Wrong types, unknown or extra fields and envelope fields in the payload are InvalidPayload."""
    with pytest.raises(InvalidPayload) as caught:
        decode(payload_of(sample(), **changes))
    assert fragment in str(caught.value)
    assert caught.value.position == 41
    assert caught.value.stream_id == "request:r1"
    assert caught.value.version == 3


def test_a_missing_field_is_named() -> None:
    """A payload lacking a field raises InvalidPayload naming that field."""
    data = orjson.loads(payload_of(sample()))
    del data["rank"]
    with pytest.raises(InvalidPayload, match=r"required field missing @ EverythingRecorded\.rank"):
        decode(orjson.dumps(data))


@pytest.mark.parametrize(
    ("topic", "payload", "error"),
    [
        ("routeledger.EverythingRecorded/1", b"{not json", MalformedPayload),
        ("routeledger.EverythingRecorded/1", b'"a string"', MalformedPayload),
        ("routeledger.EverythingRecorded/2", b"{}", FutureSchemaVersion),
        ("routeledger.Unknown/1", b"{}", UnknownEventTag),
        ("no-slash", b"{}", UnknownEventTag),
        ("routeledger.EverythingRecorded/01", b"{}", UnknownEventTag),
    ],
)
def test_unreadable_rows_raise_their_own_error_type(
    topic: str, payload: bytes, error: type[DataError]
) -> None:
    """Non-JSON bytes, unknown tags, bad topics and future schemas each have a typed error."""
    with pytest.raises(error):
        decode(payload, topic)


def test_split_topic_accepts_only_tag_slash_number() -> None:
    """Topics are ``tag/schema`` with a canonical decimal schema."""
    assert split_topic("routeledger.X/12") == ("routeledger.X", 12)
    assert split_topic("routeledger.X/") is None
    assert split_topic("/3") is None
    assert split_topic("routeledger.X/007") is None


def test_encoding_an_unregistered_or_unencodable_event_is_an_encode_error() -> None:
    """Unregistered classes and ints beyond 64 bits cannot be encoded."""

    @attrs.frozen(kw_only=True)
    class Loose(Event):
        pass

    with pytest.raises(EncodeError, match="not a registered event"):
        CODEC.encode(Loose(stream_id="a:b", version=1, at_us=0))
    with pytest.raises(EncodeError, match="request:r1"):
        CODEC.encode(sample(amount_micros=2**64))
    assert isinstance(EncodeError("x"), UsageError)


V2 = EventRegistry()


@event("routeledger.PriceQuoted", 2, Origin.OBSERVED, registry=V2)
@attrs.frozen(kw_only=True)
class PriceQuotedV2(Event):
    """Schema 2 split ``price`` (whole units) into ``price_micros``, and added ``currency``."""

    price_micros: int
    currency: str


UPCASTERS = Upcasters()


@UPCASTERS.register("routeledger.PriceQuoted", 1)
def _price_v1_to_v2(payload: dict[str, object]) -> dict[str, object]:
    price = payload.pop("price")
    assert isinstance(price, int)
    return {**payload, "price_micros": price * 1_000_000, "currency": "USD"}


def test_a_stored_v1_payload_is_upcast_to_the_current_schema(tmp_path: object) -> None:
    """A v1 row written by an older release decodes as the v2 event through the upcaster."""
    codec = Codec(V2, UPCASTERS)
    with open_store("memory://", codec=codec) as store:
        store._events.insert_events(
            [
                StoredEvent(
                    originator_id="quote:q1",
                    originator_version=1,
                    topic="routeledger.PriceQuoted/1",
                    state=b'{"at_us": 10, "price": 3}',
                )
            ]
        )
        store.append(
            [
                PriceQuotedV2(
                    stream_id="quote:q1", version=2, at_us=20, price_micros=5, currency="EUR"
                )
            ]
        )
        loaded = store.load("quote:q1")
    assert loaded[0] == PriceQuotedV2(
        stream_id="quote:q1", version=1, at_us=10, price_micros=3_000_000, currency="USD"
    )
    assert loaded[1].topic() == "routeledger.PriceQuoted/2"


def test_upcasting_without_a_path_or_with_a_failing_step_is_invalid_payload() -> None:
    """A missing upcaster step, or one that raises, is a typed InvalidPayload, not a crash."""
    with pytest.raises(InvalidPayload, match=r"no upcaster from routeledger\.PriceQuoted/1"):
        Codec(V2).decode("routeledger.PriceQuoted/1", b'{"at_us": 1}', stream_id="q:1", version=1)
    with pytest.raises(InvalidPayload, match="upcasting failed"):
        Codec(V2, UPCASTERS).decode(
            "routeledger.PriceQuoted/1", b'{"at_us": 1}', stream_id="q:1", version=1
        )
    with pytest.raises(InvalidPayload, match="expected int"):
        Codec(V2, UPCASTERS).decode(
            "routeledger.PriceQuoted/1", b'{"at_us": "1", "price": 2}', stream_id="q:1", version=1
        )


def test_registering_an_upcaster_twice_is_an_error() -> None:
    """Each (tag, schema) step has exactly one upcaster."""
    with pytest.raises(UsageError, match="already registered"):
        UPCASTERS.register("routeledger.PriceQuoted", 1)(lambda p: p)


def test_encoded_bytes_do_not_depend_on_the_hash_seed() -> None:
    """D1: the same event encodes to identical bytes under different PYTHONHASHSEEDs."""
    script = textwrap.dedent(
        """
        from tests.adapters.store.test_codec import CODEC, sample
        tags = frozenset(f"tag-{i}" for i in range(50))
        print(CODEC.encode(sample(tags=tags))[1].decode())
        """
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONHASHSEED=seed),
            check=True,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1


def test_values_round_trip_and_bad_value_bytes_are_data_errors() -> None:
    """dumps_value/loads_value round-trip values and reject bad bytes with a DataError."""
    usage = Usage(input_tokens=1, output_tokens=2)
    assert CODEC.loads_value(CODEC.dumps_value(usage), Usage) == usage
    with pytest.raises(DataError, match="not JSON"):
        CODEC.loads_value(b"{", Usage)
    with pytest.raises(DataError, match="expected int"):
        CODEC.loads_value(b'{"input_tokens": "1", "output_tokens": 2}', Usage)
    with pytest.raises(EncodeError):
        CODEC.dumps_value(Usage(input_tokens=2**70, output_tokens=0))


def test_registering_two_classes_under_one_tag_is_an_error() -> None:
    """A tag names exactly one class; a second registration fails at import time."""
    with pytest.raises(UsageError, match="already registered"):

        @event("routeledger.EverythingRecorded", 1, Origin.OBSERVED, registry=LOCAL)
        @attrs.frozen(kw_only=True)
        class Impostor(Event):
            pass


def test_a_schema_1_outcome_decodes_with_nothing_measured_or_announced() -> None:
    """A 0.1 ``AttemptFailed/1`` row upcasts to schema 2 with ``None`` timings and announcements."""
    from routeledger.core.routing.events import AttemptFailed

    payload = (
        b'{"at_us": 5, "request_id": "r", "attempt_id": "a", "credential_id": "c",'
        b' "upstream_model": "m", "failure": "rate_limited", "phase": "before_response",'
        b' "delivered_chars": 0, "hint_us": null, "status": 429, "detail": "", "billed": false}'
    )
    decoded = Codec().decode(
        "routeledger.AttemptFailed/1", payload, stream_id="request:r", version=2
    )
    assert isinstance(decoded, AttemptFailed) and decoded.status == 429
    assert (decoded.ttft_us, decoded.duration_us, decoded.announced) == (None, None, None)
    assert Codec().encode(decoded)[0] == "routeledger.AttemptFailed/2"
