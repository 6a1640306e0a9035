"""The access policy: who may read whose positions, for which purpose, on which basis.

Pure: the policy is data (parsed from the TOML file the adapters read, see
``docs/access-policy.md``), and every decision here is a function of that data and
of what the caller states. The rules:

- A read states a **purpose** from a fixed list (:class:`Purpose`); anything else is
  refused before the policy is asked.
- The policy gives, for each role, relation to the person read and purpose, the
  **bases** that justify the read (:class:`Basis`): the relation itself (her own
  order, his own position, a dispatch, a hand-off), an **open incident** concerning
  the person, a **court order** (a legal hold in force covering the person), or a
  **second person's approval** of a request naming the person and the purpose.
- A **break-glass** read needs no basis but a written reason; only the roles and
  purposes the policy names may break the glass, and it alerts the roles it names.
- Some rules no file can change (:data:`NEVER`): an offender never reads the
  position of the person protected from him.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

ROLES = (
    "victim",
    "offender",
    "operator",
    "supervisor",
    "field_officer",
    "police",
    "clerk",
    "judge",
    "auditor",
    "admin",
)


class Relation(StrEnum):
    """How the reader stands to the person whose position is read."""

    SELF = "self"  # the reader's own position
    OWN_ORDER = "own_order"  # the offender of an active order protecting the reader
    PROTECTED_PARTY = "protected_party"  # the victim of an order against the reader
    DISPATCHED = "dispatched"  # subject of an incident the reader is dispatched to, still open
    HANDED_OFF = "handed_off"  # subject of an incident handed to the reader, still open
    NONE = "none"  # no relation


class Purpose(StrEnum):
    """Why a position is read: the only purposes a read may state."""

    OWN_POSITION = "own_position"  # one's own position, in one's own app
    VICTIM_SAFETY = "victim_safety"  # the protected person's view of her order
    DISPATCH = "dispatch"  # sending or guiding a field officer to an incident
    POLICE_HANDOFF = "police_handoff"  # the police's view of a case handed to them
    INCIDENT_RESPONSE = "incident_response"  # the control centre working an open incident
    COURT_ORDER = "court_order"  # what a court asked for (a legal hold names it)
    VERIFICATION_TASK = "verification_task"  # checking a device or a report
    LEGAL_DEFENCE = "legal_defence"  # what the supervised person's defence asked for


class Basis(StrEnum):
    """What justifies a read besides its purpose."""

    RELATION = "relation"  # the relation itself: self, own order, dispatched, handed off
    INCIDENT = "incident"  # an open incident concerning the person read
    COURT_ORDER = "court_order"  # a legal hold in force covering the person read
    APPROVAL = "approval"  # another staff member approved a request naming person and purpose


BREAK_GLASS = "break_glass"
VICTIM_SAFETY = Purpose.VICTIM_SAFETY.value

# No policy file may allow these (role, relation) reads, whatever it says.
NEVER: frozenset[tuple[str, Relation]] = frozenset(
    {("offender", Relation.PROTECTED_PARTY), ("offender", Relation.OWN_ORDER)}
)


class PolicyError(ValueError):
    """The policy file says something this version cannot enforce."""


@dataclass(frozen=True)
class Policy:
    """A parsed, validated access policy."""

    rules: Mapping[tuple[str, Relation, Purpose], frozenset[Basis]]
    approval_ttl_s: float
    requesters: frozenset[str]
    approvers: frozenset[str]
    break_glass_roles: frozenset[str]
    break_glass_purposes: frozenset[Purpose]
    break_glass_min_reason: int
    alert_roles: frozenset[str]
    review_roles: frozenset[str]
    subject_report_roles: frozenset[str]
    incident_look_back_s: float = 3600.0
    break_glass_look_back_s: float = 3600.0
    # role -> the purposes it may list and hear an SOS's recordings for (docs/evidence.md)
    evidence: Mapping[str, frozenset[Purpose]] = field(default_factory=dict)

    def bases(self, role: str, relation: str, purpose: str) -> frozenset[Basis]:
        """The bases on which ``role`` may read a position in ``relation`` for ``purpose``."""
        try:
            key = (role, Relation(relation), Purpose(purpose))
        except ValueError:
            return frozenset()
        return self.rules.get(key, frozenset())

    def allows(self, role: str, relation: str, purpose: str) -> bool:
        """Whether ``role`` may read a position in ``relation`` for ``purpose`` on some basis."""
        return bool(self.bases(role, relation, purpose))

    def may_break_glass(self, role: str, purpose: str) -> bool:
        """Whether ``role`` may read without a basis, with a written reason, for ``purpose``."""
        return role in self.break_glass_roles and purpose in self.break_glass_purposes

    def may_read_evidence(self, role: str, purpose: str) -> bool:
        """Whether ``role`` may list and hear an SOS's recordings for ``purpose``."""
        return purpose in self.evidence.get(role, frozenset())

    def readers(self) -> frozenset[str]:
        """Every role that may read some position on some basis."""
        return frozenset(role for role, _, _ in self.rules)


# -- parsing ----------------------------------------------------------------------------

_TOP = {"version", "approval", "break_glass", "reports", "look_back", "rule", "evidence"}
_OPTIONAL = {"version", "evidence"}  # a policy without [evidence] lets nobody hear recordings
# The only roles a policy may let hear an SOS's recordings (it may narrow them, never add).
EVIDENCE_READERS = ("operator", "supervisor", "auditor")
_SECTIONS = {
    "look_back": {"incident_s", "break_glass_s"},
    "approval": {"ttl_s", "requesters", "approvers"},
    "break_glass": {"roles", "purposes", "min_reason_chars", "alert"},
    "reports": {"access_review", "subject_report"},
}
_RULE = {"roles", "relation", "purposes", "basis"}


def _names(where: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise PolicyError(f"{where}: expected a list of names, got {value!r}")
    return value


def _roles(where: str, value: Any) -> frozenset[str]:
    names = _names(where, value)
    for name in names:
        if name not in ROLES:
            raise PolicyError(f"{where}: unknown role {name!r} (roles: {', '.join(ROLES)})")
    return frozenset(names)


def _purposes(where: str, value: Any) -> frozenset[Purpose]:
    out = set()
    for name in _names(where, value):
        try:
            out.add(Purpose(name))
        except ValueError:
            known = ", ".join(p.value for p in Purpose)
            raise PolicyError(f"{where}: unknown purpose {name!r} (purposes: {known})") from None
    return frozenset(out)


def _keys(where: str, table: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(table, Mapping):
        raise PolicyError(f"{where}: expected a table, got {table!r}")
    unknown = set(table) - allowed
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    missing = allowed - set(table) - _OPTIONAL
    if missing:
        raise PolicyError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    return table


def _rule(
    where: str, table: Any, rules: dict[tuple[str, Relation, Purpose], frozenset[Basis]]
) -> None:
    t = _keys(where, table, _RULE)
    try:
        relation = Relation(t["relation"])
    except ValueError:
        known = ", ".join(r.value for r in Relation)
        raise PolicyError(
            f"{where}: unknown relation {t['relation']!r} (relations: {known})"
        ) from None
    bases = set()
    for name in _names(f"{where}.basis", t["basis"]):
        try:
            bases.add(Basis(name))
        except ValueError:
            known = ", ".join(b.value for b in Basis)
            raise PolicyError(f"{where}: unknown basis {name!r} (bases: {known})") from None
    if not bases:
        raise PolicyError(f"{where}: a rule needs at least one basis")
    if (Basis.RELATION in bases) == (relation == Relation.NONE) or (
        relation != Relation.NONE and bases != {Basis.RELATION}
    ):
        raise PolicyError(
            f"{where}: relation {relation.value!r} takes basis 'relation' alone; "
            "relation 'none' takes incident, court_order or approval"
        )
    roles = _roles(f"{where}.roles", t["roles"])
    purposes = _purposes(f"{where}.purposes", t["purposes"])
    if not roles or not purposes:
        raise PolicyError(f"{where}: a rule names at least one role and one purpose")
    for role in roles:
        if (role, relation) in NEVER:
            raise PolicyError(
                f"{where}: {role} may never read a position in relation {relation.value!r}"
            )
        for purpose in purposes:
            key = (role, relation, purpose)
            if key in rules:
                raise PolicyError(
                    f"{where}: {role} / {relation.value} / {purpose.value} is given twice"
                )
            rules[key] = frozenset(bases)


def parse_policy(data: Mapping[str, Any]) -> Policy:
    """Validate a policy as parsed from its TOML file; :class:`PolicyError` says what is wrong."""
    top = _keys("policy", data, _TOP)
    if top.get("version", 1) != 1:
        raise PolicyError(f"policy: version {top['version']!r} is not supported (1 is)")
    approval = _keys("[approval]", top["approval"], _SECTIONS["approval"])
    glass = _keys("[break_glass]", top["break_glass"], _SECTIONS["break_glass"])
    reports = _keys("[reports]", top["reports"], _SECTIONS["reports"])
    look_back = _keys("[look_back]", top["look_back"], _SECTIONS["look_back"])
    for key in ("incident_s", "break_glass_s"):
        v = look_back[key]
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v <= 30 * 86400:
            raise PolicyError(f"[look_back].{key}: seconds between 0 and 2592000")
    ttl = approval["ttl_s"]
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 60 <= ttl <= 7 * 86400:
        raise PolicyError("[approval].ttl_s: seconds between 60 and 604800")
    min_reason = glass["min_reason_chars"]
    if not isinstance(min_reason, int) or isinstance(min_reason, bool) or not 10 <= min_reason:
        raise PolicyError("[break_glass].min_reason_chars: a whole number, at least 10")
    if not isinstance(top["rule"], list):
        raise PolicyError("[[rule]]: expected an array of tables")
    rules: dict[tuple[str, Relation, Purpose], frozenset[Basis]] = {}
    for i, rule in enumerate(top["rule"], start=1):
        _rule(f"[[rule]] {i}", rule, rules)
    policy = Policy(
        rules=rules,
        approval_ttl_s=float(ttl),
        requesters=_roles("[approval].requesters", approval["requesters"]),
        approvers=_roles("[approval].approvers", approval["approvers"]),
        break_glass_roles=_roles("[break_glass].roles", glass["roles"]),
        break_glass_purposes=_purposes("[break_glass].purposes", glass["purposes"]),
        break_glass_min_reason=min_reason,
        alert_roles=_roles("[break_glass].alert", glass["alert"]),
        review_roles=_roles("[reports].access_review", reports["access_review"]),
        subject_report_roles=_roles("[reports].subject_report", reports["subject_report"]),
        incident_look_back_s=float(look_back["incident_s"]),
        break_glass_look_back_s=float(look_back["break_glass_s"]),
    )
    evidence: dict[str, frozenset[Purpose]] = {}
    section = top.get("evidence", {})
    if not isinstance(section, Mapping):
        raise PolicyError(f"[evidence]: expected a table of roles, got {section!r}")
    for role, purposes in section.items():
        if role not in EVIDENCE_READERS:
            raise PolicyError(
                f"[evidence]: {role!r} may not hear recordings (only {', '.join(EVIDENCE_READERS)})"
            )
        evidence[role] = _purposes(f"[evidence].{role}", purposes)
    policy = replace(policy, evidence=evidence)
    uses_approval = any(Basis.APPROVAL in b for b in rules.values())
    if uses_approval and not policy.approvers:
        raise PolicyError("[approval].approvers: a rule needs approval, so someone must approve")
    if policy.break_glass_roles and not policy.alert_roles:
        raise PolicyError("[break_glass].alert: a break-glass read must alert someone")
    for role in policy.break_glass_roles:
        if any((role, r) in NEVER for r in Relation):
            raise PolicyError(f"[break_glass].roles: {role} may not break the glass")
    return policy


# -- the access review and the subject's report ----------------------------------------

READ = "read_position"
REQUEST = "access_request"
APPROVE = "access_approve"
GLASS = "break_glass"
REVIEWED_ACTIONS = (READ, REQUEST, APPROVE, GLASS)


def notes(fields: Iterable[str]) -> dict[str, str]:
    """``key=value`` entries of an audit record's fields, as a dict."""
    out: dict[str, str] = {}
    for item in fields:
        key, sep, value = str(item).partition("=")
        if sep:
            out[key] = value
    return out


def basis_of(record: Mapping[str, Any]) -> str:
    """The basis a read record names (``incident:12``, ``break_glass``...), or ``relation``."""
    return notes(record["fields"]).get("basis", Basis.RELATION.value)


def access_review(
    records: Sequence[Mapping[str, Any]], whose: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """Who read whose positions, how often, for which purposes and on which bases, with every
    break-glass read and every approval set out, from the audit records of a time range
    (``read_position``, ``access_request``, ``access_approve`` and ``break_glass`` ones).

    ``whose`` names the people behind a subject (``device:3`` -> ``["person:7"]``; an
    incident's parties); a subject it does not name counts as itself.
    """
    whose = whose or {}
    readers: dict[tuple[str, str], dict[str, Any]] = {}
    reads_by_basis: Counter[str] = Counter()
    glass: list[dict[str, Any]] = []
    requests: dict[int, dict[str, Any]] = {}
    for r in records:
        if r["action"] == READ:
            basis = basis_of(r)
            reads_by_basis[basis] += 1
            entry = readers.setdefault(
                (r["actor"], r["role"]),
                {
                    "actor": r["actor"],
                    "role": r["role"],
                    "reads": 0,
                    "break_glass": 0,
                    "subjects": Counter(),
                    "people": Counter(),
                    "purposes": Counter(),
                    "bases": Counter(),
                },
            )
            entry["reads"] += 1
            entry["subjects"][r["subject"]] += 1
            for person in whose.get(r["subject"], (r["subject"],)):
                entry["people"][person] += 1
            entry["purposes"][r["purpose"]] += 1
            entry["bases"][basis] += 1
            if basis == BREAK_GLASS:
                entry["break_glass"] += 1
        elif r["action"] == GLASS:
            n = notes(r["fields"])
            glass.append(
                {
                    "record_id": r["id"],
                    "at": r["at"],
                    "actor": r["actor"],
                    "role": r["role"],
                    "subject": r["subject"],
                    "purpose": r["purpose"],
                    "reason": n.get("reason", ""),
                }
            )
        elif r["action"] == REQUEST:
            requests[int(r["id"])] = {
                "request_id": int(r["id"]),
                "requested_at": r["at"],
                "requested_by": r["actor"],
                "role": r["role"],
                "subject": r["subject"],
                "purpose": r["purpose"],
                "reason": notes(r["fields"]).get("reason", ""),
                "approved_by": None,
                "approved_at": None,
                "until": None,
                "reads": 0,
            }
    for r in records:
        rid = str(r["subject"]).partition(":")[2]
        if r["action"] == APPROVE and rid.isdigit() and int(rid) in requests:
            req = requests[int(rid)]
            req["approved_by"], req["approved_at"] = r["actor"], r["at"]
            req["until"] = float(notes(r["fields"]).get("until", "0") or 0)
        elif r["action"] == READ:
            b = basis_of(r)
            if b.startswith("approval:") and b[9:].isdigit() and int(b[9:]) in requests:
                requests[int(b[9:])]["reads"] += 1
    out_readers = sorted(
        (
            {
                **e,
                **{
                    k: dict(sorted(e[k].items()))
                    for k in ("subjects", "people", "purposes", "bases")
                },
            }
            for e in readers.values()
        ),
        key=lambda e: (-e["break_glass"], -e["reads"], e["actor"]),
    )
    approvals = [q for q in requests.values() if q["approved_by"] is not None]
    pending = [q for q in requests.values() if q["approved_by"] is None]
    return {
        "totals": {
            "reads": sum(e["reads"] for e in out_readers),
            "readers": len(out_readers),
            "break_glass": len(glass),
            "requests": len(requests),
            "approvals": len(approvals),
            "by_basis": dict(sorted(reads_by_basis.items())),
        },
        "break_glass": glass,
        "approvals": approvals,
        "unapproved_requests": pending,
        "readers": out_readers,
    }


def subject_report(
    records: Sequence[Mapping[str, Any]], own_actors: Iterable[str] = ()
) -> dict[str, Any]:
    """The reads of one person's positions, by role and purpose, never by reader.

    Staff, police and field officers' reads are listed one by one (when, role, purpose,
    basis, what was read). The protected person's own app reads of his position are
    counted per day only: their moments would tell him when she looks at her phone.
    The person's own reads (``own_actors``) are left out.
    """
    own = set(own_actors)
    listed: list[dict[str, Any]] = []
    victim_days: Counter[str] = Counter()
    by_role_purpose: Counter[tuple[str, str]] = Counter()
    for r in records:
        if r["action"] != READ or r["actor"] in own:
            continue
        by_role_purpose[(r["role"], r["purpose"])] += 1
        if r["role"] == "victim":
            victim_days[_day(r["at"])] += 1
            continue
        fields = [f for f in r["fields"] if not str(f).startswith(("basis=", "reason="))]
        listed.append(
            {
                "at": r["at"],
                "role": r["role"],
                "purpose": r["purpose"],
                "basis": basis_of(r),
                "subject": r["subject"],
                "fields": fields,
            }
        )
    listed.sort(key=lambda x: x["at"])
    return {
        "reads": listed,
        "victim_app_reads_per_day": dict(sorted(victim_days.items())),
        "by_role_and_purpose": [
            {"role": role, "purpose": purpose, "reads": n}
            for (role, purpose), n in sorted(by_role_purpose.items())
        ],
        "total": sum(by_role_purpose.values()),
    }


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).date().isoformat()
