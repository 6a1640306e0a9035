"""Purpose-bound reads of positions on the real composition root, SQLite and PostgreSQL.

What an insider of the control centre learns of a supervised person's whereabouts,
measured in fixes returned: every stored fix of any device, for any words typed as a
purpose, before; now nothing without an open incident about that person, a court's
legal hold on him or a second person's approval, and everything only with a written
reason that alerts the supervisors and the auditor before the reply leaves.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bangpae.adapters.clock import ManualClock
from bangpae.adapters.policyfile import DEFAULT_POLICY
from bangpae.api.factory import create_app
from bangpae.app import AppContext, build
from bangpae.cli import main
from bangpae.config import Settings
from bangpae.domain.model import Event, EventKind, Fix, Order, event_id
from tests.integration.conftest import signed_in
from tests.scenario import T0

N_FIXES = 5
REASON = "she called 112: he is at her door, ticket 2027-0115-31"


@dataclass
class Env:
    ctx: AppContext
    api: httpx.AsyncClient
    clock: ManualClock
    headers: dict[str, dict[str, str]]
    offender: int
    other: int
    victim: int
    ankle: int

    async def fixes(self, who: str, **params: Any) -> httpx.Response:
        return await self.api.get(
            f"/api/v1/devices/{self.ankle}/fixes", params=params, headers=self.headers[who]
        )

    def reads(self) -> list[dict[str, Any]]:
        return [
            r for r in self.ctx.store.audit_records(limit=100_000) if r["action"] == "read_position"
        ]

    def incident(self, person: int, n: int) -> int:
        event = Event(event_id("access", n), EventKind.TAMPER, self.clock.now(), person_id=person)
        iid, created = self.ctx.store.record_incident("tamper", "high", event)
        assert created
        return int(iid)


async def make_env(database_url: str, tmp_path: Path, policy: Path | None = None) -> Env:
    clock = ManualClock(T0)
    settings = Settings(
        data_dir=tmp_path, database_url=database_url, tick_s=60, access_policy=policy
    )
    ctx = build(settings, clock=clock)
    s = ctx.store
    off, vic = s.add_person("offender", "O"), s.add_person("victim", "V")
    other = s.add_person("offender", "P")
    ankle = s.add_device("ANKLE", "ankle_monitor", "osmand", off)
    s.add_device("ANKLE-P", "ankle_monitor", "osmand", other)
    s.add_order(Order(0, off, vic, valid_from=1.0))
    users = (
        ("op", "operator", None),
        ("op2", "operator", None),
        ("sup", "supervisor", None),
        ("sup2", "supervisor", None),
        ("aud", "auditor", None),
        ("judge", "judge", None),
        ("clerk", "clerk", None),
        ("him", "offender", off),
    )
    headers = signed_in(s, ctx.secret, users, T0, ttl_s=86400)
    await ctx.start()
    # where he was this morning, far from her: no incident
    await ctx.ingest.submit(
        [Fix(ankle, T0 - 600 + 60 * i, 37.60 + 0.001 * i, 127.1, 8.0) for i in range(N_FIXES)]
    )
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://test"
    )
    return Env(ctx, api, clock, headers, off, other, vic, ankle)


@pytest.fixture
async def env(database_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    e = await make_env(database_url, tmp_path)
    yield e
    await e.api.aclose()
    await e.ctx.stop()


def refused(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "fixes" not in r.json() and "lat" not in r.text
    if code is not None:
        assert r.json()["code"] == code, r.json()


# -- purposes ----------------------------------------------------------------------------------


async def test_a_free_text_or_missing_purpose_is_refused_and_nothing_is_read(env: Env) -> None:
    iid = env.incident(env.offender, 1)
    for params in (
        {"purpose": "operations", "incident": iid},  # what every read was called before
        {"purpose": "curiosity", "incident": iid},
        {"purpose": "Incident_Response", "incident": iid},
        {"incident": iid},
    ):
        r = await env.fixes("op", **params)
        refused(r, 422)
        assert r.json()["errors"][0]["loc"] == ["query", "purpose"]
    assert env.reads() == []


# -- a basis -----------------------------------------------------------------------------------


async def test_an_open_incident_about_him_lets_an_operator_read_audited_with_it(env: Env) -> None:
    iid = env.incident(env.offender, 1)
    r = await env.fixes("op", purpose="incident_response", incident=iid)
    assert r.status_code == 200, r.text
    assert len(r.json()["fixes"]) == N_FIXES
    [read] = env.reads()
    assert (read["actor"], read["subject"], read["purpose"]) == (
        f"user:{env.ctx.store.get_user_by_name('op').id}:op",
        f"device:{env.ankle}",
        "incident_response",
    )
    assert f"basis=incident:{iid}" in read["fields"] and f"count={N_FIXES}" in read["fields"]


async def test_without_a_basis_or_on_a_false_one_he_is_not_read(env: Env) -> None:
    theirs = env.incident(env.other, 1)
    mine = env.incident(env.offender, 2)
    await env.api.post(
        f"/api/v1/incidents/{mine}/resolve", json={"note": "ok"}, headers=env.headers["op"]
    )
    hold = env.ctx.store.place_hold(
        "person", env.other, None, None, "court 2027-2", actor="cli", role="admin", at=T0
    )
    for params, code in (
        ({}, "basis_required"),
        ({"incident": theirs}, "incident_not_open"),  # open, but about someone else
        ({"incident": mine}, "incident_not_open"),  # about him, but resolved
        ({"incident": 999_999}, "incident_not_open"),
        ({"incident": theirs, "break_glass": REASON}, "basis_required"),  # one basis only
    ):
        refused(await env.fixes("op", purpose="incident_response", **params), 403, code)
    refused(await env.fixes("op", purpose="court_order", hold=hold.id), 403, "hold_not_in_force")
    refused(await env.fixes("op", purpose="court_order", incident=theirs), 403)
    # dispatch suggestions read the parties' positions: only while the incident is open
    r = await env.api.get(f"/api/v1/incidents/{mine}/suggestions", headers=env.headers["op"])
    refused(r, 403, "incident_not_open")
    # the auditor, judge and clerk never read a position, whatever they name
    for who in ("aud", "judge", "clerk"):
        refused(await env.fixes(who, purpose="incident_response", incident=theirs), 403)
    assert env.reads() == []


async def test_a_legal_hold_on_him_is_the_basis_of_a_court_order_read(env: Env) -> None:
    hold = env.ctx.store.place_hold(
        "person", env.offender, None, None, "court 2027-1", actor="cli", role="admin", at=T0
    )
    r = await env.fixes("sup", purpose="court_order", hold=hold.id)
    assert r.status_code == 200 and len(r.json()["fixes"]) == N_FIXES
    assert f"basis=hold:{hold.id}" in env.reads()[-1]["fields"]
    env.ctx.store.release_hold(hold.id, "case closed", actor="cli", role="admin", at=T0 + 1)
    refused(await env.fixes("sup", purpose="court_order", hold=hold.id), 403, "hold_not_in_force")


async def test_each_basis_shows_only_the_fix_times_it_covers(env: Env) -> None:
    """An incident or a break-glass read shows an hour back (the policy's look-back), not
    his past: the week-old fix stays hidden; the court's range shows exactly that range."""
    old = T0 - 7 * 86400
    env.ctx.store.append_fixes([Fix(env.ankle, old, 37.7, 127.2, 9.0, received_at=old)])

    def times(r: httpx.Response) -> list[float]:
        assert r.status_code == 200, r.text
        return sorted(f["fix_time_epoch"] for f in r.json()["fixes"])

    recent = [T0 - 600 + 60 * i for i in range(N_FIXES)]
    iid = env.incident(env.offender, 1)  # opened at T0
    assert times(await env.fixes("op", purpose="incident_response", incident=iid)) == recent
    assert "from=2027-01-15T07:00:00.000Z" in env.reads()[-1]["fields"]
    r = await env.fixes("op", purpose="incident_response", break_glass=REASON)
    assert times(r) == recent
    hold = env.ctx.store.place_hold(
        "person", env.offender, old - 60, old + 60, "court 2027-3", actor="cli", role="admin", at=T0
    )
    assert times(await env.fixes("sup", purpose="court_order", hold=hold.id)) == [old]
    assert "to=2027-01-08T08:01:00.000Z" in env.reads()[-1]["fields"]


# -- a second person's approval ----------------------------------------------------------------


async def test_a_read_on_approval_needs_someone_else_to_approve_and_runs_out(env: Env) -> None:
    h = env.headers
    body = {"person_id": env.offender, "purpose": "verification_task", "reason": "strap alarm 4411"}
    r = await env.api.post("/api/v1/access/requests", json=body, headers=h["op"])
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert r.json()["status"] == "pending"
    refused(
        await env.fixes("op", purpose="verification_task", approval=rid), 403, "approval_pending"
    )
    url = f"/api/v1/access/requests/{rid}/approve"
    # not by the requester, not by a role the policy does not name
    refused(await env.api.post(url, headers=h["op"]), 403)
    refused(await env.api.post(url, headers=h["op2"]), 403)
    # a supervisor's own request: another supervisor approves it, never they themselves
    own = await env.api.post("/api/v1/access/requests", json=body, headers=h["sup"])
    own_url = f"/api/v1/access/requests/{own.json()['id']}/approve"
    refused(await env.api.post(own_url, headers=h["sup"]), 403, "approval_by_requester")
    assert (await env.api.post(own_url, headers=h["sup2"])).status_code == 200
    r = await env.api.post(url, headers=h["sup"])
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert r.json()["until"] == "2027-01-15T09:00:00.000Z"  # [approval].ttl_s = 3600
    refused(await env.api.post(url, headers=h["sup2"]), 409)
    # only the requester reads on it, only for that person and purpose
    refused(await env.fixes("op2", purpose="verification_task", approval=rid), 403)
    refused(await env.fixes("op", purpose="legal_defence", approval=rid), 403, "approval_mismatch")
    r = await env.fixes("op", purpose="verification_task", approval=rid)
    assert r.status_code == 200 and len(r.json()["fixes"]) == N_FIXES
    assert f"basis=approval:{rid}" in env.reads()[-1]["fields"]
    # an approval is not an incident: it cannot stand in for one, and it runs out
    refused(await env.fixes("op", purpose="incident_response", approval=rid), 403)
    env.clock.set(T0 + 3600)
    refused(
        await env.fixes("op", purpose="verification_task", approval=rid), 403, "approval_expired"
    )
    assert len(env.reads()) == 1
    # both steps are in the audit log
    actions = [r["action"] for r in env.ctx.store.audit_records(limit=1000)]
    assert actions.count("access_request") == 2 and actions.count("access_approve") == 2


async def test_a_request_for_a_purpose_not_given_on_approval_is_refused(env: Env) -> None:
    for purpose, who in (("incident_response", "op"), ("verification_task", "aud")):
        body = {"person_id": env.offender, "purpose": purpose, "reason": "just to look at him"}
        r = await env.api.post("/api/v1/access/requests", json=body, headers=env.headers[who])
        refused(r, 403, "request_refused")
    body = {"person_id": env.offender, "purpose": "operations", "reason": "just to look at him"}
    refused(
        await env.api.post("/api/v1/access/requests", json=body, headers=env.headers["op"]), 422
    )


# -- break-glass -------------------------------------------------------------------------------


async def test_break_glass_reads_with_a_reason_alerts_supervisors_and_the_auditor_first(
    env: Env,
) -> None:
    refused(
        await env.fixes("op", purpose="incident_response", break_glass="urgent"),
        403,
        "reason_required",
    )
    refused(await env.fixes("op", purpose="court_order", break_glass=REASON), 403)
    assert env.ctx.store.notices(audience="staff") == []
    r = await env.fixes("op", purpose="incident_response", break_glass=REASON)
    assert r.status_code == 200 and len(r.json()["fixes"]) == N_FIXES
    records = env.ctx.store.audit_records(limit=1000)
    glass = [x for x in records if x["action"] == "break_glass"]
    [read] = env.reads()
    assert [x["fields"] for x in glass] == [[f"reason={REASON}"]]
    assert glass[0]["id"] < read["id"] and "basis=break_glass" in read["fields"]
    told = env.ctx.store.notices(audience="staff")
    assert sorted(n.role for n in told) == ["auditor", "supervisor"]
    assert all(n.kind == "break_glass" and n.at == T0 for n in told)  # 0 s after the read
    assert all(f"#{glass[0]['id']}" in n.text["en"] for n in told)
    r = await env.api.get("/api/v1/notices", headers=env.headers["aud"])
    assert [n["kind"] for n in r.json() if n["role"] == "auditor"] == ["break_glass"]


# -- the policy file ---------------------------------------------------------------------------


async def test_the_policy_file_decides_and_a_broken_one_stops_the_start(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    narrow = tmp_path / "narrow.toml"
    narrow.write_text(
        DEFAULT_POLICY.read_text().replace(
            'purposes = ["incident_response", "dispatch", "police_handoff"]',
            'purposes = ["dispatch"]',
        )
    )
    e = await make_env(database_url, tmp_path / "a", policy=narrow)
    try:
        iid = e.incident(e.offender, 1)
        refused(await e.fixes("op", purpose="incident_response", incident=iid), 403)
        r = await e.fixes("op", purpose="dispatch", incident=iid)
        assert r.status_code == 200 and len(r.json()["fixes"]) == N_FIXES
        url = f"/api/v1/incidents/{iid}/handoff"  # his positions to the police: not any more
        refused(await e.api.post(url, json={"channel": "sms"}, headers=e.headers["op"]), 403)
    finally:
        await e.api.aclose()
        await e.ctx.stop()
    broken = tmp_path / "broken.toml"
    broken.write_text(DEFAULT_POLICY.read_text().replace('"auditor"]', '"auditer"]', 1))
    with pytest.raises(SystemExit, match="unknown role 'auditer'") as err:
        build(Settings(data_dir=tmp_path / "b", database_url=database_url, access_policy=broken))
    assert str(broken) in str(err.value)
    # `bangpae serve` reads it from the environment, and stops before serving anything
    monkeypatch.setenv("BANGPAE_ACCESS_POLICY", str(broken))
    with pytest.raises(SystemExit, match="unknown role 'auditer'"):
        main(["serve", "--data-dir", str(tmp_path / "c"), "--database-url", database_url])


# -- the auditor's review ----------------------------------------------------------------------


async def reads_of_a_day(env: Env) -> dict[str, int]:
    """Two incident reads by op, one break-glass by op2, one approved read by op."""
    iid = env.incident(env.offender, 1)
    for _ in range(2):
        assert (await env.fixes("op", purpose="incident_response", incident=iid)).is_success
    env.clock.set(T0 + 60)
    assert (await env.fixes("op2", purpose="verification_task", break_glass=REASON)).is_success
    body = {"person_id": env.offender, "purpose": "legal_defence", "reason": "counsel asked"}
    rid = (
        await env.api.post("/api/v1/access/requests", json=body, headers=env.headers["op"])
    ).json()["id"]
    await env.api.post(f"/api/v1/access/requests/{rid}/approve", headers=env.headers["sup"])
    env.clock.set(T0 + 120)
    assert (await env.fixes("op", purpose="legal_defence", approval=rid)).is_success
    return {"incident": iid, "request": rid}


async def test_the_access_review_counts_who_read_whom_on_which_basis(env: Env) -> None:
    ids = await reads_of_a_day(env)
    refused(await env.api.get("/api/v1/audit/access-review", headers=env.headers["sup"]), 403)
    r = await env.api.get(
        "/api/v1/audit/access-review",
        params={"since": "2027-01-15T08:00:00Z", "until": "2027-01-15T09:00:00Z"},
        headers=env.headers["aud"],
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["totals"] == {
        "reads": 4,
        "readers": 2,
        "break_glass": 1,
        "requests": 1,
        "approvals": 1,
        "by_basis": {
            f"approval:{ids['request']}": 1,
            "break_glass": 1,
            f"incident:{ids['incident']}": 2,
        },
    }
    glass_reader, op = out["readers"]
    assert glass_reader["actor"].endswith(":op2") and glass_reader["break_glass"] == 1
    assert op["actor"].endswith(":op") and op["reads"] == 3
    assert op["subjects"] == {f"device:{env.ankle}": 3}
    assert op["people"] == {f"person:{env.offender}": 3}  # whose positions, not which device
    assert op["purposes"] == {"incident_response": 2, "legal_defence": 1}
    [glass] = out["break_glass"]
    assert (glass["reason"], glass["at"]) == (REASON, "2027-01-15T08:01:00.000Z")
    [approval] = out["approvals"]
    assert approval["approved_by"].endswith(":sup") and approval["reads"] == 1
    # a range with none of it counts none of it
    r = await env.api.get(
        "/api/v1/audit/access-review",
        params={"since": "2027-01-15T08:02:01Z"},
        headers=env.headers["aud"],
    )
    assert r.json()["totals"]["reads"] == 0
    assert env.ctx.store.audit_records(limit=1000)[-1]["action"] == "access_review"


async def test_the_review_command_tells_the_same(
    env: Env, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await reads_of_a_day(env)
    argv = ["--data-dir", str(tmp_path), "--database-url", database_url]
    since = ["--since", "2027-01-15T08:00:00Z", "--until", "2027-01-15T09:00:00+00:00"]
    assert main(["audit", "review", *argv, *since, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["reads"] == 4 and out["totals"]["break_glass"] == 1
    assert main(["audit", "review", *argv, *since]) == 0
    text = capsys.readouterr().out
    assert "4 reads by 2 readers, 1 break-glass, 1 approvals of 1 requests" in text
    assert "BREAK-GLASS 2027-01-15T08:01:00.000Z" in text and REASON in text
    assert f"(operator): 3 reads of person:{env.offender} x3; " in text


# -- his right to know -------------------------------------------------------------------------


async def test_his_report_lists_the_reads_of_his_positions_by_role_and_purpose(
    env: Env, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await reads_of_a_day(env)
    # someone else's positions are not in his report
    theirs = env.incident(env.other, 9)
    other_device = env.ctx.store.get_device("ANKLE-P").id
    r = await env.api.get(
        f"/api/v1/devices/{other_device}/fixes",
        params={"purpose": "incident_response", "incident": theirs},
        headers=env.headers["op"],
    )
    assert r.status_code == 200
    refused(
        await env.api.get(
            f"/api/v1/people/{env.offender}/position-reads", headers=env.headers["op"]
        ),
        403,
    )
    refused(
        await env.api.get(
            f"/api/v1/people/{env.offender}/position-reads", headers=env.headers["him"]
        ),
        403,
    )
    r = await env.api.get(
        f"/api/v1/people/{env.offender}/position-reads", headers=env.headers["judge"]
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert [(x["role"], x["purpose"], x["basis"]) for x in report["reads"]] == [
        ("operator", "incident_response", f"incident:{ids['incident']}"),
        ("operator", "incident_response", f"incident:{ids['incident']}"),
        ("operator", "verification_task", "break_glass"),
        ("operator", "legal_defence", f"approval:{ids['request']}"),
    ]
    assert report["total"] == 4
    assert ":op" not in r.text and "actor" not in r.text  # roles, never names
    # the command writes the same for the court and his counsel
    out = tmp_path / "report.json"
    argv = ["--data-dir", str(tmp_path), "--database-url", database_url]
    code = main(
        ["audit", "subject-report", *argv, "--person", str(env.offender), "--out", str(out)]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["reads"] == 4
    written = json.loads(out.read_text())
    assert written["reads"] == report["reads"] and written["person_id"] == env.offender
    records = env.ctx.store.audit_records(limit=1000)
    assert [x["action"] for x in records[-2:]] == ["subject_report", "subject_report"]


async def test_his_report_leaves_out_the_reads_of_her_position_on_their_incidents(
    env: Env,
) -> None:
    store = env.ctx.store
    officer = store.add_person("officer", "F")
    env.headers |= signed_in(
        store, env.ctx.secret, [("officer", "field_officer", officer)], T0, ttl_s=86400
    )
    phone = store.add_device("PHONE", "phone", "osmand", env.victim)
    await env.ctx.ingest.submit([Fix(phone, T0 - 30, 37.50, 127.0, 5.0)])
    order = store.orders_for_person(env.offender)[0].id
    event = Event(event_id("access", 50), EventKind.SOS, T0, order_id=order, person_id=env.victim)
    iid, _ = store.record_incident("sos", "critical", event)
    r = await env.api.post(
        f"/api/v1/incidents/{iid}/dispatch",
        json={"note": "", "officer_id": officer},
        headers=env.headers["op"],
    )
    assert r.status_code == 200, r.text
    # the officer is sent to her, who asked for help: her position is read
    r = await env.api.get("/api/v1/field/dispatches", headers=env.headers["officer"])
    assert r.json()["dispatches"][0]["target"]["whom"] == "requester"
    # the suggestions read both parties' last positions
    r = await env.api.get(f"/api/v1/incidents/{iid}/suggestions", headers=env.headers["op"])
    assert r.status_code == 200

    async def report(person: int) -> list[tuple[str, str]]:
        r = await env.api.get(
            f"/api/v1/people/{person}/position-reads", headers=env.headers["clerk"]
        )
        assert r.status_code == 200, r.text
        return [(x["role"], x["purpose"]) for x in r.json()["reads"]]

    # the officer is told where he is too (a party of the incident's order): his read
    assert await report(env.offender) == [("field_officer", "dispatch"), ("operator", "dispatch")]
    assert await report(env.victim) == [("field_officer", "dispatch"), ("operator", "dispatch")]
