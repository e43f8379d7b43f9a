"""A fake clock and deterministic ids for tests, simulations and benchmarks."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import attrs

from routeledger.core.time import US_PER_S

__all__ = ["FakeClock", "counter_ids"]


@attrs.define
class FakeClock:
    """A clock that only moves when told to (or when something sleeps on it)."""

    now: int = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    slept_s: list[float] = attrs.field(factory=list)

    def now_us(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * US_PER_S)

    def sleep(self, seconds: float) -> None:
        self.slept_s.append(seconds)
        self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)


def counter_ids(prefix: str = "req") -> Callable[[], str]:
    """Deterministic request ids for tests and simulations: ``req-1``, ``req-2``, ..."""
    numbers = itertools.count(1)
    return lambda: f"{prefix}-{next(numbers)}"
