"""T2: period boundaries use calendar arithmetic in the account's zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.core.budget.periods import period_bounds
from routeledger.core.budget.values import PeriodKind, PeriodSpec
from routeledger.core.errors import UsageError
from routeledger.core.time import ENGINE_TIME_US_MAX, ENGINE_TIME_US_MIN, US_PER_H, from_datetime

from ._support import zones


def _us(*args: int, tz: object = UTC) -> int:
    return from_datetime(datetime(*args, tzinfo=tz))  # type: ignore[misc,arg-type]


def test_t2_day_in_a_fixed_offset_zone() -> None:
    """T2: a day in UTC+05:30 runs from local midnight to local midnight."""
    at = _us(2027, 1, 15, 20, 0)  # 01:30 on the 16th in UTC+05:30
    start, end = period_bounds(
        PeriodSpec(kind=PeriodKind.DAY, zone="UTC+05:30"), at, anchor_us=0, zones=zones
    )
    assert start == _us(2027, 1, 15, 18, 30)
    assert end - start == 24 * US_PER_H


def test_t2_dst_day_is_23_hours_long() -> None:
    """T2: the spring-forward day in Europe/Paris is 23 hours long (calendar, not 86400 s)."""
    paris = ZoneInfo("Europe/Paris")
    at = _us(2027, 3, 28, 12, 0)
    start, end = period_bounds(
        PeriodSpec(kind=PeriodKind.DAY, zone="Europe/Paris"),
        at,
        anchor_us=0,
        zones=lambda name: paris,
    )
    assert start == _us(2027, 3, 28, 0, 0, tz=paris)
    assert end - start == 23 * US_PER_H


def test_t2_week_starts_on_monday() -> None:
    """T2: a week runs Monday 00:00 to the next Monday 00:00 in the zone."""
    at = _us(2027, 1, 15, 8, 0)  # a Friday
    start, end = period_bounds(
        PeriodSpec(kind=PeriodKind.WEEK, zone="UTC"), at, anchor_us=0, zones=zones
    )
    assert (start, end) == (_us(2027, 1, 11), _us(2027, 1, 18))


@pytest.mark.parametrize(
    ("moment", "first", "following"),
    [
        ((2027, 1, 31, 23, 59), (2027, 1, 1), (2027, 2, 1)),
        ((2028, 2, 29, 12, 0), (2028, 2, 1), (2028, 3, 1)),
        ((2027, 12, 31, 12, 0), (2027, 12, 1), (2028, 1, 1)),
    ],
)
def test_t2_month_boundaries(
    moment: tuple[int, ...], first: tuple[int, ...], following: tuple[int, ...]
) -> None:
    """T2: months run from the 1st to the 1st, across month lengths, leap years and year ends."""
    start, end = period_bounds(
        PeriodSpec(kind=PeriodKind.MONTH, zone="UTC"), _us(*moment), anchor_us=0, zones=zones
    )
    assert (start, end) == (_us(*first), _us(*following))


def test_t2_rolling_windows_are_anchored_at_opening() -> None:
    """T2: rolling windows of fixed length count from the anchor (the account's opening)."""
    spec = PeriodSpec(kind=PeriodKind.ROLLING, length_us=10)
    assert period_bounds(spec, 125, anchor_us=100, zones=zones) == (120, 130)
    assert period_bounds(spec, 95, anchor_us=100, zones=zones) == (90, 100)
    with pytest.raises(UsageError):
        period_bounds(PeriodSpec(kind=PeriodKind.ROLLING), 1, anchor_us=0, zones=zones)


def test_t2_no_period_spans_all_engine_time() -> None:
    """T2: an account without a period never rolls over."""
    assert period_bounds(PeriodSpec(), 5, anchor_us=0, zones=zones) == (
        ENGINE_TIME_US_MIN,
        ENGINE_TIME_US_MAX,
    )


@pytest.mark.parametrize("kind", [PeriodKind.DAY, PeriodKind.WEEK, PeriodKind.MONTH])
def test_t2_periods_at_the_ends_of_engine_time_are_clamped(kind: PeriodKind) -> None:
    """T2: a period in December 9999 ends at ENGINE_TIME_US_MAX; one before 1970 starts at 0."""
    spec = PeriodSpec(kind=kind, zone="UTC")
    _, end = period_bounds(spec, ENGINE_TIME_US_MAX, anchor_us=0, zones=zones)
    assert end == ENGINE_TIME_US_MAX
    west = PeriodSpec(kind=kind, zone="UTC-08:00")
    start, _ = period_bounds(west, 0, anchor_us=0, zones=zones)
    assert start == ENGINE_TIME_US_MIN


@given(
    at=st.integers(min_value=0, max_value=_us(9999, 11, 1)),
    kind=st.sampled_from([PeriodKind.DAY, PeriodKind.WEEK, PeriodKind.MONTH]),
    zone=st.sampled_from(["UTC", "UTC+05:30", "UTC-08:00"]),
)
def test_t2_the_period_contains_its_instant(at: int, kind: PeriodKind, zone: str) -> None:
    """T2: for every instant, start <= at < end, and the next period starts where this one ends."""
    spec = PeriodSpec(kind=kind, zone=zone)
    start, end = period_bounds(spec, at, anchor_us=0, zones=zones)
    assert start <= at < end
    next_start, _ = period_bounds(spec, end, anchor_us=0, zones=zones)
    assert next_start == end
