"""What the services need from the world outside them, as typed ports.

The shapes more than one service shares live here: where time comes from, and where
stored events are announced. Ports used by
one service alone are still declared beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bangpae.domain.model import Event


class Clock(Protocol):
    """Where time comes from."""

    def now(self) -> float:
        """Seconds since the epoch, UTC."""
        ...


class Bus(Protocol):
    """Where decided events go after they are stored."""

    async def publish(self, events: Sequence[Event]) -> None:
        """Deliver events to subscribers."""
        ...
