"""The control centre's response: escalation timers, checklists, dispatch suggestions.

- :class:`Escalation` pages the supervisor about critical incidents nobody has taken
  in hand, driven by ``now`` (a background task ticks it on the app clock).
- :func:`incident_response` shows an incident's playbook as a checklist, with its
  response times; :func:`mark_step` ticks a step off.
- :func:`suggest_officers` ranks field officers by distance to the incident.
- the hand-off to the police is in :mod:`bangpae.services.handoffs`.

Every read that returns a position writes an audit record.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from bangpae.domain import disclosure, incidents, playbooks
from bangpae.domain.access import Purpose
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
from bangpae.services.ports import AuditLog, Bus, Clock, IncidentTimeline, Registry
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


class ResponseRecords(AuditLog, Registry, IncidentTimeline, Protocol):
    """What the control centre's response reads and records (``adapters.store.response``)."""

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
