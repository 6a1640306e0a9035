"""The one place that reads the wall clock."""

from __future__ import annotations

import time


class SystemClock:
    """Wall-clock time in POSIX seconds."""

    def now(self) -> float:
        """Seconds since the epoch, UTC."""
        return time.time()


class ManualClock:
    """A clock that moves only when told: for tests and replays."""

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        """The time this clock was set to."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self._now += seconds

    def set(self, now: float) -> None:
        """Set the clock."""
        self._now = now
