"""The hand-off of a case to the police: through a pluggable channel, with retries and
backoff, every attempt stored; the live-position link works only while the hand-off is
open, and every read through it is audited.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bangpae.domain import disclosure
from bangpae.domain.access import Policy, Relation
from bangpae.domain.incidents import IncidentRecord
from bangpae.domain.response import (
    HandoffRecord,
)
from bangpae.services.access import actor
from bangpae.services.auth import Principal
from bangpae.services.ports import Clock, Registry
from bangpae.services.queries import audit_read
from bangpae.services.response import HANDOFF_PURPOSE, ResponseRecords, parties_positions

log = logging.getLogger(__name__)


DeliveryStatus = Literal["delivered", "failed", "logged"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one attempt to deliver a hand-off."""

    status: DeliveryStatus
    http_status: int | None = None
    error: str = ""


class Channel(Protocol):
    """A way of handing a case to the police (a signed webhook, an e-mail or SMS sink)."""

    async def send(self, handoff_id: int, attempt: int, body: bytes) -> Delivery:
        """Try once to deliver ``body`` (the case summary as JSON)."""
        ...


def token_hash(token: str) -> str:
    """What is stored of a live-position token."""
    return hashlib.sha256(token.encode()).hexdigest()


def summary_body(summary: Mapping[str, Any]) -> bytes:
    """The case summary as the exact bytes sent (and signed)."""
    return json.dumps(summary, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class HandoffError(ValueError):
    """A hand-off that cannot be made as asked (an unconfigured channel, a closed incident)."""


class Handoffs:
    """Creates hand-offs, delivers them in the background with backoff, closes them."""

    def __init__(
        self,
        store: ResponseRecords,
        clock: Clock,
        channels: Mapping[str, Channel],
        base_url: str,
        retry_base_s: float = 1.0,
        max_attempts: int = 6,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        policy: Policy | None = None,
    ) -> None:
        self.store = store
        self.policy = policy  # without one, the live link shows nothing
        self.clock = clock
        self.channels = dict(channels)
        self.base_url = base_url.rstrip("/")
        self.retry_base_s = retry_base_s
        self.max_attempts = max_attempts
        self._sleep = sleep
        self._tasks: dict[int, asyncio.Task[str]] = {}

    def live_url(self, token: str) -> str:
        """The live-position link of a hand-off."""
        return f"{self.base_url}/api/v1/police/live/{token}"

    def _create(
        self,
        incident_id: int,
        channel: str,
        note: str,
        who: Principal,
        now: float,
        request_id: str | None,
    ) -> tuple[int, str]:
        if channel not in self.channels:
            raise HandoffError(f"channel {channel!r} is not configured")
        incident = self.store.get_incident(incident_id)
        if incident is None:
            return 0, ""
        if incident.status in ("resolved", "false_alarm"):
            raise HandoffError(f"incident {incident_id} is {incident.status}")
        order = store_order(self.store, incident)
        token = secrets.token_urlsafe(32)
        positions = parties_positions(self.store, incident, now)
        summary = {
            "incident": {
                "id": incident.id,
                "kind": incident.kind,
                "priority": incident.priority,
                "status": incident.status,
                "opened_at": disclosure.iso(incident.opened_at),
                "late": incident.late,
                "order_id": incident.order_id,
                "person_id": incident.person_id,
            },
            "order": order,
            "timeline": [
                {
                    "at": disclosure.iso(e["at"]),
                    "action": e["action"],
                    "actor": e["actor"],
                    "note": e["note"],
                }
                for e in incident.timeline
            ],
            "last_known_positions": positions,
            "live_url": self.live_url(token),
            "note": note,
            "handed_off_at": disclosure.iso(now),
            "handed_off_by": who.username,
        }
        # the positions leave the service: the read is audited like any other
        audit_read(
            self.store,
            actor(who),
            who.role,
            f"incident:{incident_id}",
            HANDOFF_PURPOSE,
            ["lat", "lon", "accuracy_m", "fix_time", f"channel={channel}"]
            + [f"basis=incident:{incident_id}"],
            now,
            request_id,
        )
        hid = self.store.create_handoff(
            incident_id, channel, note, summary, token_hash(token), now, actor(who)
        )
        return hid, token

    async def create(
        self,
        incident_id: int,
        channel: str,
        note: str,
        who: Principal,
        request_id: str | None = None,
    ) -> dict[str, Any] | None:
        """Record a hand-off and start delivering it; the live link is returned only here."""
        hid, token = await asyncio.to_thread(
            self._create, incident_id, channel, note, who, self.clock.now(), request_id
        )
        if not hid:
            return None
        self.start(hid)
        record = await asyncio.to_thread(self.store.get_handoff, hid)
        assert record is not None  # created just now, in its own committed transaction
        return {**handoff_public(record), "live_url": self.live_url(token)}

    def start(self, handoff_id: int) -> None:
        """Deliver a hand-off in the background (once at a time per hand-off)."""
        task = self._tasks.get(handoff_id)
        if task is not None and not task.done():
            return
        self._tasks[handoff_id] = asyncio.create_task(
            self.deliver(handoff_id), name=f"handoff-{handoff_id}"
        )

    async def resume(self) -> None:
        """Deliver every hand-off left pending (after a restart)."""
        for hid in await asyncio.to_thread(self.store.pending_handoffs):
            self.start(hid)

    async def stop(self) -> None:
        """Stop delivering; pending hand-offs resume on the next start."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def deliver(self, handoff_id: int) -> str:
        """Attempt delivery until it succeeds, is closed or runs out of attempts.

        The n-th retry waits ``retry_base_s * 2**(n-1)``; every attempt is stored.
        """
        record = await asyncio.to_thread(self.store.get_handoff, handoff_id)
        if record is None or record.status != "pending":
            return "unknown" if record is None else str(record.status)
        channel = self.channels.get(record.channel)
        if channel is None:
            await asyncio.to_thread(
                self.store.record_handoff_attempt,
                handoff_id,
                len(record.attempts) + 1,
                self.clock.now(),
                "failed",
                None,
                f"channel {record.channel!r} is not configured",
                "failed",
            )
            return "failed"
        body = summary_body(record.summary)
        attempt = len(record.attempts)
        while True:
            attempt += 1
            try:
                result = await channel.send(handoff_id, attempt, body)
            except Exception as exc:  # a broken channel counts as a failed attempt
                log.warning("hand-off %d: channel error", handoff_id, exc_info=True)
                result = Delivery("failed", None, f"{type(exc).__name__}: {exc}")
            last = attempt >= self.max_attempts
            final: str | None = None
            if result.status in ("delivered", "logged"):
                final = result.status
            elif last:
                final = "failed"
            await asyncio.to_thread(
                self.store.record_handoff_attempt,
                handoff_id,
                attempt,
                self.clock.now(),
                result.status,
                result.http_status,
                result.error,
                final,
            )
            if final is not None:
                if final == "failed":
                    log.error("hand-off %d undelivered after %d attempts", handoff_id, attempt)
                return final
            await self._sleep(self.retry_base_s * 2 ** (attempt - 1))
            current = await asyncio.to_thread(self.store.get_handoff, handoff_id)
            if current is None or not current.open:
                return "closed"

    def close(self, incident_id: int, handoff_id: int, who: Principal, note: str = "") -> bool:
        """End a hand-off (its live link stops working); False if it is not this incident's."""
        record = self.store.get_handoff(handoff_id)
        if record is None or record.incident_id != incident_id:
            return False
        self.store.close_handoff(handoff_id, self.clock.now(), actor(who), note)
        return True

    def live(self, token: str, request_id: str | None = None) -> dict[str, Any] | None:
        """The live positions behind a hand-off's link, while it is open; audited."""
        if not token or len(token) > 128:
            return None
        record = self.store.open_handoff_by_token(token_hash(token))
        if record is None:
            return None
        if self.policy is None or not self.policy.allows(
            "police", Relation.HANDED_OFF, HANDOFF_PURPOSE
        ):
            return None
        incident = self.store.get_incident(record.incident_id)
        if incident is None:
            return None
        now = self.clock.now()
        positions = parties_positions(self.store, incident, now)
        audit_read(
            self.store,
            f"handoff:{record.id}",
            "police",
            f"incident:{incident.id}",
            HANDOFF_PURPOSE,
            ["lat", "lon", "accuracy_m", "speed_mps", "heading_deg", "fix_time"],
            now,
            request_id,
        )
        return {
            "handoff_id": record.id,
            "incident": {
                "id": incident.id,
                "kind": incident.kind,
                "priority": incident.priority,
                "status": incident.status,
            },
            "positions": positions,
            "at": disclosure.iso(now),
        }


def store_order(store: Registry, incident: IncidentRecord) -> dict[str, Any] | None:
    """The order an incident concerns, as the police need it (None for a person's device)."""
    if incident.order_id is None:
        return None
    order = store.get_order(incident.order_id)
    if order is None:
        return None
    offender = store.get_person(order.offender_id)
    victim = store.get_person(order.victim_id)
    return {
        "id": order.id,
        "profile": order.profile,
        "keep_away_m": order.keep_away_m,
        "offender": {"id": order.offender_id, "name": offender.name if offender else None},
        "victim": {"id": order.victim_id, "name": victim.name if victim else None},
        "valid_until": None if order.valid_until is None else disclosure.iso(order.valid_until),
    }


def handoff_public(record: HandoffRecord) -> dict[str, Any]:
    """A hand-off as staff see it (the live link's token is never shown again)."""
    return {
        "id": record.id,
        "incident_id": record.incident_id,
        "channel": record.channel,
        "status": record.status,
        "open": record.open,
        "note": record.note,
        "created_at": disclosure.iso(record.created_at),
        "created_by": record.created_by,
        "closed_at": None if record.closed_at is None else disclosure.iso(record.closed_at),
        "closed_by": record.closed_by,
        "attempts": [
            {
                "attempt": a.attempt,
                "at": disclosure.iso(a.at),
                "status": a.status,
                "http_status": a.http_status,
                "error": a.error,
            }
            for a in record.attempts
        ],
    }
