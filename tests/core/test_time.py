"""Engine time: integer microseconds, conversions both ways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.core.errors import UsageError
from routeledger.core.time import (
    ENGINE_TIME_US_MAX,
    ENGINE_TIME_US_MIN,
    US_PER_DAY,
    US_PER_H,
    US_PER_MIN,
    US_PER_MS,
    US_PER_S,
    format_us,
    from_datetime,
    is_engine_time,
    to_datetime,
)


@given(st.integers(min_value=ENGINE_TIME_US_MIN, max_value=ENGINE_TIME_US_MAX))
def test_engine_time_round_trips_through_datetime_exactly(at_us: int) -> None:
    """from_datetime(to_datetime(t)) == t for every representable engine time (no rounding)."""
    assert from_datetime(to_datetime(at_us)) == at_us


def test_unit_constants_are_consistent() -> None:
    """The unit constants multiply up from microseconds."""
    assert US_PER_S == 1000 * US_PER_MS
    assert US_PER_DAY == 24 * US_PER_H == 24 * 60 * US_PER_MIN


def test_offsets_are_honoured_and_naive_datetimes_refused() -> None:
    """An aware datetime in any offset maps to the same instant; a naive one is a UsageError."""
    plus_two = datetime(2026, 11, 22, 4, 0, tzinfo=timezone(timedelta(hours=2)))
    assert from_datetime(plus_two) == from_datetime(datetime(2026, 11, 22, 2, 0, tzinfo=UTC))
    with pytest.raises(UsageError, match="naive"):
        from_datetime(datetime(2026, 11, 22))


def test_format_and_validity() -> None:
    """format_us renders RFC 3339 UTC; is_engine_time accepts only in-range ints."""
    assert format_us(0) == "1970-01-01T00:00:00.000000Z"
    assert format_us(ENGINE_TIME_US_MAX) == "9999-12-31T23:59:59.999999Z"
    assert is_engine_time(5)
    assert not is_engine_time(True)
    assert not is_engine_time(-1)
    assert not is_engine_time(ENGINE_TIME_US_MAX + 1)
    assert not is_engine_time(1.0)
