"""Injectable clocks: services take a ``Clock`` so tests and backtests control time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...

    def now_ms(self) -> int: ...

    def monotonic_ns(self) -> int: ...


class SystemClock:
    """Wall clock and monotonic clock of the machine."""

    def now_ns(self) -> int:
        return time.time_ns()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


class ManualClock:
    """A clock that only moves when told to (tests, backtest)."""

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def now_ms(self) -> int:
        return self._now // 1_000_000

    def monotonic_ns(self) -> int:
        return self._now

    def advance(self, seconds: float = 0.0, *, ns: int = 0) -> None:
        self._now += int(seconds * 1_000_000_000) + ns


SYSTEM_CLOCK = SystemClock()
