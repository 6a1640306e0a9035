"""The control centre's response: escalation timers, checklists, dispatch suggestions, hand-offs.

- :class:`Escalation` pages the supervisor about critical incidents nobody has taken
  in hand, driven by ``now`` (a background task ticks it on the app clock).
- :func:`incident_response` shows an incident's playbook as a checklist, with its
  response times; :func:`mark_step` ticks a step off.
- :func:`suggest_officers` ranks field officers by distance to the incident.
- :class:`Handoffs` hands a case to the police through a pluggable channel, with
  retries and backoff, every attempt stored; the live-position link works only
  while the hand-off is open.

Every read that returns a position writes an audit record.
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

from bangpae.domain import disclosure, incidents, playbooks
from bangpae.domain.access import Policy, Purpose, Relation
from bangpae.domain.geodesy import geodesic_distance_m
from bangpae.domain.incidents import IncidentRecord
from bangpae.domain.model import Event, EventKind, Fix, Person, make_event
from bangpae.domain.response import (
    ESCALATE_AFTER_S,
    PAGE_EVERY_S,
    HandoffRecord,
    Unacknowledged,
    next_page_at,
    response_times,
)
from bangpae.services.access import actor
from bangpae.services.auth import Principal
from bangpae.services.ports import AuditLog, Bus, Clock, IncidentLookup, Registry
from bangpae.services.queries import audit_read

log = logging.getLogger(__name__)

HANDOFF_PURPOSE = Purpose.POLICE_HANDOFF.value
DISPATCH_PURPOSE = Purpose.DISPATCH.value
VICTIM_CENTRED = incidents.VICTIM_CENTRED


class Escalations(Protocol):
    """What paging the supervisor reads and records in the store."""

    def unacknowledged_incidents(
        self, priority: str = "critical", opened_by: float | None = None
    ) -> list[Unacknowledged]:
        """Incidents still ``open`` (nobody acknowledged them) at this priority, oldest first."""
        ...

    def record_escalation(
        self, incident_id: int, page: int, at: float, data: dict[str, Any], event: Event
    ) -> bool:
        """Write page number ``page`` to the timeline unless the incident was taken in
        hand or that page was written already (by another worker); return whether it was
        written."""
        ...


class ResponseRecords(AuditLog, Registry, IncidentLookup, Protocol):
    """What the control centre's response reads and records (``adapters.store.response``)."""

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

    def latest_fix_of_person(self, person_id: int) -> Fix | None:
        """The newest live, valid fix of any of a person's devices."""
        ...

    def officer_positions(self) -> list[tuple[Person, Fix]]:
        """Every field officer with a device that reported a valid position: the newest one."""
        ...

    def create_handoff(
        self,
        incident_id: int,
        channel: str,
        note: str,
        summary: dict[str, Any],
        token_hash: str,
        at: float,
        actor: str,
    ) -> int:
        """Record a hand-off (pending delivery) and note it on the incident's timeline."""
        ...

    def get_handoff(self, handoff_id: int) -> HandoffRecord | None:
        """A hand-off with its attempts."""
        ...

    def open_handoff_by_token(self, token_hash: str) -> HandoffRecord | None:
        """The open hand-off a live-position token belongs to (None once closed)."""
        ...

    def pending_handoffs(self) -> list[int]:
        """Ids of open hand-offs whose delivery has not finished (to resume after a restart)."""
        ...

    def record_handoff_attempt(
        self,
        handoff_id: int,
        attempt: int,
        at: float,
        status: str,
        http_status: int | None = None,
        error: str = "",
        final_status: str | None = None,
    ) -> None:
        """Store one delivery attempt; a ``final_status`` (delivered, failed, logged) ends it."""
        ...

    def close_handoff(self, handoff_id: int, at: float, actor: str, note: str = "") -> None:
        """End a hand-off: its live-position link stops working at once."""
        ...


# -- escalation ------------------------------------------------------------------------------


class Escalation:
    """Pages the supervisor about unacknowledged critical incidents: ``step(now)`` does it.

    The schedule lives in the timeline (``escalated`` entries), so a restart neither
    forgets nor repeats a page, and two workers never both write the same one.
    """

    def __init__(
        self,
        store: Escalations,
        bus: Bus,
        after_s: float = ESCALATE_AFTER_S,
        every_s: float = PAGE_EVERY_S,
    ) -> None:
        self.store = store
        self.bus = bus
        self.after_s = after_s
        self.every_s = every_s

    def _due(self, now: float) -> list[tuple[Unacknowledged, Event]]:
        out = []
        # none opened later than after_s ago can be due: their first page comes after_s on
        for u in self.store.unacknowledged_incidents("critical", opened_by=now - self.after_s):
            if now < next_page_at(u.opened_at, u.last_page_at, self.after_s, self.every_s):
                continue
            page = u.pages + 1
            data = {
                "incident_id": u.id,
                "incident_kind": u.kind,
                "priority": u.priority,
                "to": "supervisor",
                "page": page,
                "waited_s": round(now - u.opened_at, 3),
            }
            event = make_event(
                EventKind.INCIDENT_ESCALATED,
                now,
                u.id,
                page,
                order_id=u.order_id,
                person_id=u.person_id,
                data=data,
            )
            if self.store.record_escalation(u.id, page, now, data, event):
                out.append((u, event))
        return out

    async def step(self, now: float) -> list[Event]:
        """Write and publish every page due at ``now``; return the pages' events."""
        due = await asyncio.to_thread(self._due, now)
        events = [e for _, e in due]
        if events:
            for u, e in due:
                log.warning(
                    "incident %d (%s) unacknowledged for %.0f s: supervisor paged (%d)",
                    u.id,
                    u.kind,
                    e.data["waited_s"],
                    e.data["page"],
                )
            await self.bus.publish(events)
        return events


async def run_escalation(escalation: Escalation, clock: Clock, tick_s: float = 1.0) -> None:
    """Tick the escalation timers every ``tick_s`` on the app clock, until cancelled."""
    while True:
        await asyncio.sleep(tick_s)
        try:
            await escalation.step(clock.now())
        except Exception:  # a failed tick is retried on the next one
            log.exception("escalation tick failed")


# -- checklists and response times -----------------------------------------------------------


def profile_of(store: Registry, incident: IncidentRecord) -> str:
    """The playbook profile of an incident: its order's, else its person's first order's."""
    if incident.order_id is not None:
        order = store.get_order(incident.order_id)
        if order is not None:
            return str(order.profile)
    if incident.person_id is not None:
        orders = store.orders_for_person(incident.person_id)
        if orders:
            return str(orders[0].profile)
    return "kr"


def incident_response(store: ResponseRecords, incident_id: int) -> dict[str, Any] | None:
    """An incident's checklist, response times and pages so far (None: no such incident)."""
    incident = store.get_incident(incident_id)
    if incident is None:
        return None
    profile = profile_of(store, incident)
    timeline = incident.timeline
    pages = [e for e in timeline if e["action"] == "escalated"]
    return {
        "incident_id": incident.id,
        "kind": incident.kind,
        "priority": incident.priority,
        "status": incident.status,
        "profile": profile,
        "times": response_times(incident.opened_at, timeline),
        "escalations": len(pages),
        "last_escalated_at": None if not pages else disclosure.iso(pages[-1]["at"]),
        "checklist": playbooks.incident_checklist(profile, incident.kind, timeline).as_dict(),
    }


class UnknownStep(ValueError):
    """A step the incident's playbook does not have."""


def mark_step(
    store: ResponseRecords,
    incident_id: int,
    step_id: str,
    who: Principal,
    now: float,
    note: str = "",
) -> dict[str, Any] | None:
    """Tick a checklist step off (a timeline ``step`` entry); return the response view."""
    incident = store.get_incident(incident_id)
    if incident is None:
        return None
    profile = profile_of(store, incident)
    steps = {s.id for s in playbooks.playbook(profile, incident.kind).steps}
    if step_id not in steps:
        raise UnknownStep(f"the {profile} playbook for {incident.kind} has no step {step_id!r}")
    store.add_incident_entry(incident_id, "step", actor(who), now, note, {"step": step_id})
    return incident_response(store, incident_id)


# -- positions -------------------------------------------------------------------------------


def _position(party: str, person_id: int, fix: Fix, now: float) -> dict[str, Any]:
    return {
        "party": party,
        "person_id": person_id,
        "lat": round(fix.lat, 6),
        "lon": round(fix.lon, 6),
        "accuracy_m": fix.accuracy_m,
        "speed_mps": fix.speed_mps,
        "heading_deg": fix.heading_deg,
        "fix_time": disclosure.iso(fix.fix_time),
        "age_s": round(max(now - fix.fix_time, 0.0), 1),
    }


def parties_positions(
    store: ResponseRecords, incident: IncidentRecord, now: float
) -> dict[str, dict[str, Any] | None]:
    """The last known positions of the people an incident is about."""
    out: dict[str, dict[str, Any] | None] = {}
    order = store.get_order(incident.order_id) if incident.order_id is not None else None
    if order is not None:
        for party, pid in (("offender", order.offender_id), ("victim", order.victim_id)):
            fix = store.latest_fix_of_person(pid)
            out[party] = None if fix is None else _position(party, pid, fix, now)
    elif incident.person_id is not None:
        person = store.get_person(incident.person_id)
        party = person.kind.value if person is not None else "person"
        fix = store.latest_fix_of_person(incident.person_id)
        out[party] = None if fix is None else _position(party, incident.person_id, fix, now)
    return out


def _target_of(
    incident: IncidentRecord, positions: dict[str, dict[str, Any] | None]
) -> dict[str, Any] | None:
    """Where an officer goes for an incident: her for one about her safety, else him."""
    prefer = ("victim", "offender") if incident.kind in VICTIM_CENTRED else ("offender", "victim")
    order = [p for p in prefer if p in positions] + [p for p in positions if p not in prefer]
    return next((positions[p] for p in order if positions.get(p) is not None), None)


def dispatch_eta_s(
    store: ResponseRecords, incident_id: int, officer_id: int, speed_kmh: float, now: float
) -> float | None:
    """The officer's travel time to the incident when dispatched, as the suggestions
    reckon it (None: a position is unknown). Kept with the dispatch, so that she can be
    told roughly when help arrives (docs/sos.md); no position leaves this function."""
    incident = store.get_incident(incident_id)
    if incident is None:
        return None
    target = _target_of(incident, parties_positions(store, incident, now))
    fix = store.latest_fix_of_person(officer_id)
    if target is None or fix is None:
        return None
    d = geodesic_distance_m(target["lat"], target["lon"], fix.lat, fix.lon)
    return round(d / (speed_kmh / 3.6), 1)


def suggest_officers(
    store: ResponseRecords,
    incident_id: int,
    speed_kmh: float,
    who: Principal,
    now: float,
    request_id: str | None = None,
) -> dict[str, Any] | None:
    """Field officers with a reported position, nearest first, with travel time; audited."""
    incident = store.get_incident(incident_id)
    if incident is None:
        return None
    target = _target_of(incident, parties_positions(store, incident, now))
    officers: list[dict[str, Any]] = []
    if target is not None:
        mps = speed_kmh / 3.6
        for person, fix in store.officer_positions():
            d = geodesic_distance_m(target["lat"], target["lon"], fix.lat, fix.lon)
            officers.append(
                {
                    "officer_id": person.id,
                    "name": person.name,
                    "device_id": fix.device_id,
                    "distance_m": round(d, 1),
                    "eta_s": round(d / mps, 1),
                    "lat": round(fix.lat, 6),
                    "lon": round(fix.lon, 6),
                    "fix_time": disclosure.iso(fix.fix_time),
                    "fix_age_s": round(max(now - fix.fix_time, 0.0), 1),
                }
            )
        officers.sort(key=lambda o: (o["distance_m"], o["officer_id"]))
    audit_read(
        store,
        actor(who),
        who.role,
        f"incident:{incident_id}",
        DISPATCH_PURPOSE,
        ["lat", "lon", "officers", f"count={len(officers)}", f"basis=incident:{incident_id}"],
        now,
        request_id,
    )
    return {
        "incident_id": incident_id,
        "speed_kmh": speed_kmh,
        "target": target,
        "officers": officers,
    }


# -- police hand-off -------------------------------------------------------------------------

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
