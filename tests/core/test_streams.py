"""Stream ids: one builder per kind, and the limits that keep every id storable."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routeledger.core import streams
from routeledger.core.events import STREAM_ID_LENGTH_MAX, stream_id_problem

_KINDS = (
    (streams.request_stream, streams.REQUEST),
    (streams.credential_stream, streams.CREDENTIAL),
    (streams.installation_stream, streams.INSTALLATION),
    (streams.account_stream, streams.ACCOUNT),
    (streams.hold_stream, streams.HOLD),
)
_ID = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)


@given(key=_ID)
def test_every_builder_prefixes_its_kind(key: str) -> None:
    """Each builder's id is its kind's prefix and the key, and only the pair builder makes a pair id."""
    for build, kind in _KINDS:
        stream_id = build(key)
        assert stream_id == kind + key
        assert not streams.is_pair_stream(stream_id)


def test_the_longest_legal_ids_make_storable_stream_ids() -> None:
    """At the id limits every stream id is at most STREAM_ID_LENGTH_MAX and valid."""
    pair = streams.pair_stream(
        "c" * streams.CREDENTIAL_ID_LENGTH_MAX, "m" * streams.MODEL_NAME_LENGTH_MAX
    )
    assert streams.is_pair_stream(pair)
    longest = [pair] + [build("x" * streams.ID_LENGTH_MAX) for build, _ in _KINDS]
    for stream_id in longest:
        assert len(stream_id) <= STREAM_ID_LENGTH_MAX
        assert stream_id_problem(stream_id) is None
