"""Engine time: integer microseconds since the Unix epoch, in UTC.

Why integers rather than aware datetimes:

* exact: adding a cooldown of 1.5 s or a TTL of 300 s never rounds, and two
  processes folding the same log compute bit-identical deadlines (D1);
* totally ordered and cheap: comparisons and arithmetic in the routing hot path
  are plain ``int`` operations, no tz normalisation, no allocation;
* unambiguous: there is no naive/aware confusion and no DST fold; calendar
  arithmetic (budget periods) converts to ``datetime`` at that one place only;
* portable: JSON integers, SQL ``bigint``, and 64 bits last until year 294,247.

The core never reads a clock (T1): every ``now_us`` is an argument.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias

from .errors import UsageError

#: Engine time in microseconds since 1970-01-01T00:00:00Z.
Micros: TypeAlias = int

US_PER_MS: Final = 1_000
US_PER_S: Final = 1_000_000
US_PER_MIN: Final = 60 * US_PER_S
US_PER_H: Final = 60 * US_PER_MIN
US_PER_DAY: Final = 24 * US_PER_H

#: Earliest engine time an event may carry (the epoch itself).
ENGINE_TIME_US_MIN: Final = 0
#: Latest engine time an event may carry: 9999-12-31T23:59:59.999999Z, the
#: last instant ``datetime`` can represent, so every stamp converts back.
ENGINE_TIME_US_MAX: Final = 253_402_300_799_999_999

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def is_engine_time(value: object) -> bool:
    """Tell whether ``value`` is a valid engine time (an ``int``, not a ``bool``, in range)."""
    return type(value) is int and ENGINE_TIME_US_MIN <= value <= ENGINE_TIME_US_MAX


def to_datetime(at_us: Micros) -> datetime:
    """Convert engine time to an aware UTC datetime (for display and calendar maths)."""
    return _EPOCH + timedelta(microseconds=at_us)


def from_datetime(moment: datetime) -> Micros:
    """Convert an aware datetime to engine time; naive datetimes are rejected."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UsageError(f"engine time needs an aware datetime, got naive {moment!r}")
    delta = moment - _EPOCH
    return (delta.days * US_PER_DAY) + (delta.seconds * US_PER_S) + delta.microseconds


def format_us(at_us: Micros) -> str:
    """Render engine time as RFC 3339 with microseconds, e.g. ``2026-11-22T02:18:00.000000Z``."""
    return to_datetime(at_us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
