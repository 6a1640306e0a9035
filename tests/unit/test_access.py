"""The access policy: the shipped file, what a file may not say, and the two reports."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bangpae.adapters.policyfile import DEFAULT_POLICY, PolicyFileError, load_policy
from bangpae.domain.access import (
    ROLES,
    Basis,
    PolicyError,
    Purpose,
    Relation,
    access_review,
    parse_policy,
    subject_report,
)

R, P, B = Relation, Purpose, Basis
POLICY = load_policy()
FREE_TEXT = ("operations", "incident 812: locate", "", "   ", "INCIDENT_RESPONSE")

# Every (role, relation, purpose) the shipped policy allows, and on which bases; written out
# here on its own so that a change to the file shows up as a failing test.
STAFF_NONE = {
    P.INCIDENT_RESPONSE: {B.INCIDENT},
    P.DISPATCH: {B.INCIDENT},
    P.POLICE_HANDOFF: {B.INCIDENT},
    P.COURT_ORDER: {B.COURT_ORDER},
    P.VERIFICATION_TASK: {B.APPROVAL},
    P.LEGAL_DEFENCE: {B.APPROVAL},
}
SHIPPED: dict[tuple[str, Relation, Purpose], set[Basis]] = {
    ("victim", R.SELF, P.OWN_POSITION): {B.RELATION},
    ("offender", R.SELF, P.OWN_POSITION): {B.RELATION},
    ("field_officer", R.SELF, P.OWN_POSITION): {B.RELATION},
    ("victim", R.OWN_ORDER, P.VICTIM_SAFETY): {B.RELATION},
    ("field_officer", R.DISPATCHED, P.DISPATCH): {B.RELATION},
    ("police", R.HANDED_OFF, P.POLICE_HANDOFF): {B.RELATION},
    **{(role, R.NONE, p): b for role in ("operator", "supervisor") for p, b in STAFF_NONE.items()},
}


@pytest.mark.parametrize(
    ("role", "relation", "purpose"), list(itertools.product(ROLES, Relation, Purpose))
)
def test_the_shipped_policy_holds_for_every_role_relation_and_purpose(
    role: str, relation: Relation, purpose: Purpose
) -> None:
    want = SHIPPED.get((role, relation, purpose), set())
    assert set(POLICY.bases(role, relation, purpose)) == want
    assert POLICY.allows(role, relation, purpose) is bool(want)


def test_a_purpose_not_on_the_list_is_never_allowed() -> None:
    for role, relation, purpose in itertools.product(ROLES, Relation, FREE_TEXT):
        assert not POLICY.allows(role, relation, purpose)
        assert not POLICY.may_break_glass(role, purpose)
    assert not POLICY.allows("root", "none", "incident_response")
    assert not POLICY.allows("operator", "neighbour", "incident_response")


def test_the_shipped_break_glass_approval_and_report_rules() -> None:
    assert POLICY.break_glass_roles == {"operator", "supervisor"}
    assert POLICY.may_break_glass("operator", "incident_response")
    assert not POLICY.may_break_glass("operator", "court_order")
    assert not POLICY.may_break_glass("auditor", "incident_response")
    assert POLICY.alert_roles == {"supervisor", "auditor"}
    assert POLICY.approvers == {"supervisor"} and POLICY.approval_ttl_s == 3600
    assert POLICY.review_roles == {"auditor"}
    assert POLICY.subject_report_roles == {"judge", "clerk"}
    assert POLICY.incident_look_back_s == POLICY.break_glass_look_back_s == 3600
    # the auditor, clerk, judge and admin never read a position; the offender never hers
    for role in ("auditor", "clerk", "judge", "admin"):
        assert role not in POLICY.readers()
    for purpose in Purpose:
        assert not POLICY.allows("offender", "protected_party", purpose)
        assert not POLICY.allows("offender", "own_order", purpose)


# -- what a policy file may not say ------------------------------------------------------------


def shipped() -> dict[str, Any]:
    with open(DEFAULT_POLICY, "rb") as f:
        return tomllib.load(f)


def with_rule(**rule: Any) -> dict[str, Any]:
    data = shipped()
    data["rule"].append(
        {"roles": ["operator"], "relation": "none", "purposes": ["court_order"], "basis": []} | rule
    )
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: with_rule(roles=["operater"], basis=["incident"]), "unknown role 'operater'"),
        (lambda d: with_rule(relation="neighbour", basis=["incident"]), "unknown relation"),
        (lambda d: with_rule(purposes=["operations"], basis=["incident"]), "unknown purpose"),
        (lambda d: with_rule(basis=["hunch"]), "unknown basis 'hunch'"),
        (lambda d: with_rule(basis=[]), "at least one basis"),
        (lambda d: with_rule(basis=["approval"]), "given twice"),
        (lambda d: with_rule(relation="self", basis=["incident"]), "takes basis 'relation'"),
        (lambda d: with_rule(basis=["relation"]), "takes basis 'relation'"),
        (lambda d: d | {"rule": [*d["rule"], _never()]}, "may never read"),
        (lambda d: d | {"approval": d["approval"] | {"approvers": ["boss"]}}, "unknown role"),
        (lambda d: d | {"approval": d["approval"] | {"approvers": []}}, "someone must approve"),
        (lambda d: d | {"approval": d["approval"] | {"ttl_s": 10}}, "ttl_s"),
        (lambda d: d | {"break_glass": d["break_glass"] | {"alert": []}}, "must alert"),
        (
            lambda d: d | {"break_glass": d["break_glass"] | {"purposes": ["curiosity"]}},
            "unknown purpose 'curiosity'",
        ),
        (lambda d: d | {"reports": {"access_review": []}}, "missing key(s) subject_report"),
        (lambda d: d | {"extra": 1}, "unknown key(s) extra"),
        (lambda d: d | {"look_back": d["look_back"] | {"incident_s": -1}}, "incident_s"),
        (lambda d: d | {"look_back": {"incident_s": 60}}, "missing key(s) break_glass_s"),
        (lambda d: {k: v for k, v in d.items() if k != "break_glass"}, "missing key(s)"),
        (lambda d: d | {"version": 2}, "version 2"),
    ],
)
def test_a_policy_naming_anything_unknown_is_refused_with_what_and_where(
    change: Any, message: str
) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(change(shipped()))


def _never() -> dict[str, Any]:
    return {
        "roles": ["offender"],
        "relation": "protected_party",
        "purposes": ["dispatch"],
        "basis": ["relation"],
    }


def test_a_policy_file_is_read_from_its_path_and_broken_ones_name_the_file(
    tmp_path: Path,
) -> None:
    narrow = tmp_path / "narrow.toml"
    text = DEFAULT_POLICY.read_text().replace(
        'purposes = ["incident_response", "dispatch", "police_handoff"]',
        'purposes = ["dispatch", "police_handoff"]',
    )
    narrow.write_text(text)
    policy = load_policy(narrow)
    assert not policy.allows("operator", "none", "incident_response")
    assert policy.allows("operator", "none", "dispatch")
    for content, message in (
        ("version = 1\n[approval\n", "not valid TOML"),
        (text.replace('approvers = ["supervisor"]', 'approvers = ["superviser"]'), "superviser"),
    ):
        broken = tmp_path / "broken.toml"
        broken.write_text(content)
        with pytest.raises(PolicyFileError, match=message) as err:
            load_policy(broken)
        assert str(broken) in str(err.value)
    with pytest.raises(PolicyFileError, match="cannot read"):
        load_policy(tmp_path / "absent.toml")


# -- the reports -------------------------------------------------------------------------------


def rec(i: int, action: str, actor: str, role: str, subject: str, purpose: str, *fields: str):
    return {
        "id": i,
        "at": 1_800_000_000.0 + 3600 * i,
        "actor": actor,
        "role": role,
        "action": action,
        "subject": subject,
        "purpose": purpose,
        "fields": list(fields),
    }


OP, SUP = "user:3:op", "user:4:sup"
RECORDS = [
    rec(1, "read_position", OP, "operator", "device:1", "incident_response", "basis=incident:7"),
    rec(2, "read_position", OP, "operator", "device:1", "incident_response", "basis=incident:7"),
    rec(3, "break_glass", OP, "operator", "device:2", "incident_response", "reason=she called"),
    rec(4, "read_position", OP, "operator", "device:2", "incident_response", "basis=break_glass"),
    rec(5, "access_request", SUP, "supervisor", "person:9", "verification_task", "reason=check"),
    rec(6, "access_approve", OP, "operator", "access_request:5", "verification_task", "until=9e9"),
    rec(7, "read_position", SUP, "supervisor", "device:3", "verification_task", "basis=approval:5"),
    rec(8, "access_request", OP, "operator", "person:9", "legal_defence", "reason=counsel"),
    rec(9, "read_position", "user:5:vic", "victim", "order:1/offender:9", "victim_safety"),
]


def test_the_access_review_counts_reads_per_reader_and_sets_out_glass_and_approvals() -> None:
    out = access_review(RECORDS, {"device:1": ["person:9"], "device:2": ["person:9"]})
    assert out["totals"] == {
        "reads": 5,
        "readers": 3,
        "break_glass": 1,
        "requests": 2,
        "approvals": 1,
        "by_basis": {"approval:5": 1, "break_glass": 1, "incident:7": 2, "relation": 1},
    }
    first = out["readers"][0]  # break-glass readers first
    assert (first["actor"], first["reads"], first["break_glass"]) == (OP, 3, 1)
    assert first["subjects"] == {"device:1": 2, "device:2": 1}
    assert first["people"] == {"person:9": 3}
    assert out["readers"][1]["people"] == {"device:3": 1}  # not known: counted as itself
    assert first["bases"] == {"break_glass": 1, "incident:7": 2}
    assert [g["reason"] for g in out["break_glass"]] == ["she called"]
    [approval] = out["approvals"]
    assert (approval["requested_by"], approval["approved_by"], approval["reads"]) == (SUP, OP, 1)
    assert [q["request_id"] for q in out["unapproved_requests"]] == [8]


def test_the_subject_report_names_roles_and_purposes_never_readers() -> None:
    reads = [r for r in RECORDS if r["action"] == "read_position"]
    reads.append(rec(10, "read_position", "user:5:vic", "victim", "order:1/offender:9", "vs"))
    reads.append(rec(11, "read_position", "user:8:him", "offender", "device:1", "own_position"))
    out = subject_report(reads, own_actors=["user:8:him"])
    assert out["total"] == 6
    assert [(r["role"], r["purpose"], r["basis"]) for r in out["reads"]] == [
        ("operator", "incident_response", "incident:7"),
        ("operator", "incident_response", "incident:7"),
        ("operator", "incident_response", "break_glass"),
        ("supervisor", "verification_task", "approval:5"),
    ]
    assert "user:" not in repr(out) and "actor" not in repr(out)
    # her app's reads: how many a day, never when
    assert out["victim_app_reads_per_day"] == {"2027-01-15": 2}
    assert all(r["role"] != "victim" for r in out["reads"])
