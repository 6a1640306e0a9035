"""What the services need from the world outside them, as typed ports.

The shapes more than one service shares live here: where time comes from. Ports used by
one service alone are still declared beside it.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """Where time comes from."""

    def now(self) -> float:
        """Seconds since the epoch, UTC."""
        ...
