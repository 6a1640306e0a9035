"""Her SOS loop on the real composition root (docs/sos.md), and what a field officer is
shown of a dispatch (docs/disclosure.md): SQLite (and PostgreSQL where present)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from geographiclib.geodesic import Geodesic

from bangpae.adapters.clock import ManualClock
from bangpae.api.factory import create_app
from bangpae.app import AppContext, build
from bangpae.config import Settings
from bangpae.domain.model import Fix, Order
from bangpae.services import sos as sos_service
from bangpae.services.auth import Principal
from tests.integration.conftest import signed_in
from tests.scenario import HOME, T0


def at(d: float, bearing: float = 90.0) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(HOME[0], HOME[1], bearing, d)
    return g["lat2"], g["lon2"]


def fix(device: int, t: float, d: float, bearing: float = 90.0) -> Fix:
    lat, lon = at(d, bearing)
    return Fix(device, T0 + t, lat, lon, 5.0)


@dataclass
class Env:
    ctx: AppContext
    api: httpx.AsyncClient
    clock: ManualClock
    h: dict[str, dict[str, str]]
    order: int
    ankle: int
    phone: int
    officer: int
    vic: int


@pytest.fixture
async def env(database_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    clock = ManualClock(T0)
    settings = Settings(
        data_dir=tmp_path, database_url=database_url, tick_s=60, public_url="https://b.example"
    )
    ctx = build(settings, clock=clock)
    s = ctx.store
    off = s.add_person("offender", "O")
    vic = s.add_person("victim", "V")
    other = s.add_person("victim", "W")
    ankle = s.add_device("ANKLE", "ankle_monitor", "osmand", off)
    phone = s.add_device("PHONE", "phone", "osmand", vic)
    order = s.add_order(Order(0, off, vic))
    officer = s.add_person("officer", "Officer Kim")
    field = s.add_device("FIELD-1", "phone", "osmand", officer)
    s.append_fixes([fix(field, -30, 1000.0, bearing=0.0)])
    users = (
        ("op", "operator", None),
        ("vic", "victim", vic),
        ("other", "victim", other),
        ("kim", "field_officer", officer),
    )
    h = signed_in(s, ctx.secret, users, T0)
    await ctx.start()
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://test"
    )
    yield Env(ctx, api, clock, h, order, ankle, phone, officer, vic)
    await api.aclose()
    await ctx.stop()


async def sos(env: Env, silent: bool = False) -> int:
    lat, lon = at(0)
    r = await env.api.post(
        "/api/v1/victim/sos",
        json={"lat": lat, "lon": lon, "accuracy_m": 5, "silent": silent},
        headers=env.h["vic"],
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"sent", "silent", "at", "sos_id"} and body["sent"] is True
    assert isinstance(body["sos_id"], int)
    return int(body["sos_id"])


async def loop(env: Env, who: str = "vic") -> list[dict]:
    r = await env.api.get("/api/v1/victim/sos", headers=env.h[who])
    assert r.status_code == 200, r.text
    return list(r.json()["sos"])


async def act(env: Env, iid: int, action: str, **body: object) -> None:
    r = await env.api.post(f"/api/v1/incidents/{iid}/{action}", json=body, headers=env.h["op"])
    assert r.status_code == 200, r.text


async def test_her_sos_loop_says_what_was_done_as_it_is_done_and_never_who_or_where(
    env: Env,
) -> None:
    await env.ctx.ingest.submit([fix(env.ankle, -60, 5000)])
    iid = await sos(env, silent=True)
    [first] = await loop(env)
    assert first == {
        "id": iid,
        "at": "2027-01-15T08:00:00.000Z",
        "silent": True,
        "state": "received",
        "steps": [{"state": "received", "at": "2027-01-15T08:00:00.000Z"}],
        "eta_min": None,
        "cancelled": False,
    }
    env.clock.set(T0 + 20)
    await act(env, iid, "acknowledge", note="calling the duty officer")
    assert (await loop(env))[0]["state"] == "seen"
    env.clock.set(T0 + 30)
    await act(env, iid, "dispatch", officer_id=env.officer, note="back entrance")
    [assigned] = await loop(env)
    # 1 km at 40 km/h: 90 s, said as 2 minutes
    assert assigned["state"] == "officer_assigned" and assigned["eta_min"] == 2
    env.clock.set(T0 + 100)
    await act(env, iid, "on-scene")
    r = await env.api.post(
        f"/api/v1/incidents/{iid}/handoff", json={"channel": "sms"}, headers=env.h["op"]
    )
    assert r.status_code == 201, r.text
    env.clock.set(T0 + 200)
    await act(env, iid, "resolve", note="Officer Kim took her home")
    [done] = await loop(env)
    assert [s["state"] for s in done["steps"]] == [
        "received",
        "seen",
        "officer_assigned",
        "officer_on_scene",
        "police_informed",
        "closed",
    ]
    assert done["state"] == "closed" and done["eta_min"] is None
    text = json.dumps(done)
    for secret in ("Kim", "officer_id", "person", "lat", "lon", "note", "entrance", "eta_s"):
        assert secret not in text
    assert await loop(env, "other") == []
    # a day after it closed it has left her list
    her = Principal(2, "vic", "victim", env.vic)
    assert sos_service.victim_sos(env.ctx.store, her, T0 + 200 + 24 * 3600 - 1) == [done]
    assert sos_service.victim_sos(env.ctx.store, her, T0 + 200 + 24 * 3600 + 1) == []


async def test_i_am_safe_leaves_it_open_and_her_duress_pin_looks_exactly_the_same(
    env: Env,
) -> None:
    r = await env.api.put(
        "/api/v1/victim/pins", json={"app_pin": "1234", "duress_pin": "9876"}, headers=env.h["vic"]
    )
    assert r.status_code == 204, r.text
    first = await sos(env)
    r_safe = await env.api.post(
        f"/api/v1/victim/sos/{first}/cancel", json={"pin": "1234"}, headers=env.h["vic"]
    )
    record = env.ctx.store.get_incident(first)
    assert record.status == "open" and record.timeline[-1]["action"] == "victim_cancel"
    assert not record.duress
    await act(env, first, "resolve", note="she is fine")
    env.clock.set(T0 + 60)
    second = await sos(env)  # her app never reported in between: a new SOS all the same
    assert second != first
    r_duress = await env.api.post(
        f"/api/v1/victim/sos/{second}/cancel", json={"pin": "9876"}, headers=env.h["vic"]
    )
    assert r_safe.status_code == r_duress.status_code == 200
    assert r_safe.content == r_duress.content == b'{"cancelled":true}'
    record = env.ctx.store.get_incident(second)
    assert record.status == "open" and record.priority == "critical" and record.duress
    assert record.timeline[-1]["action"] == "duress"
    assert record.timeline[-1]["data"]["silent"] is True
    # operators see it in the list and on the incident
    listed = (await env.api.get("/api/v1/incidents", headers=env.h["op"])).json()
    assert [i["duress"] for i in listed if i["id"] == second] == [True]
    # she sees what a cancel looks like, nothing of the duress
    shown = await loop(env)
    assert [(s["id"], s["cancelled"]) for s in shown] == [(second, True), (first, True)]
    assert "duress" not in json.dumps(shown)
    # someone else's SOS, or no SOS at all: not found
    r = await env.api.post(
        f"/api/v1/victim/sos/{second}/cancel", json={"pin": None}, headers=env.h["other"]
    )
    assert r.status_code == 404
    r = await env.api.post(
        "/api/v1/victim/sos/999999/cancel", json={"pin": None}, headers=env.h["vic"]
    )
    assert r.status_code == 404


async def test_pins_are_kept_as_hashes_and_her_duress_pin_opens_the_app_and_calls_for_help(
    env: Env,
) -> None:
    pins = "/api/v1/victim/pins"
    r = await env.api.get(pins, headers=env.h["vic"])
    assert r.json() == {"app_pin_set": False}
    for bad in (
        {"app_pin": "1234", "duress_pin": "1234"},
        {"app_pin": None, "duress_pin": "1234"},  # a duress PIN needs an app PIN
        {"app_pin": "12a4", "duress_pin": None},
        {"app_pin": "123", "duress_pin": None},
        {"app_pin": "123456789", "duress_pin": None},
    ):
        r = await env.api.put(pins, json=bad, headers=env.h["vic"])
        assert r.status_code == 422, bad
    r = await env.api.put(
        pins, json={"app_pin": "2468", "duress_pin": "13579"}, headers=env.h["vic"]
    )
    assert r.status_code == 204
    # whether a duress PIN is set is never said: whoever holds her phone would doubt it
    assert (await env.api.get(pins, headers=env.h["vic"])).json() == {"app_pin_set": True}
    app_hash, duress_hash = env.ctx.store.pins(2)  # users: op=1, vic=2
    assert app_hash.startswith("$argon2id$") and "2468" not in app_hash
    assert duress_hash.startswith("$argon2id$") and "13579" not in duress_hash

    check = "/api/v1/victim/pin/check"
    r = await env.api.post(check, json={"pin": "2468"}, headers=env.h["vic"])
    assert r.json() == {"ok": True}
    assert env.ctx.store.incidents(status="open") == []
    r_duress = await env.api.post(check, json={"pin": "13579"}, headers=env.h["vic"])
    assert r_duress.content == b'{"ok":true}'
    [raised] = env.ctx.store.incidents(status="open")
    record = env.ctx.store.get_incident(raised.id)
    assert record.kind == "sos" and record.priority == "critical" and record.duress
    events = [e for e in record.timeline if e["action"] == "event"]
    assert events[0]["data"]["data"]["alarm"] == "sos_silent"
    assert await loop(env) == []  # never on her phone: whoever made her open it is looking

    for _ in range(5):
        r = await env.api.post(check, json={"pin": "0000"}, headers=env.h["vic"])
        assert r.json() == {"ok": False}
    r = await env.api.post(check, json={"pin": "2468"}, headers=env.h["vic"])
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    env.clock.set(T0 + 301)
    r = await env.api.post(check, json={"pin": "2468"}, headers=env.h["vic"])
    assert r.json() == {"ok": True}
    audit = [a for a in env.ctx.store.audit_records(limit=1000) if a["action"] == "pin_check"]
    assert [a["fields"] for a in audit] == [["ok=true"]] * 2 + [["ok=false"]] * 5 + [["ok=true"]]
    cleared = {"current_pin": "2468", "app_pin": None, "duress_pin": None}
    r = await env.api.put(pins, json=cleared, headers=env.h["vic"])
    assert r.status_code == 204
    assert (await env.api.get(pins, headers=env.h["vic"])).json() == {"app_pin_set": False}
    assert env.ctx.store.pins(2) == (None, None)


# -- what a field officer is shown of a dispatch ---------------------------------------------


async def dispatches(env: Env) -> list[dict]:
    r = await env.api.get("/api/v1/field/dispatches", headers=env.h["kim"])
    assert r.status_code == 200, r.text
    return list(r.json()["dispatches"])


async def test_an_officer_sent_to_her_sos_is_told_she_asked_for_help_with_the_dispatch_note(
    env: Env,
) -> None:
    await env.ctx.ingest.submit([fix(env.ankle, -5, 400)])
    iid = await sos(env)
    await act(env, iid, "dispatch", officer_id=env.officer, note="back entrance, 3rd floor")
    [d] = await dispatches(env)
    assert d["id"] == iid and d["dispatch_note"] == "back entrance, 3rd floor"
    assert d["target"]["whom"] == "requester"  # not "the supervised person"
    assert (d["target"]["lat"], d["target"]["lon"]) == pytest.approx(at(0), abs=1e-6)
    # her SOS names no order: he is not a subject of it, and is not read for it
    assert d["offender"] is None
    reads = [a for a in env.ctx.store.audit_records(limit=1000) if a["role"] == "field_officer"]
    assert [(a["subject"], a["purpose"]) for a in reads] == [
        (f"incident:{iid}/person:{env.vic}", "dispatch")
    ]


async def test_an_officer_sent_to_a_breach_goes_to_her_and_is_told_where_he_is_audited(
    env: Env,
) -> None:
    await env.ctx.ingest.submit([fix(env.phone, 0, 0), fix(env.ankle, 0, 3000)])
    env.clock.set(T0 + 10)
    await env.ctx.ingest.submit([fix(env.phone, 10, 0), fix(env.ankle, 10, 50)])
    [breach] = [i for i in env.ctx.store.incidents(status="open") if i.kind == "breach"]
    await act(env, breach.id, "dispatch", officer_id=env.officer)
    [d] = await dispatches(env)
    assert d["target"]["whom"] == "victim" and d["dispatch_note"] is None
    assert set(d["offender"]) == {"lat", "lon", "accuracy_m", "fix_time", "age_s"}
    assert (d["offender"]["lat"], d["offender"]["lon"]) == pytest.approx(at(50), abs=1e-6)
    off = env.ctx.store.get_order(env.order).offender_id
    reads = [a for a in env.ctx.store.audit_records(limit=1000) if a["role"] == "field_officer"]
    assert sorted(a["subject"] for a in reads) == sorted(
        [f"incident:{breach.id}/person:{env.vic}", f"incident:{breach.id}/person:{off}"]
    )
    # the field list polls every 5 s: each poll is kept, and she sees one row for them
    for k in range(1, 12):
        env.clock.set(T0 + 10 + 5 * k)
        await dispatches(env)
    records = env.ctx.store.audit_records(limit=1000)
    assert sum(a["subject"] == f"incident:{breach.id}/person:{env.vic}" for a in records) == 12
    r = await env.api.get("/api/v1/victim/accesses", headers=env.h["vic"])
    officer_rows = [x for x in r.json() if x["role"] == "field_officer"]
    assert officer_rows == [
        {
            "at": "2027-01-15T08:01:05.000Z",
            "role": "field_officer",
            "purpose": "dispatch",
            "fields": ["lat", "lon", "accuracy_m"],
            "count": 12,
            "first_at": "2027-01-15T08:00:10.000Z",
            "last_at": "2027-01-15T08:01:05.000Z",
        }
    ]  # his position read for the officer is his, not hers
    codes = re.compile(r"^[a-z_]+$")
    assert all(codes.match(x["role"]) and codes.match(x["purpose"]) for x in r.json())
    # reads more than 10 minutes apart are two rows
    env.clock.set(T0 + 10 + 55 + 601)
    await dispatches(env)
    r = await env.api.get("/api/v1/victim/accesses", headers=env.h["vic"])
    assert [x["count"] for x in r.json() if x["role"] == "field_officer"] == [1, 12]


async def test_an_sos_pressed_again_after_i_am_safe_is_shown_as_a_new_call_for_help(
    env: Env,
) -> None:
    """She said she was safe, then pressed SOS again while the operator had not yet closed
    the first: the press joins the open incident, and her loop shows it received, with
    "I am safe" offered again; nothing of the cancel hides her new call."""
    first = await sos(env)
    r = await env.api.post(
        f"/api/v1/victim/sos/{first}/cancel", json={"pin": None}, headers=env.h["vic"]
    )
    assert r.status_code == 200, r.text
    [shown] = await loop(env)
    assert shown["cancelled"] is True
    env.clock.set(T0 + 30)
    again = await sos(env)
    assert again == first  # the incident is still open: the press joined it
    [shown] = await loop(env)
    assert shown["cancelled"] is False and shown["state"] == "received"
    assert [s["state"] for s in shown["steps"]] == ["received", "received"]
    assert shown["steps"][-1]["at"] > shown["steps"][0]["at"]
    # the operator's steps after it are shown again
    await act(env, first, "acknowledge", note="")
    [shown] = await loop(env)
    assert shown["state"] == "seen"
