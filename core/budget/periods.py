"""Budget periods: the boundaries of the period containing an engine time (T2).

Calendar periods (day, week, month) are computed with calendar arithmetic in
the account's time zone: a day is local midnight to local midnight (23 or 25
hours across a DST change), a month is the 1st to the 1st. The zone arrives as
a :class:`datetime.tzinfo` from the caller — the core never loads the tz
database itself (that reads files which differ between machines, breaking
D1). Events carry the zone *name* and the computed boundaries, so folding a
log never needs a zone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta, tzinfo
from typing import Final, TypeAlias

from ..errors import UsageError
from ..time import ENGINE_TIME_US_MAX, ENGINE_TIME_US_MIN, from_datetime, to_datetime
from .values import PeriodKind, PeriodSpec

__all__ = ["ZoneResolver", "period_bounds"]

#: Turns a zone name into a tzinfo (``zoneinfo.ZoneInfo`` in adapters, a fixed
#: offset in tests). Called only by deciders, never by ``evolve``.
ZoneResolver: TypeAlias = Callable[[str], tzinfo]

#: The last calendar day whose successor ``datetime`` can still represent.
_LAST_DAY: Final = date(9999, 12, 1)


def _midnight_us(day: date, zone: tzinfo) -> int:
    """Engine time of local midnight starting ``day`` in ``zone``, clamped to the engine range."""
    moment = from_datetime(datetime(day.year, day.month, day.day, tzinfo=zone))
    return min(max(moment, ENGINE_TIME_US_MIN), ENGINE_TIME_US_MAX)


def _next_month(day: date) -> date:
    """The first day of the month after ``day``'s month."""
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def period_bounds(
    period: PeriodSpec, at_us: int, *, anchor_us: int, zones: ZoneResolver
) -> tuple[int, int]:
    """The ``[start_us, end_us)`` of ``period`` containing ``at_us``.

    ``anchor_us`` is where rolling windows start counting (the account's
    opening). A period of kind NONE spans the whole engine time range. The
    end is clamped to ``ENGINE_TIME_US_MAX`` in year 9999.
    """
    kind = period.kind
    if kind is PeriodKind.NONE:
        return ENGINE_TIME_US_MIN, ENGINE_TIME_US_MAX
    if kind is PeriodKind.ROLLING:
        if period.length_us <= 0:
            raise UsageError(f"rolling period needs length_us > 0, got {period.length_us}")
        start = anchor_us + ((at_us - anchor_us) // period.length_us) * period.length_us
        return start, min(start + period.length_us, ENGINE_TIME_US_MAX)
    zone = zones(period.zone)
    local = to_datetime(at_us).astimezone(zone).date()
    if kind is PeriodKind.DAY:
        first = local
        following = local + timedelta(days=1) if local < _LAST_DAY else None
    elif kind is PeriodKind.WEEK:
        first = local - timedelta(days=local.weekday())
        following = first + timedelta(days=7) if first < _LAST_DAY else None
    else:
        first = local.replace(day=1)
        following = _next_month(first) if first < _LAST_DAY else None
    end = ENGINE_TIME_US_MAX if following is None else _midnight_us(following, zone)
    return _midnight_us(first, zone), end
