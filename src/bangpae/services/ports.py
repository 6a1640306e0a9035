"""What the services need from the world outside them, as typed ports.

The shapes more than one service shares live here: where time comes from, and where
stored events are announced and followed. Ports used by
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


class Subscription(Protocol):
    """A subscriber's queue of published events."""

    async def get(self) -> Event:
        """The next event, waiting for one."""
        ...

    def get_nowait(self) -> Event:
        """The next event (the queue must not be empty)."""
        ...

    def empty(self) -> bool:
        """Whether no event is waiting."""
        ...


class Bus(Protocol):
    """Where decided events go after they are stored."""

    async def publish(self, events: Sequence[Event]) -> None:
        """Deliver events to subscribers."""
        ...

    def subscribe(self, lossless: bool = False) -> Subscription:
        """A queue of every event published from now on: bounded, dropping its oldest
        when full (a screen), unless ``lossless`` (a reaction)."""
        ...

    def unsubscribe(self, q: Subscription) -> None:
        """Stop delivering to a queue."""
        ...
