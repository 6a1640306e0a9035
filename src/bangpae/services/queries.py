"""Audited reads for the consoles: every read that returns a position writes an audit record."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from bangpae.domain import disclosure, incidents, notices
from bangpae.domain.audit import AuditEntry
from bangpae.domain.model import Device, Order, StoredFix
from bangpae.engine.engine import Engine
from bangpae.services import sos
from bangpae.services.access import actor
from bangpae.services.auth import Principal
from bangpae.services.ports import AuditLog, IncidentLookup, Registry


class ConsoleReads(AuditLog, Registry, IncidentLookup, Protocol):
    """What the consoles' audited reads read and record in the store."""

    def fixes_for_device(
        self,
        device_id: int,
        limit: int = 100,
        before_id: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StoredFix]:
        """A device's fixes, newest first; ``before_id`` (the last id seen) continues a
        page; ``since`` / ``until`` bound the fix times (both included)."""
        ...

    def incident_ids_of_orders(self, order_ids: Sequence[int], kinds: Iterable[str]) -> list[int]:
        """The ids of the incidents of these orders and kinds, whatever their status."""
        ...

    def audit_about(
        self,
        subjects: Sequence[str],
        person_id: int | None = None,
        exclude_actor: str | None = None,
        action: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Audit records whose subject is one of ``subjects`` (exactly, or as its first
        part before a ``/``), or names ``person:<person_id>`` last; newest first."""
        ...


def audit_read(
    store: AuditLog,
    actor: str,
    role: str,
    subject: str,
    purpose: str,
    fields: list[str],
    now: float,
    request_id: str | None,
) -> None:
    """The audit record of one read that returned a position."""
    store.audit_append(
        AuditEntry(
            actor=actor,
            role=role,
            action="read_position",
            subject=subject,
            purpose=purpose,
            fields=fields,
            at=now,
            request_id=request_id,
        )
    )


def _audit(
    store: AuditLog,
    who: Principal,
    subject: str,
    purpose: str,
    fields: list[str],
    now: float,
    request_id: str | None,
) -> None:
    audit_read(store, actor(who), who.role, subject, purpose, fields, now, request_id)


VICTIM_READ_FIELDS = ("lat", "lon", "accuracy_m", "heading_deg", "speed_mps")


def victim_status(
    store: ConsoleReads,
    engine: Engine,
    who: Principal,
    now: float,
    request_id: str | None = None,
    orders: list[Order] | None = None,
) -> dict[str, Any]:
    """The protected person's own orders, shaped by the disclosure policy, audited.

    ``orders`` may carry her orders already read (a live stream reads them once).
    """
    if who.person_id is None:
        return {"orders": []}
    mine = orders if orders is not None else store.orders_for_person(who.person_id)
    status, reads = victim_view(engine, who, now, mine)
    for record in victim_reads(who, reads, now, request_id):
        store.audit_append(record)
    return status


def victim_reads(
    who: Principal, subjects: list[str], now: float, request_id: str | None = None
) -> list[AuditEntry]:
    """The audit records of her reading these subjects' positions (a live stream's go in
    with the batch instead)."""
    return [
        AuditEntry(
            actor(who),
            who.role,
            "read_position",
            subject,
            "victim_safety",
            VICTIM_READ_FIELDS,
            at=now,
            request_id=request_id,
        )
        for subject in subjects
    ]


def victim_view(
    engine: Engine, who: Principal, now: float, orders: list[Order]
) -> tuple[dict[str, Any], list[str]]:
    """Her status from her orders and the engine's live state, and the subjects whose
    position it shows (each such read must be audited before she gets it)."""
    out = []
    reads: list[str] = []
    if who.person_id is None:
        return {"orders": []}, reads
    for order in orders:
        if order.victim_id != who.person_id or not order.active(now):
            continue
        view = engine.order_view(order.id, now)
        if view is None:
            continue
        state = disclosure.OrderState(
            # a profile may withhold a tier from her (fr: the pre-alert); she is shown clear
            shown=notices.victim_tier(order.profile, view.shown_tier),
            tier=view.tier,
            offender_fix=view.offender,
            victim_fix=view.victim_trusted,
            confirmed=view.victim_confirmed,
            paused=view.misuse_paused,
            grid=view.grid,
            reveal_radius_m=view.reveal_radius_m,
            notify_radius_m=view.notify_radius_m,
            stale_after_s=order.stale_after_s,
        )
        entry = {"order_id": order.id, **disclosure.victim_view(state, now)}
        # her own order's radii are hers to know: they say nothing of where he is
        # (docs/disclosure.md, "What the app teaches her")
        entry["radii"] = {
            "notify_m": order.notify_radius_m,
            "reveal_m": order.reveal_radius_m,
            "breach_m": order.keep_away_m,
        }
        if entry["offender"] is not None:
            reads.append(f"order:{order.id}/offender:{order.offender_id}")
        out.append(entry)
    return {"orders": out}, reads


def device_fixes(
    store: ConsoleReads,
    who: Principal,
    device: Device,
    limit: int,
    before_id: int | None,
    purpose: str,
    now: float,
    request_id: str | None = None,
    basis: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> dict[str, Any]:
    """A device's stored fixes for staff, newest first, with a cursor, between ``since`` and
    ``until`` (the times the basis covers); audited with the purpose, the basis and those
    times (see docs/access-policy.md)."""
    rows = store.fixes_for_device(
        device.id, limit=limit, before_id=before_id, since=since, until=until
    )
    window = ([f"from={disclosure.iso(since)}"] if since is not None else []) + (
        [f"to={disclosure.iso(until)}"] if until is not None else []
    )
    _audit(
        store,
        who,
        f"device:{device.id}",
        purpose,
        ["lat", "lon", "accuracy_m", "fix_time", f"count={len(rows)}"]
        + ([f"basis={basis}"] if basis else [])
        + window,
        now,
        request_id,
    )
    fixes = [
        {
            "id": r.id,
            "fix_time": disclosure.iso(r.fix.fix_time),
            "fix_time_epoch": r.fix.fix_time,
            "received_at": disclosure.iso(r.fix.received_at or r.fix.fix_time),
            "lat": r.fix.lat,
            "lon": r.fix.lon,
            "accuracy_m": r.fix.accuracy_m,
            "speed_mps": r.fix.speed_mps,
            "heading_deg": r.fix.heading_deg,
            "battery_pct": r.fix.battery_pct,
            "valid": r.fix.valid,
            "alarms": sorted(r.fix.alarms),
            "late": r.late,
        }
        for r in rows
    ]
    next_cursor = str(rows[-1].id) if len(rows) == limit else None
    return {
        "device_id": device.id,
        "identifier": device.identifier,
        "fixes": fixes,
        "next_cursor": next_cursor,
    }


ACCESS_GROUP_S = 600.0  # her view joins repeated reads of one kind this close together


def _incident_of(subject: str, fields: list[str]) -> int | None:
    """The incident a read was made for: its subject's, or the ``basis`` it gave."""
    names = [subject.split("/", 1)[0]] + [
        f.removeprefix("basis=") for f in fields if f.startswith("basis=incident:")
    ]
    for name in names:
        head = name.removeprefix("incident:")
        if name.startswith("incident:") and head.isdigit():
            return int(head)
    return None


def victim_accesses(store: ConsoleReads, who: Principal, limit: int = 100) -> list[dict[str, Any]]:
    """Who read the protected person's position, when, and for what purpose.

    Reads of her own devices' fixes, of her position for an incident about her safety
    (a dispatch, the police live link), and any read naming her; a read of an incident
    that names another person (an officer told where he is) is his, not hers. Her own
    reads are left out; who the reader was is given by role, not by name; role and
    purpose are codes her app words in her language.

    Every read has its audit record, but she is shown consecutive reads by the same
    role, for the same purpose, of the same subject and fields, each within ``ACCESS_GROUP_S`` of
    the previous, as one row: ``count``, ``first_at``, ``last_at`` (``at`` is the last).
    A field officer's list polled every 5 s is one row per dispatch, not hundreds.
    """
    if who.person_id is None:
        return []
    orders = [o.id for o in store.orders_for_person(who.person_id) if o.victim_id == who.person_id]
    subjects = [f"device:{d}" for d in store.device_ids_of_person(who.person_id)]
    subjects += [
        f"incident:{i}" for i in store.incident_ids_of_orders(orders, incidents.VICTIM_CENTRED)
    ]
    records = store.audit_about(
        subjects,
        who.person_id,
        exclude_actor=f"user:{who.user_id}:{who.username}",
        action="read_position",
        limit=limit * 50,
    )
    mine = f"/person:{who.person_id}"
    shown_since: dict[int, float | None] = {}  # incident -> since when her phone may know it
    rows: list[dict[str, Any]] = []
    key: tuple[str, str, str, tuple[str, ...]] | None = None
    for r in records:  # newest first
        subject = str(r["subject"])
        if "/person:" in subject and not subject.endswith(mine):
            continue
        iid = _incident_of(subject, r["fields"])
        if iid is not None:
            # a read for an SOS her duress PIN raised is not hers to see while it is kept
            # from her phone (an officer or operator at work on it would tell that she gave
            # it), nor from before her own press on it (docs/sos.md)
            if iid not in shown_since:
                record = store.get_incident(iid)
                if record is not None and record.kind == "sos":
                    shown_since[iid] = sos.shown_since(record)
                else:
                    shown_since[iid] = 0.0
            since = shown_since[iid]
            if since is None or r["at"] < since:
                continue
        # the same fields too: a row shows one read's fields, so a read of her whole
        # track never hides in a row that says one position was read
        k = (r["role"], r["purpose"], subject, tuple(r["fields"]))
        if k == key and rows[-1]["_first"] - r["at"] <= ACCESS_GROUP_S:
            rows[-1]["_first"] = r["at"]
            rows[-1]["count"] += 1
            continue
        if len(rows) == limit:
            break
        key = k
        rows.append(
            {
                "_first": r["at"],
                "_last": r["at"],
                "count": 1,
                "role": r["role"],
                "purpose": r["purpose"],
                "fields": r["fields"],
            }
        )
    return [
        {
            "at": disclosure.iso(x["_last"]),
            "role": x["role"],
            "purpose": x["purpose"],
            "fields": x["fields"],
            "count": x["count"],
            "first_at": disclosure.iso(x["_first"]),
            "last_at": disclosure.iso(x["_last"]),
        }
        for x in rows
    ]
