"""Engine time and waiting, and request ids: real by default (the fakes are in ``testing``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "SystemClock", "uuid_ids"]


class Clock(Protocol):
    """Engine time and waiting; real by default, fake in tests."""

    def now_us(self) -> int:
        """Engine time now (microseconds since the epoch)."""

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds``."""

    async def asleep(self, seconds: float) -> None:
        """Wait ``seconds`` without blocking the event loop."""


class SystemClock:
    """The wall clock."""

    def now_us(self) -> int:
        return time.time_ns() // 1_000

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def uuid_ids() -> Callable[[], str]:
    """Random request ids (uuid4 hex): unique across processes without coordination (X3)."""
    return lambda: uuid.uuid4().hex
