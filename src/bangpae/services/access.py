"""Purpose-bound reads of positions: the basis a staff read names is checked against the
store, requests are approved by a second person, a break-glass read alerts at once.

The decisions of what may be read on which basis are the access policy's
(:mod:`bangpae.domain.access`); this module checks the facts a basis claims (the
incident is open and concerns the person, the legal hold is in force and covers
them, the approval is the caller's, for this person and purpose, by someone else,
and not expired). ``docs/access-policy.md`` sets out the rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bangpae.domain import access, incidents
from bangpae.domain.access import BREAK_GLASS, Basis, Policy, Relation
from bangpae.domain.audit import AuditEntry
from bangpae.domain.disclosure import iso
from bangpae.domain.incidents import IncidentRecord
from bangpae.domain.notices import STAFF, Notice
from bangpae.domain.playbooks import Text
from bangpae.domain.retention import Hold
from bangpae.services.auth import Principal
from bangpae.services.notices import Notifier
from bangpae.services.ports import AuditLog, IncidentLookup, Registry

FINAL = ("resolved", "false_alarm")


class AccessRecords(AuditLog, Registry, IncidentLookup, Protocol):
    """What purpose-bound reads check and record in the store (``adapters.store.access``)."""

    def access_request(self, access_request: int) -> dict[str, Any] | None:
        """A request with its approval, if any (``approved_by``, ``approved_at``, ``until``)."""
        ...

    def request_access(
        self,
        actor: str,
        role: str,
        person_id: int,
        purpose: str,
        reason: str,
        *,
        at: float,
        request_id: str | None = None,
    ) -> int:
        """Record a request to read ``person_id``'s positions for ``purpose``; its id."""
        ...

    def approve_access(
        self,
        access_request: int,
        actor: str,
        role: str,
        until: float,
        *,
        at: float,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Record an approval of a pending request, good until ``until``; the request as
        it now stands. NotFound for no such request, Conflict for one already approved."""
        ...

    def audit_between(
        self, since: float | None, until: float | None, actions: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Audit records of these actions with ``since <= at < until``, in chain order."""
        ...

    def incident_ids_about(self, person_id: int) -> list[int]:
        """The incidents concerning a person: theirs, and those of the orders they are party to."""
        ...

    def actors_of_person(self, person_id: int) -> list[str]:
        """How the users bound to a person are named in the audit log."""
        ...

    def legal_holds(self) -> list[Hold]:
        """The legal holds in force, oldest first."""
        ...


class AccessDenied(Exception):
    """A read refused by the access policy; ``code`` says which rule, for clients."""

    def __init__(self, detail: str, code: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True, slots=True)
class Claim:
    """The basis a read names: one of an incident, a legal hold, an approved request, or a
    break-glass reason."""

    incident: int | None = None
    hold: int | None = None
    approval: int | None = None
    break_glass: str | None = None

    def named(self) -> list[str]:
        """Which bases are named."""
        return [k for k in ("incident", "hold", "approval", "break_glass") if getattr(self, k)]


@dataclass(frozen=True, slots=True)
class Grant:
    """A read allowed: the basis it is audited with (``incident:12``, ``hold:3``,
    ``approval:5`` or ``break_glass``), its purpose, and the fix times it shows: from the
    policy's look-back before the incident opened or before a break-glass read, the
    court's range of a legal hold, everything for an approval."""

    basis: str
    purpose: str
    reason: str | None = None  # a break-glass read's written reason
    since: float | None = None  # the fix times the basis covers (None: unbounded)
    until: float | None = None

    @property
    def break_glass(self) -> bool:
        """Whether the read broke the glass."""
        return self.basis == BREAK_GLASS


def actor(who: Principal) -> str:
    """How a user is named in the audit log."""
    return f"user:{who.user_id}:{who.username}"


def user_id_of(actor_name: str) -> int | None:
    """The user id in an audit actor ``user:<id>:<name>``."""
    kind, _, rest = actor_name.partition(":")
    uid = rest.partition(":")[0]
    return int(uid) if kind == "user" and uid.isdigit() else None


def relation_to(who: Principal, person_id: int) -> Relation:
    """How a staff reader stands to the person read: themselves, or no relation."""
    return Relation.SELF if who.person_id == person_id else Relation.NONE


def _concerns(store: Registry, incident: IncidentRecord, person_id: int) -> bool:
    if incident.person_id == person_id:
        return True
    order = store.get_order(incident.order_id) if incident.order_id is not None else None
    return order is not None and person_id in (order.offender_id, order.victim_id)


def _covers(store: AccessRecords, hold: Hold, person_id: int) -> bool:
    if hold.scope == "person":
        return bool(hold.target == person_id)
    if hold.scope == "order":
        order = store.get_order(hold.target)
        return order is not None and person_id in (order.offender_id, order.victim_id)
    incident = store.get_incident(hold.target)
    return incident is not None and _concerns(store, incident, person_id)


def authorize(
    store: AccessRecords,
    policy: Policy,
    who: Principal,
    person_id: int,
    purpose: str,
    claim: Claim,
    now: float,
) -> Grant:
    """Whether ``who`` may read ``person_id``'s positions for ``purpose`` on ``claim``.

    AccessDenied (403) unless exactly one basis is named, the policy allows it for the
    caller's role, relation and purpose, and the facts it claims hold now.
    """
    named = claim.named()
    if len(named) != 1:
        raise AccessDenied(
            "a read names exactly one basis: incident, hold, approval or break_glass "
            f"(named: {', '.join(named) or 'none'})",
            "basis_required",
        )
    relation = relation_to(who, person_id)
    if claim.break_glass is not None:
        if not policy.may_break_glass(who.role, purpose):
            raise AccessDenied(
                f"role {who.role!r} may not break the glass for {purpose!r}", "break_glass_refused"
            )
        reason = claim.break_glass.strip()
        if len(reason) < policy.break_glass_min_reason:
            raise AccessDenied(
                f"a break-glass read needs a written reason of at least "
                f"{policy.break_glass_min_reason} characters",
                "reason_required",
            )
        return Grant(BREAK_GLASS, purpose, reason, since=now - policy.break_glass_look_back_s)
    bases = policy.bases(who.role, relation, purpose)
    kind = {"incident": Basis.INCIDENT, "hold": Basis.COURT_ORDER, "approval": Basis.APPROVAL}[
        named[0]
    ]
    if kind not in bases:
        allowed = ", ".join(sorted(b.value for b in bases)) or "nothing"
        raise AccessDenied(
            f"role {who.role!r} may not read a position ({relation.value}) for {purpose!r} "
            f"on the basis of {kind.value} (allowed: {allowed})",
            "basis_not_allowed",
        )
    if claim.incident is not None:
        incident = store.get_incident(claim.incident)
        if (
            incident is None
            or incident.status in FINAL
            or not _concerns(store, incident, person_id)
        ):
            raise AccessDenied(
                f"incident {claim.incident} is not an open incident concerning this person",
                "incident_not_open",
            )
        since = incident.opened_at - policy.incident_look_back_s
        return Grant(f"incident:{incident.id}", purpose, since=since)
    if claim.hold is not None:
        hold = next((h for h in store.legal_holds() if h.id == claim.hold), None)
        if hold is None or not _covers(store, hold, person_id):
            raise AccessDenied(
                f"legal hold {claim.hold} is not in force for this person", "hold_not_in_force"
            )
        return Grant(f"hold:{hold.id}", purpose, since=hold.start, until=hold.end)
    assert claim.approval is not None
    approved = _approved(store, who, person_id, purpose, claim.approval, now)
    return Grant(f"approval:{approved}", purpose)


def incident_basis(
    store: AccessRecords, policy: Policy, who: Principal, purpose: str, incident_id: int
) -> Grant | None:
    """A staff read of an incident's parties' positions (dispatch suggestions): the
    incident in the path is the basis, so it must be open; None for no such incident."""
    if Basis.INCIDENT not in policy.bases(who.role, Relation.NONE, purpose):
        raise AccessDenied(
            f"role {who.role!r} may not read positions for {purpose!r} on an incident",
            "basis_not_allowed",
        )
    incident = store.get_incident(incident_id)
    if incident is None:
        return None
    if incident.status in FINAL:
        raise AccessDenied(f"incident {incident_id} is {incident.status}", "incident_not_open")
    return Grant(f"incident:{incident_id}", purpose)


def _approved(
    store: AccessRecords, who: Principal, person_id: int, purpose: str, request_id: int, now: float
) -> int:
    req = store.access_request(request_id)
    if req is None or user_id_of(req["actor"]) != who.user_id:
        raise AccessDenied(f"access request {request_id} is not yours", "approval_not_yours")
    if req["person_id"] != person_id or req["purpose"] != purpose:
        raise AccessDenied(
            f"access request {request_id} is for person {req['person_id']} and "
            f"{req['purpose']!r}, not this read",
            "approval_mismatch",
        )
    if req["approved_by"] is None:
        raise AccessDenied(f"access request {request_id} is not approved", "approval_pending")
    if req["until"] <= now:
        raise AccessDenied(
            f"the approval of access request {request_id} ran out at {iso(req['until'])}",
            "approval_expired",
        )
    return int(req["id"])


# -- requests and approvals --------------------------------------------------------------------


def request_access(
    store: AccessRecords,
    policy: Policy,
    who: Principal,
    person_id: int,
    purpose: str,
    reason: str,
    now: float,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Ask for another staff member's approval to read a person's positions for a purpose."""
    if who.role not in policy.requesters:
        raise AccessDenied(f"role {who.role!r} may not ask for access", "request_refused")
    if Basis.APPROVAL not in policy.bases(who.role, relation_to(who, person_id), purpose):
        raise AccessDenied(
            f"{purpose!r} reads by {who.role!r} are not given on approval", "request_refused"
        )
    rid = store.request_access(
        actor(who), who.role, person_id, purpose, reason, at=now, request_id=request_id
    )
    req = store.access_request(rid)
    assert req is not None  # written just now, in its own committed transaction
    return public_request(req)


def approve_access(
    store: AccessRecords,
    policy: Policy,
    who: Principal,
    access_request: int,
    now: float,
    request_id: str | None = None,
) -> dict[str, Any] | None:
    """Approve another staff member's request, for the policy's time; None if there is none."""
    req = store.access_request(access_request)
    if req is None:
        return None
    if who.role not in policy.approvers:
        raise AccessDenied(f"role {who.role!r} may not approve access", "approval_refused")
    if user_id_of(req["actor"]) == who.user_id:
        raise AccessDenied("a request is approved by someone else", "approval_by_requester")
    until = now + policy.approval_ttl_s
    return public_request(
        store.approve_access(
            access_request, actor(who), who.role, until, at=now, request_id=request_id
        )
    )


def public_request(req: dict[str, Any]) -> dict[str, Any]:
    """A request as the API shows it."""
    return {
        "id": req["id"],
        "requested_at": iso(req["at"]),
        "requested_by": req["actor"],
        "role": req["role"],
        "person_id": req["person_id"],
        "purpose": req["purpose"],
        "reason": req["reason"],
        "status": "approved" if req["approved_by"] is not None else "pending",
        "approved_by": req["approved_by"],
        "approved_at": None if req["approved_at"] is None else iso(req["approved_at"]),
        "until": None if req["until"] is None else iso(req["until"]),
    }


# -- break-glass -------------------------------------------------------------------------------


def break_glass_record(
    who: Principal, subject: str, purpose: str, reason: str, now: float, request_id: str | None
) -> AuditEntry:
    """The audit record of a break-glass read (the read's own record says ``basis=break_glass``)."""
    return AuditEntry(
        actor(who),
        who.role,
        access.GLASS,
        subject,
        purpose,
        [f"reason={reason}"],
        at=now,
        request_id=request_id,
    )


def break_glass_notices(
    policy: Policy, who: Principal, subject: str, purpose: str, record_id: int, now: float
) -> list[Notice]:
    """What the alerted roles are told of a break-glass read: who (by role), whose, why."""
    text = Text(
        f"긴급 열람(break-glass): {who.role} 사용자가 {subject} 위치를 근거 없이 열람 "
        f"({purpose}), 감사 기록 #{record_id} 확인 필요",
        f"Break-glass read: a {who.role} read {subject}'s positions without a basis "
        f"({purpose}); review audit record #{record_id}",
    )
    return [
        Notice(
            STAFF,
            "break_glass",
            incidents.HIGH,
            text,
            f"staff:{role}:break_glass:{record_id}",
            now,
            role=role,
        )
        for role in sorted(policy.alert_roles)
    ]


async def broke_glass(
    store: AuditLog,
    notifier: Notifier | None,
    policy: Policy,
    who: Principal,
    subject: str,
    grant: Grant,
    now: float,
    request_id: str | None,
) -> int:
    """Record a break-glass read with its reason and alert the policy's roles; the record's id.

    Called before the read: the alert does not depend on the read succeeding.
    """
    record = break_glass_record(who, subject, grant.purpose, grant.reason or "", now, request_id)
    record_id = int(await asyncio.to_thread(lambda: store.audit_append(record)))
    if notifier is not None:
        await notifier.send_all(
            break_glass_notices(policy, who, subject, grant.purpose, record_id, now)
        )
    return record_id


# -- the auditor's review and the subject's report ---------------------------------------------


_TIMES = ("at", "until", "requested_at", "approved_at")


def _iso_times(x: Any) -> Any:
    """Times in a report (seconds under the keys of ``_TIMES``) as ISO 8601."""
    if isinstance(x, dict):
        return {
            k: iso(float(v))
            if k in _TIMES and isinstance(v, int | float) and not isinstance(v, bool)
            else _iso_times(v)
            for k, v in x.items()
        }
    if isinstance(x, list):
        return [_iso_times(v) for v in x]
    return x


def access_review(store: AccessRecords, since: float | None, until: float | None) -> dict[str, Any]:
    """Who read whose positions in ``[since, until)``: the auditor's report."""
    records = store.audit_between(since, until, access.REVIEWED_ACTIONS)
    subjects = {r["subject"] for r in records if r["action"] == access.READ}
    out = access.access_review(records, {x: people_of(store, x) for x in subjects})
    return {
        "since": None if since is None else iso(since),
        "until": None if until is None else iso(until),
        **_iso_times(out),
    }


def people_of(store: AccessRecords, subject: str) -> list[str]:
    """The people whose positions a read of ``subject`` showed (``person:<id>`` each)."""
    head, _, tail = subject.partition("/")
    kind, _, ref = head.partition(":")
    last = tail.rpartition(":")[2]
    if tail and last.isdigit():  # incident:12/person:7, order:3/offender:7
        return [f"person:{last}"]
    if not ref.isdigit():
        return [subject]
    if kind == "device":
        device = store.get_device(int(ref))
        return [subject] if device is None else [f"person:{device.person_id}"]
    if kind == "incident":
        incident = store.get_incident(int(ref))
        if incident is None:
            return [subject]
        order = store.get_order(incident.order_id) if incident.order_id is not None else None
        if order is not None:
            return [f"person:{order.offender_id}", f"person:{order.victim_id}"]
        if incident.person_id is not None:
            return [f"person:{incident.person_id}"]
    return [subject]


def subjects_of(store: AccessRecords, person_id: int) -> list[str]:
    """The audit subjects a read of this person's positions is recorded under, or under
    which with ``/<party>:<id>`` (see :func:`_about`)."""
    subjects = [f"device:{d}" for d in store.device_ids_of_person(person_id)]
    subjects += [f"incident:{i}" for i in store.incident_ids_about(person_id)]
    subjects += [f"order:{o.id}" for o in store.orders_for_person(person_id)]
    return subjects


def _about(subject: str, subjects: set[str], person_id: int) -> bool:
    """Whether a read recorded under ``subject`` showed this person's position: a subject
    naming one person (``incident:12/person:7``) is about that person alone; an incident
    without one showed its parties'."""
    head, sep, tail = subject.partition("/")
    if sep:
        return head in subjects and tail.rpartition(":")[2] == str(person_id)
    return subject in subjects


def subject_report(
    store: AccessRecords, person_id: int, since: float | None, until: float | None, now: float
) -> dict[str, Any] | None:
    """The reads of a person's positions, by role and purpose, never by reader; None for no
    such person."""
    person = store.get_person(person_id)
    if person is None:
        return None
    subjects = set(subjects_of(store, person_id))
    records = [
        r
        for r in store.audit_between(since, until, (access.READ,))
        if _about(r["subject"], subjects, person_id)
    ]
    report = access.subject_report(records, store.actors_of_person(person_id))
    return {
        "person_id": person_id,
        "kind": str(person.kind),
        "since": None if since is None else iso(since),
        "until": None if until is None else iso(until),
        "generated_at": iso(now),
        **_iso_times(report),
    }
