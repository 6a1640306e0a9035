"""What the services need from the world outside them, as typed ports.

The shapes more than one service shares live here: where time comes from, where
stored events are announced and followed, and the slices of the store several services
read. Ports used by one service alone are declared beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from bangpae.domain.audit import AuditEntry
from bangpae.domain.incidents import IncidentRecord
from bangpae.domain.model import Device, Event, Order, Person


class Clock(Protocol):
    """Where time comes from."""

    def now(self) -> float:
        """Seconds since the epoch, UTC."""
        ...


class Subscription(Protocol):
    """A subscriber's queue of published events."""

    dropped: int  # events a bounded queue lost for being full (its oldest)

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


# -- what several services read of the store ------------------------------------------
# Each is a slice of the concrete store's methods (``adapters.store``), copied with their
# signatures: the store satisfies them structurally, and a service asks for no more.


class AuditLog(Protocol):
    """The append-only audit log."""

    def audit_append(self, entry: AuditEntry) -> int:
        """Append one record; its id."""
        ...


class Registry(Protocol):
    """People, their devices and the orders between them."""

    def get_person(self, person_id: int) -> Person | None:
        """A person, or None."""
        ...

    def get_device(self, ref: int | str) -> Device | None:
        """A device by id or identifier, or None."""
        ...

    def device_ids_of_person(self, person_id: int) -> list[int]:
        """The ids of a person's devices."""
        ...

    def get_order(self, order_id: int) -> Order | None:
        """An order, or None."""
        ...

    def orders_for_person(self, person_id: int) -> list[Order]:
        """The orders a person is a party to."""
        ...


class IncidentLookup(Protocol):
    """Incidents by id."""

    def get_incident(self, incident_id: int) -> IncidentRecord | None:
        """An incident with its timeline, or None."""
        ...


class IncidentTimeline(IncidentLookup, Protocol):
    """Incidents by id, and entries written to their timelines."""

    def add_incident_entry(
        self,
        incident_id: int,
        action: str,
        actor: str,
        at: float,
        note: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Add an entry (a checklist step, a call) to the timeline of an incident not closed."""
        ...
