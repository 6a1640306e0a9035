"""The authorization matrix: every route of the app, called by every role, checked.

One table, ``ROUTES``, says for each route (method and path; WebSockets as ``WS``)
who may call it, what object-level rule applies on top of the role, and which
positions it may return. The expected answer of every call follows from that
table alone:

- ``bearer`` routes: no token, a forged one, or one whose session was revoked →
  401; a valid token of a role not listed, or one that may only enrol a second
  factor → 403; a listed role → 2xx on its own object. Where the object belongs
  to someone else the answer is 404, never 403, because even its existence is
  not the caller's business (a field officer asking about an incident not
  dispatched to them or whose dispatch has ended, a user removing another's
  push subscription);
- ``public`` routes: 2xx whatever the caller sends;
- ``secret`` routes, where a secret in the request is the credential (the
  police live link of a hand-off, a refresh token): 2xx with a live secret, and
  refused with a spent one, whoever sends it. The police role's bearer token
  opens nothing but ``/me``: the police see a case through the link of an open
  hand-off, and only while it is open;
- ``device`` routes: a user's bearer token is no device credential and is
  refused; a device may send only its own fixes (403 for another's);
- WebSockets close with 4401 where a route answers 401, and 4403 where it
  answers 403.

Positions are checked against the disclosure policy itself: any reply carrying a
position (an object with numeric ``lat`` and ``lon``) must come from a route that
declares the relation and purpose of that read, the policy must allow it for the
caller's role, and an audit record of the read must have been written
(docs/access-policy.md). So an auditor, clerk, judge or admin never sees a live position, whatever
route is added later.

Every route of the app must have a row, and every row a route, so the table
cannot fall behind the code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pyotp
import pytest
import pytest_asyncio
from fastapi.routing import iter_route_contexts
from geographiclib.geodesic import Geodesic
from starlette.routing import Mount, WebSocketRoute

from bangpae.adapters.clock import ManualClock
from bangpae.adapters.policyfile import load_policy
from bangpae.app import AppContext, build, http_app
from bangpae.config import Settings
from bangpae.domain import disclosure
from bangpae.domain.access import Basis, Purpose
from bangpae.domain.disclosure import Relation
from bangpae.domain.model import Event, EventKind, Fix, Order, event_id
from bangpae.domain.refuge import parse_collection
from bangpae.services import sessions
from bangpae.services.auth import SCOPE_ENROL, SCOPE_FULL, Principal, hash_password, issue_token
from bangpae.services.response import DISPATCH_PURPOSE, HANDOFF_PURPOSE
from tests.scenario import HOME, T0

in_world_loop = pytest.mark.asyncio(loop_scope="module")  # the world's event loop
POLICY = load_policy()  # the shipped access policy, which the world's app runs with

PW = "correct-horse-battery-staple-7"
NEW_PW = "violet-quarry-lantern-93-otter"
KEY = "device-secret-for-the-matrix"

ANONYMOUS = "anonymous"  # no token at all
FORGED = "forged"  # an admin's token signed with another key
REVOKED = "revoked"  # a supervisor's token whose session was revoked
ENROLLING = "enrolling"  # an operator who has not enrolled a second factor yet
STRANGERS = (ANONYMOUS, FORGED, REVOKED)
PRINCIPALS = (*disclosure.ROLES, *STRANGERS, ENROLLING)

ALL_ROLES = frozenset(disclosure.ROLES)
STAFF = frozenset({"operator", "supervisor"})
ADMINISTRATION = frozenset({"admin", "supervisor"})
REGISTRARS = frozenset({"admin", "supervisor", "operator"})
SUBSCRIBERS = frozenset({"victim", "operator", "supervisor"})  # who is sent notices
SECOND_FACTOR = ALL_ROLES - {"victim", "offender"}  # the parties' apps have no TOTP step


def at(d: float, bearing: float = 90.0) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(HOME[0], HOME[1], bearing, d)
    return g["lat2"], g["lon2"]


# -- the world ---------------------------------------------------------------------------------


@dataclass
class World:
    """Two orders, their parties' devices and fixes, incidents, hand-offs, a user per role."""

    ctx: AppContext
    app: Any
    api: httpx.AsyncClient
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # principal -> bearer
    users: dict[str, int] = field(default_factory=dict)  # principal -> user id
    person: dict[str, int | None] = field(default_factory=dict)  # principal -> person id
    orders: dict[str, int] = field(default_factory=dict)
    incidents: dict[str, int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    serial: int = 0

    def next(self) -> int:
        self.serial += 1
        return self.serial

    @property
    def staff(self) -> dict[str, str]:
        return self.headers["operator"]

    def user(
        self, principal: str, role: str, person: int | None = None, password: bool = False
    ) -> tuple[int, dict[str, str], Any]:
        """A user of a role, signed in: its id, bearer headers and session."""
        pw_hash = hash_password(PW) if password else "not-a-password-hash"
        uid = self.ctx.store.add_user(principal, pw_hash, role, person)
        scope = SCOPE_ENROL if principal.startswith(ENROLLING) else SCOPE_FULL
        user = self.ctx.store.get_user_by_name(principal)
        issued = sessions.open_session(
            self.ctx.store, self.ctx.settings, self.ctx.secret, user, scope, T0
        )
        return uid, {"Authorization": f"Bearer {issued.access_token}"}, issued

    def throwaway(self, who: str, password: bool = False) -> tuple[int, dict[str, str], Any]:
        """A new user with the caller's role and scope, for calls that end sessions or
        change the user (strangers keep their own headers)."""
        n = self.next()
        if who in STRANGERS:
            uid, _, issued = self.user(f"spare-{n}", "operator", password=password)
            return uid, self.headers[who], issued
        role = "operator" if who == ENROLLING else who
        name = f"{ENROLLING}-{n}" if who == ENROLLING else f"spare-{n}"
        return self.user(name, role, password=password)

    async def incident(self, dispatched_to: int | None = None, ended: bool = False) -> int:
        """A fresh open incident (a tamper alarm of a new supervised person)."""
        n = self.next()
        store = self.ctx.store
        person = store.add_person("offender", f"Fresh {n}")
        event = Event(event_id("authz-matrix", n), EventKind.TAMPER, T0, person_id=person)
        iid, created = store.record_incident("tamper", "high", event)
        assert created
        if dispatched_to is not None:
            await self.act(iid, "dispatch", officer_id=dispatched_to)
        if ended:
            await self.act(iid, "resolve", outcome="resolved")
        return int(iid)

    async def act(self, iid: int, action: str, **body: Any) -> None:
        r = await self.api.post(
            f"/api/v1/incidents/{iid}/{action}", json={"note": "", **body}, headers=self.staff
        )
        assert r.status_code == 200, r.text

    async def handoff(self, iid: int) -> tuple[int, str]:
        """A new hand-off of an incident, by e-mail: its id and its live link's token."""
        r = await self.api.post(
            f"/api/v1/incidents/{iid}/handoff", json={"channel": "email"}, headers=self.staff
        )
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["live_url"].rsplit("/", 1)[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    clock = ManualClock(T0)
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("authz"),
        tick_s=60,  # no background timer races the matrix
        public_url="https://bangpae.example",
    )
    ctx = build(settings, clock=clock)
    s = ctx.store
    off1, vic1 = s.add_person("offender", "Offender 1"), s.add_person("victim", "Victim 1")
    off2, vic2 = s.add_person("offender", "Offender 2"), s.add_person("victim", "Victim 2")
    officer_a, officer_b = (
        s.add_person("officer", "Officer A"),
        s.add_person("officer", "Officer B"),
    )
    ankle1 = s.add_device("ANKLE-1", "ankle_monitor", "osmand", off1)
    phone1 = s.add_device("PHONE-1", "phone", "osmand", vic1)
    ankle2 = s.add_device("KEYED-2", "ankle_monitor", "api", off2, hash_password(KEY))
    phone2 = s.add_device("PHONE-2", "phone", "osmand", vic2)
    s.add_device("owntracks/kim/phone", "phone", "owntracks", s.add_person("victim", "Kim"))
    order1 = s.add_order(Order(0, off1, vic1, valid_from=1.0))
    order2 = s.add_order(Order(0, off2, vic2, valid_from=1.0))

    await ctx.start()
    app = http_app(ctx)
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    w = World(ctx, app, api)
    w.orders = {"own": order1, "other": order2}
    w.person = {"victim": vic1, "offender": off1, "field_officer": officer_a}
    w.person |= {"victim-2": vic2, "officer-b": officer_b}
    for role in disclosure.ROLES:
        # only the victim signs in with her password here: signing in is tested elsewhere
        w.users[role], w.headers[role], _ = w.user(
            f"user-{role}", role, w.person.get(role), password=role == "victim"
        )
    for name, role in (("victim-2", "victim"), ("officer-b", "field_officer")):
        w.users[name], w.headers[name], _ = w.user(name, role, w.person[name])
    w.users[ENROLLING], w.headers[ENROLLING], _ = w.user(ENROLLING, "operator")
    w.headers[ANONYMOUS] = {}
    admin = Principal(w.users["admin"], "user-admin", "admin", None, 1, SCOPE_FULL)
    forged = issue_token(admin, secrets.token_bytes(32), T0, ttl_s=3600)
    w.headers[FORGED] = {"Authorization": f"Bearer {forged}"}
    _, w.headers[REVOKED], revoked = w.user(REVOKED, "supervisor")
    assert s.revoke_session(revoked.session_id, T0, "revoked_by_admin")

    # Offender 1 comes within 50 m of victim 1 (breach, his position shown to her);
    # offender 2 stays 1.5 km from victim 2 (notify) and cuts his strap (a tamper incident).
    far = at(5000, 0.0)
    await ctx.ingest.submit(  # the victims' tracks: two agreeing reports each
        [Fix(phone1, T0 - 30, *HOME, 5.0), Fix(phone2, T0 - 30, *at(3500, 0.0), 5.0)]
    )
    await ctx.ingest.submit(
        [
            Fix(phone1, T0 - 20, *HOME, 5.0),
            Fix(phone2, T0 - 20, *at(3500, 0.0), 5.0),
            Fix(ankle2, T0 - 20, *far, 5.0),
        ]
    )
    await ctx.ingest.submit(
        [
            Fix(ankle1, T0 - 10, *at(50), 5.0),
            Fix(ankle2, T0 - 10, *far, 5.0, alarms=frozenset({"tamper"})),
        ]
    )
    open_ = {i.kind: i.id for i in s.incidents("open")}
    assert {"breach", "tamper"} <= set(open_), open_
    w.incidents = {"mine": open_["breach"], "theirs": open_["tamper"]}
    await w.act(open_["breach"], "dispatch", officer_id=officer_a)
    await w.act(open_["tamper"], "dispatch", officer_id=officer_b)
    w.incidents["ended"] = await w.incident(dispatched_to=officer_a, ended=True)
    # officer A reports where he is, so dispatch suggestions have someone to suggest
    r = await api.post(
        "/api/v1/field/location",
        json={"lat": at(1000, 0.0)[0], "lon": at(1000, 0.0)[1], "accuracy_m": 10},
        headers=w.headers["field_officer"],
    )
    assert r.status_code == 202, r.text
    _, w.links["open"] = await w.handoff(w.incidents["mine"])
    closed_id, w.links["closed"] = await w.handoff(w.incidents["mine"])
    assert (
        await api.post(
            f"/api/v1/incidents/{w.incidents['mine']}/handoffs/{closed_id}/close",
            json={"note": "case handed back"},
            headers=w.staff,
        )
    ).status_code == 200

    # both protected people are told that he is near
    def told() -> bool:
        return bool(s.notices(person_id=vic1) and s.notices(person_id=vic2))

    async with asyncio.timeout(5):
        while not told():  # noqa: ASYNC110 - notices are sent by their own task
            await asyncio.sleep(0.01)
    yield w
    await api.aclose()
    await ctx.stop()


# -- how each route is called ------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request: method, path, JSON body, and headers that replace the caller's
    (a device's credentials, or a spare session for calls that end one)."""

    method: str
    path: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None  # a raw body instead of JSON (a recording)


Build = Callable[[World, str, str], Awaitable[Call]]  # (world, caller, variant) -> request


def get(path: str) -> Build:
    async def build(w: World, who: str, variant: str) -> Call:
        return Call("GET", path)

    return build


def on_order(method: str, path: str, body: Any = None, order: str = "other") -> Build:
    """A call on one of the world's orders (``{o}`` in the path)."""

    async def build(w: World, who: str, variant: str) -> Call:
        return Call(method, path.format(o=w.orders[order]), body)

    return build


def on(method: str, path: str, body: Any = None, incident: str = "mine") -> Build:
    """A call on one of the world's incidents (``{i}`` in the path)."""

    async def build(w: World, who: str, variant: str) -> Call:
        return Call(method, path.format(i=w.incidents[incident]), body)

    return build


def basic(identifier: str, key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{identifier}:{key}".encode()).decode()}


async def fresh_action(w: World, who: str, variant: str) -> Call:
    return Call("POST", f"/api/v1/incidents/{await w.incident()}/acknowledge", {"note": "seen"})


async def fresh_close(w: World, who: str, variant: str) -> Call:
    iid = w.incidents["mine"]
    hid, _ = await w.handoff(iid)
    return Call("POST", f"/api/v1/incidents/{iid}/handoffs/{hid}/close", {"note": "done"})


async def mark_step(w: World, who: str, variant: str) -> Call:
    iid = w.incidents["mine"]
    checklist = (await w.api.get(f"/api/v1/incidents/{iid}/response", headers=w.staff)).json()
    step = checklist["checklist"]["steps"][0]["id"]
    return Call("POST", f"/api/v1/incidents/{iid}/steps/{step}", {"note": "called her"})


def dispatch(action: str, body: dict[str, Any]) -> Build:
    """A field officer's action on an incident: own (dispatched to them), other, ended."""

    async def build(w: World, who: str, variant: str) -> Call:
        if variant == "own":  # a fresh one: arriving or closing it changes it
            iid = await w.incident(dispatched_to=w.person["field_officer"])
        else:
            iid = w.incidents["theirs" if variant == "other" else "ended"]
        return Call("POST", f"/api/v1/field/dispatches/{iid}/{action}", body)

    return build


async def sos_cancel(w: World, who: str, variant: str) -> Call:
    """Her own SOS (a fresh one), or an incident that is not her SOS: not found."""
    iid = w.incidents["mine"]
    if variant == "own":
        r = await w.api.post("/api/v1/victim/sos", json={}, headers=w.headers["victim"])
        iid = r.json()["sos_id"]
    return Call("POST", f"/api/v1/victim/sos/{iid}/cancel", {"pin": None})


async def new_device(w: World, who: str, variant: str) -> Call:
    n = w.next()
    person = w.ctx.store.add_person("offender", f"Device holder {n}")
    body = {"identifier": f"NEW-{n}", "kind": "ankle_monitor", "protocol": "osmand"}
    return Call("POST", "/api/v1/devices", {**body, "person_id": person})


async def new_order(w: World, who: str, variant: str) -> Call:
    n = w.next()
    off = w.ctx.store.add_person("offender", f"Offender {n}")
    vic = w.ctx.store.add_person("victim", f"Victim {n}")
    return Call("POST", "/api/v1/orders", {"offender_id": off, "victim_id": vic})


async def native_fix(w: World, who: str, variant: str) -> Call:
    lat, lon = at(5000, 0.0)  # where he was: his tier does not change
    fix: dict[str, Any] = {"fix_time": "2027-01-15T08:00:00Z", "lat": lat, "lon": lon}
    if variant == "other":
        fix["device"] = "ANKLE-1"  # another device's identifier
    return Call("POST", "/api/v1/fixes", {"fixes": [fix]}, basic("KEYED-2", KEY))


async def owntracks(w: World, who: str, variant: str) -> Call:
    body = {"_type": "location", "lat": 37.5, "lon": 127.0, "tst": int(T0) - 5, "acc": 8}
    user = "kim" if variant == "own" else "lee"  # lee's phone is not registered
    return Call("POST", "/owntracks", body, {"X-Limit-U": user, "X-Limit-D": "phone"})


async def live_link(w: World, who: str, variant: str) -> Call:
    return Call("GET", f"/api/v1/police/live/{w.links['open' if variant == 'own' else 'closed']}")


async def login(w: World, who: str, variant: str) -> Call:
    return Call("POST", "/api/v1/auth/login", {"username": "user-victim", "password": PW})


async def refresh(w: World, who: str, variant: str) -> Call:
    """A live refresh token of a spare session, or one already spent."""
    _, _, issued = w.throwaway("clerk")
    token = issued.refresh_token
    if variant == "other":
        spent = await w.api.post("/api/v1/auth/refresh", json={"refresh_token": token})
        assert spent.status_code == 200, spent.text
    return Call("POST", "/api/v1/auth/refresh", {"refresh_token": token})


async def logout(w: World, who: str, variant: str) -> Call:
    """Sign out of a spare session of the caller's role (never the matrix's own)."""
    _, headers, issued = w.throwaway(who)
    return Call("POST", "/api/v1/auth/logout", {"refresh_token": issued.refresh_token}, headers)


async def totp_enrol(w: World, who: str, variant: str) -> Call:
    _, headers, _ = w.throwaway(who)
    return Call("POST", "/api/v1/auth/totp/enrol", None, headers)


async def totp_confirm(w: World, who: str, variant: str) -> Call:
    """Confirm an authenticator (every session of that user ends: a spare user's)."""
    _, headers, _ = w.throwaway(who)
    enrolled = await w.api.post("/api/v1/auth/totp/enrol", headers=headers)
    code = "000000"
    if enrolled.status_code == 200:
        code = pyotp.TOTP(enrolled.json()["secret"]).at(T0)
    return Call("POST", "/api/v1/auth/totp/confirm", {"code": code}, headers)


async def change_password(w: World, who: str, variant: str) -> Call:
    _, headers, _ = w.throwaway(who, password=True)
    body = {"current_password": PW, "new_password": NEW_PW}
    return Call("POST", "/api/v1/auth/password", body, headers)


async def revoke_session(w: World, who: str, variant: str) -> Call:
    _, _, issued = w.throwaway("judge")
    return Call("POST", f"/api/v1/admin/sessions/{issued.session_id}/revoke")


async def disable_user(w: World, who: str, variant: str) -> Call:
    uid, _, _ = w.throwaway("clerk")
    return Call("POST", f"/api/v1/admin/users/{uid}/disable")


async def unlock_user(w: World, who: str, variant: str) -> Call:
    uid, _, _ = w.throwaway("clerk")
    return Call("POST", f"/api/v1/admin/users/{uid}/unlock")


async def access_request(w: World, who: str, variant: str) -> Call:
    body = {"person_id": w.person["offender"], "purpose": "verification_task"}
    return Call("POST", "/api/v1/access/requests", body | {"reason": "strap check, ticket 4411"})


async def approve_request(w: World, who: str, variant: str) -> Call:
    """Approve a fresh request of the operator's (never the caller's own: the operator's own
    call is refused by role before that matters)."""
    rid = w.ctx.store.request_access(
        f"user:{w.users['operator']}:user-operator",
        "operator",
        w.person["offender"],
        "verification_task",
        "strap check, ticket 4412",
        at=T0,
    )
    return Call("POST", f"/api/v1/access/requests/{rid}/approve")


async def position_reads(w: World, who: str, variant: str) -> Call:
    return Call("GET", f"/api/v1/people/{w.person['offender']}/position-reads")


def located(bearing_deg: float, **extra: Any) -> dict[str, Any]:
    """A position 20 m from home, a different one for each route that reports one."""
    lat, lon = at(20, bearing_deg)
    return {"lat": lat, "lon": lon, "accuracy_m": 5.0, **extra}


def push_subscription(n: int) -> dict[str, Any]:
    """A browser's push subscription, on an allowed push service."""
    endpoint = f"https://fcm.googleapis.com/fcm/send/matrix-{n}"
    return {"endpoint": endpoint, "keys": {"p256dh": "B" * 87, "auth": "A" * 22}}


async def subscribe(w: World, who: str, variant: str) -> Call:
    return Call("POST", "/api/v1/push/subscriptions", push_subscription(w.next()))


async def unsubscribe(w: World, who: str, variant: str) -> Call:
    """Forget a subscription: the caller's own, or another user's."""
    owner = w.users.get(who, w.users["victim-2"]) if variant == "own" else w.users["victim-2"]
    body = push_subscription(w.next())
    k = body["keys"]
    w.ctx.store.add_push_subscription(owner, body["endpoint"], k["p256dh"], k["auth"], "ko", T0)
    return Call("DELETE", f"/api/v1/push/subscriptions?endpoint={body['endpoint']}")


def west_refuge() -> dict[str, Any]:
    """A place of refuge 300 m west of home (he comes from the east)."""
    lat, lon = at(300, 270.0)
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "matrix-west",
                "geometry": {"type": "Point", "coordinates": [lon, lat]},
                "properties": {"name": "West box", "kind": "police_box"},
            }
        ],
    }


async def import_refuges(w: World, who: str, variant: str) -> Call:
    return Call("POST", "/api/v1/refuges/import", west_refuge())


async def refuges_near_her(w: World, who: str, variant: str) -> Call:
    """Her list, with a place to show: he is disclosed to her, so his position is read."""
    if not w.ctx.store.refuge_count():
        places = parse_collection(west_refuge())
        w.ctx.store.import_refuges(places, "merge", actor="test", role="admin", at=T0)
    return Call("GET", f"/api/v1/victim/refuges?lat={HOME[0]}&lon={HOME[1]}")


def recording() -> bytes:
    """A WebM recording's header (EBML, document type webm) and fresh bytes."""
    header = b"\x42\x82\x84webm"
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(header)]) + header + secrets.token_bytes(64)


def sos_of(w: World, whose: str) -> int:
    """An SOS of her order (``own``: victim 1's; ``other``: victim 2's), made once."""
    key = f"sos-{whose}"
    if key not in w.incidents:
        order = w.ctx.store.get_order(w.orders[whose])
        event = Event(
            event_id("authz-matrix-sos", whose),
            EventKind.SOS,
            T0,
            order_id=order.id,
            person_id=order.victim_id,
        )
        w.incidents[key], _ = w.ctx.store.record_incident("sos", "critical", event)
    return w.incidents[key]


async def upload_recording(w: World, who: str, variant: str) -> Call:
    """A recording of her SOS: her own, or another victim's."""
    iid = sos_of(w, "own" if variant == "own" else "other")
    return Call("POST", f"/api/v1/victim/sos/{iid}/evidence", content=recording())


def evidence_purpose(who: str) -> str:
    """A purpose the policy gives the caller for recordings (any, for roles it gives none)."""
    return min(POLICY.evidence.get(who, {Purpose.INCIDENT_RESPONSE}))


async def list_recordings(w: World, who: str, variant: str) -> Call:
    iid = sos_of(w, "own")
    return Call("GET", f"/api/v1/incidents/{iid}/evidence?purpose={evidence_purpose(who)}")


async def hear_recording(w: World, who: str, variant: str) -> Call:
    if "recording" not in w.links:
        r = await w.api.post(
            f"/api/v1/victim/sos/{sos_of(w, 'own')}/evidence",
            content=recording(),
            headers=w.headers["victim"],
        )
        assert r.status_code == 201, r.text
        w.links["recording"] = str(r.json()["id"])
    eid = w.links["recording"]
    return Call("GET", f"/api/v1/evidence/{eid}?purpose={evidence_purpose(who)}")


# -- object-level checks on a reply that was allowed -------------------------------------------


def own_orders(w: World, who: str, body: Any, call: Call) -> None:
    """The protected person's status lists exactly her own orders."""
    seen = {o["order_id"] for o in body["orders"]}
    assert seen == {w.orders["own"]}, seen


def own_dispatches(w: World, who: str, body: Any, call: Call) -> None:
    """A field officer's list holds the incident dispatched to them, and nothing else."""
    seen = {d["id"] for d in body["dispatches"]}
    assert w.incidents["mine"] in seen, seen
    assert not seen & {w.incidents["theirs"], w.incidents["ended"]}, seen
    for iid in seen:
        timeline = w.ctx.store.get_incident(iid).timeline
        dispatches = [e for e in timeline if e["action"] == "dispatch"]
        assert dispatches[-1]["data"]["officer_id"] == w.person[who], iid


def own_notices(w: World, who: str, body: Any, call: Call) -> None:
    """The protected person reads only what she was told."""
    assert body, "the world told her of the breach"
    assert {(n["person_id"], n["audience"]) for n in body} == {(w.person[who], "victim")}, body


def own_position(w: World, who: str, body: Any, call: Call) -> None:
    """A position sent from an app is stored as the caller's own."""
    fix = w.ctx.store.latest_fix_of_person(w.person[who])
    assert fix is not None and (fix.lat, fix.lon) == (call.json["lat"], call.json["lon"]), fix


# -- the table ---------------------------------------------------------------------------------

PUBLIC, BEARER, SECRET, DEVICE = "public", "bearer", "secret", "device"


@dataclass(frozen=True)
class Rule:
    """Who may call a route, how the test calls it, and what is checked of the reply.

    ``access``: ``bearer`` (a user's token; ``roles`` may call), ``public``,
    ``secret`` (a secret in the request is the credential; ``as_role`` is whom the
    disclosure policy judges its reads for) or ``device``.
    ``scope``: the object-level rule on top of the role. ``own_object`` and
    ``own_dispatch`` routes are also called on someone else's object (``other``),
    ``own_dispatch`` ones also on a dispatch that has ended (``ended``): both must
    answer 404. Other scopes are checked on the reply, by ``check``.
    ``refused``: the answer to a caller the route refuses, where it is not the usual
    (a device route's to a user's token; a spent secret's).
    ``enrolling``: a token that only lets its user enrol a second factor may call it.
    ``reads``: the relation and purpose of the position reads the route makes.
    """

    call: Build
    access: str = BEARER
    roles: frozenset[str] = frozenset()
    scope: str | None = None
    check: Callable[[World, str, Any, Call], None] | None = None
    refused: int | None = None
    enrolling: bool = False
    reads: tuple[Relation, str] | None = None
    as_role: str | None = None
    ws_first: str | None = None  # the frame an admitted WebSocket caller waits for

    def variants(self) -> tuple[str, ...]:
        if self.scope == "own_dispatch":
            return ("own", "other", "ended")
        if self.scope == "own_object" or self.access in (SECRET, DEVICE):
            return ("own", "other")
        return ("own",)


CONTACT = {"phone": "010-1234-5678", "sms": {"enabled": True, "tiers": ["notify"]}, "lang": "ko"}


def contact_of(method: str) -> Build:
    """A call on the protected person's contact (the number texts go to, docs/sms.md)."""

    async def build(w: World, who: str, variant: str) -> Call:
        path = f"/api/v1/people/{w.person['victim']}/contact"
        if method == "GET":
            return Call("GET", path + "?purpose=administration")
        return Call(method, path, CONTACT)

    return build


async def own_contact(w: World, who: str, variant: str) -> Call:
    return Call("PUT", "/api/v1/victim/contact", CONTACT)


VICTIM = frozenset({"victim"})
OFFICER = frozenset({"field_officer"})
ADMIN = frozenset({"admin"})
ROUTES: dict[tuple[str, str], Rule] = {
    # documents, health, the apps' pages and static files: for anyone
    ("GET", "/healthz"): Rule(get("/healthz"), PUBLIC),
    ("GET", "/metrics"): Rule(get("/metrics"), PUBLIC),  # counters only, no person data
    ("GET", "/api/v1/openapi.json"): Rule(get("/api/v1/openapi.json"), PUBLIC),
    ("GET", "/api/v1/docs"): Rule(get("/api/v1/docs"), PUBLIC),
    ("GET", "/app/"): Rule(get("/app/"), PUBLIC),
    ("GET", "/field/"): Rule(get("/field/"), PUBLIC),
    ("GET", "/today"): Rule(get("/today"), PUBLIC),
    ("GET", "/app/manifest.webmanifest"): Rule(get("/app/manifest.webmanifest"), PUBLIC),
    ("GET", "/app/sw.js"): Rule(get("/app/sw.js"), PUBLIC),
    ("GET", "/field/manifest.webmanifest"): Rule(get("/field/manifest.webmanifest"), PUBLIC),
    ("GET", "/field/sw.js"): Rule(get("/field/sw.js"), PUBLIC),
    ("GET", "/static"): Rule(get("/static/css/app.css"), PUBLIC),
    ("GET", "/static/leaflet"): Rule(get("/static/leaflet/leaflet.js"), PUBLIC),
    ("GET", "/static/swagger-ui"): Rule(get("/static/swagger-ui/swagger-ui.css"), PUBLIC),
    ("GET", "/api/v1/push/key"): Rule(get("/api/v1/push/key"), PUBLIC),  # a public key
    # the offline base map (the same for everyone; the street archive has no route here)
    ("GET", "/basemap/index.json"): Rule(get("/basemap/index.json"), PUBLIC),
    ("GET", "/basemap/korea.json"): Rule(get("/basemap/korea.json"), PUBLIC),
    # signing in and out
    ("POST", "/api/v1/auth/login"): Rule(login, PUBLIC),
    ("POST", "/api/v1/auth/logout"): Rule(logout, PUBLIC),  # ends only the session it names
    ("POST", "/api/v1/auth/refresh"): Rule(refresh, SECRET, refused=401),
    ("POST", "/api/v1/auth/totp/enrol"): Rule(totp_enrol, roles=SECOND_FACTOR, enrolling=True),
    # victims and offenders can never have a factor pending, so confirming one is a 409
    ("POST", "/api/v1/auth/totp/confirm"): Rule(
        totp_confirm, roles=SECOND_FACTOR, enrolling=True, refused=409
    ),
    ("POST", "/api/v1/auth/password"): Rule(change_password, roles=ALL_ROLES),
    ("GET", "/api/v1/me"): Rule(get("/api/v1/me"), roles=ALL_ROLES),
    # devices report with their own credentials, never a user's token; OwnTracks names
    # its device in the message, so without one the message is malformed (400)
    ("POST", "/api/v1/fixes"): Rule(native_fix, DEVICE, refused=401),
    ("POST", "/owntracks"): Rule(owntracks, DEVICE, refused=400),
    # administration: users and sessions (the admin), registration and orders
    ("GET", "/api/v1/admin/sessions"): Rule(get("/api/v1/admin/sessions"), roles=ADMIN),
    ("POST", "/api/v1/admin/sessions/{session_id}/revoke"): Rule(revoke_session, roles=ADMIN),
    ("POST", "/api/v1/admin/users/{user_id}/{action}"): Rule(disable_user, roles=ADMIN),
    # the control centre lifts sign-in locks (a victim locked out by someone else)
    ("POST", "/api/v1/admin/users/{user_id}/unlock"): Rule(unlock_user, roles=REGISTRARS),
    ("POST", "/api/v1/people"): Rule(
        on("POST", "/api/v1/people", {"kind": "victim", "name": "New"}), roles=REGISTRARS
    ),
    ("POST", "/api/v1/devices"): Rule(new_device, roles=REGISTRARS),
    ("POST", "/api/v1/orders"): Rule(new_order, roles=ADMINISTRATION),
    # the control centre: every case, so no object-level rule beyond the role
    ("GET", "/api/v1/incidents"): Rule(get("/api/v1/incidents?status=open"), roles=STAFF),
    ("GET", "/api/v1/incidents/{incident_id}"): Rule(
        on("GET", "/api/v1/incidents/{i}", incident="theirs"), roles=STAFF
    ),
    ("POST", "/api/v1/incidents/{incident_id}/{action}"): Rule(fresh_action, roles=STAFF),
    # a purpose from the list, on the basis of an open incident about him (the purposes
    # and bases themselves: test_every_role_purpose_and_basis_... below)
    ("GET", "/api/v1/devices/{ref}/fixes"): Rule(
        on("GET", "/api/v1/devices/ANKLE-1/fixes?purpose=incident_response&incident={i}"),
        roles=STAFF,
        reads=(Relation.NONE, Purpose.INCIDENT_RESPONSE),
    ),
    # access requests: asked by staff, approved by another of the policy's approvers
    ("POST", "/api/v1/access/requests"): Rule(access_request, roles=POLICY.requesters),
    ("GET", "/api/v1/access/requests"): Rule(
        get("/api/v1/access/requests"), roles=POLICY.requesters | POLICY.approvers
    ),
    ("POST", "/api/v1/access/requests/{request_id}/approve"): Rule(
        approve_request, roles=POLICY.approvers
    ),
    ("GET", "/api/v1/incidents/{incident_id}/response"): Rule(
        on("GET", "/api/v1/incidents/{i}/response"), roles=STAFF
    ),
    ("POST", "/api/v1/incidents/{incident_id}/steps/{step_id}"): Rule(mark_step, roles=STAFF),
    ("GET", "/api/v1/incidents/{incident_id}/suggestions"): Rule(
        on("GET", "/api/v1/incidents/{i}/suggestions"),
        roles=STAFF,
        reads=(Relation.NONE, DISPATCH_PURPOSE),
    ),
    ("POST", "/api/v1/incidents/{incident_id}/handoff"): Rule(
        on("POST", "/api/v1/incidents/{i}/handoff", {"channel": "sms"}), roles=STAFF
    ),
    ("GET", "/api/v1/incidents/{incident_id}/handoffs"): Rule(
        on("GET", "/api/v1/incidents/{i}/handoffs"), roles=STAFF
    ),
    ("POST", "/api/v1/incidents/{incident_id}/handoffs/{handoff_id}/close"): Rule(
        fresh_close, roles=STAFF
    ),
    # the misuse guard's pause: the control centre keeps or lifts it, with a reason
    ("GET", "/api/v1/orders/{order_id}/disclosure"): Rule(
        on_order("GET", "/api/v1/orders/{o}/disclosure"), roles=STAFF
    ),
    ("POST", "/api/v1/orders/{order_id}/disclosure"): Rule(
        on_order(
            "POST",
            "/api/v1/orders/{o}/disclosure",
            {"paused": True, "reason": "reviewing a report of misuse"},
        ),
        roles=STAFF,
    ),
    ("GET", "/api/v1/notices"): Rule(get("/api/v1/notices"), roles=STAFF | {"auditor"}),
    ("WS", "/api/v1/ops/stream"): Rule(get("/api/v1/ops/stream"), roles=STAFF, ws_first="hello"),
    # the police: the live link of an open hand-off, and nothing else
    ("GET", "/api/v1/police/live/{token}"): Rule(
        live_link,
        SECRET,
        refused=404,
        reads=(Relation.HANDED_OFF, HANDOFF_PURPOSE),
        as_role="police",
    ),
    # the audit trail: the auditor only; the access review: whom the policy names
    ("GET", "/api/v1/audit"): Rule(get("/api/v1/audit"), roles=frozenset({"auditor"})),
    ("GET", "/api/v1/audit/access-review"): Rule(
        get("/api/v1/audit/access-review?since=2027-01-15T00:00:00Z"), roles=POLICY.review_roles
    ),
    # the reads of his positions, by role and purpose: for the court (judge, clerk)
    ("GET", "/api/v1/people/{person_id}/position-reads"): Rule(
        position_reads, roles=POLICY.subject_report_roles
    ),
    # the protected person: her own orders, her own position, what she was told
    ("GET", "/api/v1/victim/status"): Rule(
        get("/api/v1/victim/status"),
        roles=VICTIM,
        scope="own_orders",
        check=own_orders,
        reads=(Relation.OWN_ORDER, disclosure.VICTIM_SAFETY),
    ),
    ("WS", "/api/v1/victim/stream"): Rule(
        get("/api/v1/victim/stream"),
        roles=VICTIM,
        scope="own_orders",
        check=own_orders,
        reads=(Relation.OWN_ORDER, disclosure.VICTIM_SAFETY),
        ws_first="status",
    ),
    ("POST", "/api/v1/victim/location"): Rule(
        on("POST", "/api/v1/victim/location", located(270)),
        roles=VICTIM,
        scope="self",
        check=own_position,
    ),
    ("POST", "/api/v1/victim/sos"): Rule(
        on("POST", "/api/v1/victim/sos", located(180, silent=True)),
        roles=VICTIM,
        scope="self",
        check=own_position,
    ),
    ("GET", "/api/v1/victim/notices"): Rule(
        get("/api/v1/victim/notices"), roles=VICTIM, scope="own_notices", check=own_notices
    ),
    # places of refuge near her: his position, where shown to her, is read to avoid him
    ("GET", "/api/v1/victim/refuges"): Rule(
        refuges_near_her, roles=VICTIM, reads=(Relation.OWN_ORDER, disclosure.VICTIM_SAFETY)
    ),
    # places of refuge: imported by supervisors and administrators, listed for staff
    ("POST", "/api/v1/refuges/import"): Rule(import_refuges, roles=ADMINISTRATION),
    ("GET", "/api/v1/refuges"): Rule(get("/api/v1/refuges"), roles=STAFF | ADMIN),
    # her SOS loop and her PINs (docs/sos.md): her own, no one else's
    ("GET", "/api/v1/victim/sos"): Rule(get("/api/v1/victim/sos"), roles=VICTIM),
    ("POST", "/api/v1/victim/sos/{incident_id}/cancel"): Rule(
        sos_cancel, roles=VICTIM, scope="own_object"
    ),
    ("GET", "/api/v1/victim/pins"): Rule(get("/api/v1/victim/pins"), roles=VICTIM),
    ("PUT", "/api/v1/victim/pins"): Rule(
        on("PUT", "/api/v1/victim/pins", {"app_pin": "2468", "duress_pin": None}), roles=VICTIM
    ),
    ("POST", "/api/v1/victim/pin/check"): Rule(
        on("POST", "/api/v1/victim/pin/check", {"pin": "2468"}), roles=VICTIM
    ),
    # who read her position and why: roles and purposes, never the readers' names
    ("GET", "/api/v1/victim/accesses"): Rule(get("/api/v1/victim/accesses"), roles=VICTIM),
    # her phone number for texts: her own, and the supervisors and admins who set it up
    ("GET", "/api/v1/victim/contact"): Rule(get("/api/v1/victim/contact"), roles=VICTIM),
    ("PUT", "/api/v1/victim/contact"): Rule(own_contact, roles=VICTIM),
    ("GET", "/api/v1/people/{person_id}/contact"): Rule(contact_of("GET"), roles=ADMINISTRATION),
    ("PUT", "/api/v1/people/{person_id}/contact"): Rule(contact_of("PUT"), roles=ADMINISTRATION),
    # Web Push: a browser is subscribed for its own user, and only they can remove it
    ("POST", "/api/v1/push/subscriptions"): Rule(subscribe, roles=SUBSCRIBERS),
    ("DELETE", "/api/v1/push/subscriptions"): Rule(
        unsubscribe, roles=SUBSCRIBERS, scope="own_object"
    ),
    # field officers: only what is dispatched to them, while it is
    ("GET", "/api/v1/field/dispatches"): Rule(
        get("/api/v1/field/dispatches"),
        roles=OFFICER,
        scope="own_dispatches",
        check=own_dispatches,
        reads=(Relation.DISPATCHED, DISPATCH_PURPOSE),
    ),
    ("POST", "/api/v1/field/dispatches/{incident_id}/arrive"): Rule(
        dispatch("arrive", {"note": "on scene"}), roles=OFFICER, scope="own_dispatch"
    ),
    ("POST", "/api/v1/field/dispatches/{incident_id}/outcome"): Rule(
        dispatch("outcome", {"outcome": "false_alarm", "note": "nobody there"}),
        roles=OFFICER,
        scope="own_dispatch",
    ),
    # recordings of an SOS: her own SOS only; heard by the roles the policy's [evidence]
    # names, each for a purpose it gives them (docs/evidence.md)
    ("POST", "/api/v1/victim/sos/{incident_id}/evidence"): Rule(
        upload_recording, roles=VICTIM, scope="own_object"
    ),
    ("GET", "/api/v1/incidents/{incident_id}/evidence"): Rule(
        list_recordings, roles=frozenset(POLICY.evidence)
    ),
    ("GET", "/api/v1/evidence/{evidence_id}"): Rule(
        hear_recording, roles=frozenset(POLICY.evidence)
    ),
    ("POST", "/api/v1/field/location"): Rule(
        on("POST", "/api/v1/field/location", located(0)),
        roles=OFFICER,
        scope="self",
        check=own_position,
    ),
}


# -- running one call --------------------------------------------------------------------------


def positions(body: Any) -> list[dict[str, Any]]:
    """Every object in a reply that carries a position."""
    found = []
    if isinstance(body, dict):
        if isinstance(body.get("lat"), float) and isinstance(body.get("lon"), float):
            found.append(body)
        for v in body.values():
            found += positions(v)
    elif isinstance(body, list):
        for v in body:
            found += positions(v)
    return found


def expected(rule: Rule, principal: str, variant: str) -> int | None:
    """The status a call must get (None: any 2xx), from the table alone."""
    if rule.access == PUBLIC:
        return None
    if rule.access == SECRET:
        return None if variant == "own" else rule.refused
    if rule.access == DEVICE:
        return {"principal": rule.refused, "own": None, "other": 403}[variant]
    if principal in STRANGERS:
        return 401
    if principal == ENROLLING:
        allowed = rule.enrolling
    else:
        allowed = principal in rule.roles
    if not allowed:
        return rule.refused or 403
    return None if variant == "own" else 404


async def ws_call(
    w: World,
    path: str,
    headers: dict[str, str],
    first: dict[str, str] | None = None,
    until: str = "status",
) -> tuple[str, Any]:
    """Open a WebSocket on the app in this event loop: the first frame of type ``until``
    (others, such as a request to report faster, are skipped), or the close code.

    Without an Authorization header the client sends ``first`` as its first message
    (the browser way of passing a token), ``{}`` unless given.
    """
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    if "Authorization" not in headers:
        inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(first or {})})
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "http_version": "1.1",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
        "subprotocols": [],
        "state": {},
    }
    task = asyncio.create_task(w.app(scope, inbox.get, sent.put))
    try:
        async with asyncio.timeout(5):
            while True:
                m = await sent.get()
                if m["type"] == "websocket.close":
                    return "close", m.get("code")
                if m["type"] == "websocket.send" and json.loads(m["text"])["type"] == until:
                    return "frame", json.loads(m["text"])
    finally:
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def read_positions(w: World) -> int:
    records = w.ctx.store.audit_records(limit=100_000)
    return sum(1 for r in records if r["action"] == "read_position")


async def run(w: World, key: tuple[str, str], principal: str, variant: str) -> str | None:
    """Make one call; what was wrong with the answer, or None."""
    rule = ROUTES[key]
    want = expected(rule, principal, variant)
    call = await rule.call(w, principal, "own" if variant == "principal" else variant)
    # "principal": a user's token on a device route, without the device's credentials
    headers = {**w.headers[principal], **(call.headers if variant != "principal" else {})}
    label = f"{principal} {variant} {call.method} {call.path}"
    audited = read_positions(w)
    if key[0] == "WS":
        kind, got = await ws_call(w, call.path, headers, until=rule.ws_first or "")
        if want is not None:
            if (kind, got) != ("close", {401: 4401, 403: 4403}[want]):
                return f"{label}: expected close {want}, got {kind} {got}"
            return None
        if kind != "frame":
            return f"{label}: admitted caller got {kind} {got}"
        body = got
    else:
        r = await w.api.request(
            call.method, call.path, json=call.json, content=call.content, headers=headers
        )
        if want is not None:
            if r.status_code != want:
                return f"{label}: expected {want}, got {r.status_code} {r.text[:300]}"
            if call.path.startswith("/api/") and (
                r.headers.get("content-type") != "application/problem+json"
            ):
                return f"{label}: a refusal that is not problem+json"
            return None
        if not 200 <= r.status_code < 300:
            return f"{label}: expected 2xx, got {r.status_code} {r.text[:300]}"
        is_json = r.headers.get("content-type", "").startswith("application/json")
        body = r.json() if is_json else None
    # an admitted call: its object-level rule, and every position it returned
    if rule.check is not None:
        try:
            rule.check(w, principal, body, call)
        except AssertionError as exc:
            return f"{label}: object-level rule {rule.scope} broken: {exc}"
    shown = positions(body)
    if shown:
        if rule.reads is None:
            return f"{label}: returns positions but declares no read: {shown[0]}"
        relation, purpose = rule.reads
        role = rule.as_role or principal
        if not w.ctx.access_policy.allows(role, relation, purpose):
            return f"{label}: the disclosure policy forbids {role} {relation} {purpose}"
        if read_positions(w) <= audited:
            return f"{label}: returned a position without an audit record"
    elif rule.reads is not None:
        return f"{label}: declares position reads but the world gave it none to return"
    return None


# -- the tests ---------------------------------------------------------------------------------


def app_routes(app: Any) -> set[tuple[str, str]]:
    """Every (method, path) the application answers; WebSockets as WS, mounts as GET."""
    out = set()
    for route in iter_route_contexts(app.routes):
        original = route.original_route
        if isinstance(original, WebSocketRoute):
            out.add(("WS", route.path))
        elif isinstance(original, Mount):
            out.add(("GET", route.path))
        else:
            out |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    return out


@in_world_loop
async def test_every_route_of_the_app_has_a_row_in_the_table(world: World) -> None:
    routes = app_routes(world.app)
    assert ("GET", "/api/v1/victim/status") in routes and ("WS", "/api/v1/ops/stream") in routes
    assert routes - set(ROUTES) == set(), "routes without a declaration: add them to ROUTES"
    assert set(ROUTES) - routes == set(), "declarations of routes that no longer exist"


def test_the_table_names_only_roles_of_the_policy() -> None:
    for key, rule in ROUTES.items():
        assert rule.roles <= ALL_ROLES, key
        assert (rule.access == BEARER) == bool(rule.roles), key
        assert rule.access in (PUBLIC, BEARER, SECRET, DEVICE), key


def test_only_roles_the_policy_lets_read_a_position_are_admitted_where_one_is_returned() -> None:
    for key, rule in ROUTES.items():
        if rule.reads is None:
            continue
        relation, purpose = rule.reads
        readers = {r for r in disclosure.ROLES if POLICY.allows(r, relation, purpose)}
        callers = {rule.as_role} if rule.as_role else set(rule.roles)
        assert callers and callers <= readers, (key, callers - readers)
        assert rule.access != PUBLIC, key


@in_world_loop
@pytest.mark.parametrize("key", sorted(ROUTES), ids=lambda k: f"{k[0]} {k[1]}")
async def test_each_caller_gets_exactly_what_the_table_allows(
    world: World, key: tuple[str, str]
) -> None:
    rule = ROUTES[key]
    calls = []
    for principal in PRINCIPALS:
        if rule.access == DEVICE:
            calls.append((principal, "principal"))
        elif expected(rule, principal, "own") is None:
            calls += [(principal, v) for v in rule.variants()]
        else:
            calls.append((principal, "own"))
    if rule.access == DEVICE:  # the device itself: its own fixes, and another's
        calls += [(ANONYMOUS, "own"), (ANONYMOUS, "other")]
    problems = [await run(world, key, principal, variant) for principal, variant in calls]
    assert [p for p in problems if p] == []


@in_world_loop
async def test_another_officer_and_another_victim_see_only_their_own(world: World) -> None:
    r = await world.api.get("/api/v1/field/dispatches", headers=world.headers["officer-b"])
    assert {d["id"] for d in r.json()["dispatches"]} == {world.incidents["theirs"]}
    r = await world.api.get("/api/v1/victim/status", headers=world.headers["victim-2"])
    assert [o["order_id"] for o in r.json()["orders"]] == [world.orders["other"]]
    # 1.5 km away: warned from his cell (docs/disclosure.md), never shown his position
    [entry] = r.json()["orders"]
    assert entry["tier"] in ("notify", "reveal") and entry["offender"] is None
    r = await world.api.get("/api/v1/victim/notices", headers=world.headers["victim-2"])
    assert r.json() and {n["person_id"] for n in r.json()} == {world.person["victim-2"]}


@in_world_loop
async def test_a_stream_judges_a_token_sent_as_the_first_message_like_a_header(
    world: World,
) -> None:
    def token(principal: str) -> dict[str, str]:
        return {"token": world.headers[principal]["Authorization"][7:]}

    for path in ("/api/v1/victim/stream", "/api/v1/ops/stream"):
        for stranger in (FORGED, REVOKED):
            assert await ws_call(world, path, {}, token(stranger)) == ("close", 4401), stranger
    kind, frame = await ws_call(world, "/api/v1/victim/stream", {}, token("victim"))
    assert kind == "frame" and frame["orders"][0]["order_id"] == world.orders["own"]
    assert await ws_call(world, "/api/v1/ops/stream", {}, token("victim")) == ("close", 4403)
    assert await ws_call(world, "/api/v1/ops/stream", {}, token(ENROLLING)) == ("close", 4403)
    kind, frame = await ws_call(world, "/api/v1/ops/stream", {}, token("operator"), "hello")
    assert kind == "frame" and frame["role"] == "operator"


# -- purposes and bases: every role, purpose and basis on the staff read of a device's fixes ---

FREE_TEXT = "operations"  # what any read used to be called when it named nothing
REASON = "she called 112: he is at her door, ticket 2027-0115-31"
# Bases a read may name; those marked False are claims that do not hold (refused always).
CLAIMS = {
    "none": True,
    "incident": True,
    "incident_of_another": False,
    "incident_ended": False,
    "hold": True,
    "hold_of_another": False,
    "approval": True,
    "approval_expired": False,
    "approval_of_another": False,
    "break_glass": True,
    "break_glass_unexplained": False,
}
NEEDS = {
    "incident": Basis.INCIDENT,
    "hold": Basis.COURT_ORDER,
    "approval": Basis.APPROVAL,
}


def expected_read(role: str, purpose: str, claim: str) -> int:
    """The answer to a read of his device's fixes, from the policy alone."""
    policy = POLICY
    if purpose not in set(Purpose):
        return 422
    if not (policy.allows(role, Relation.NONE, purpose) or policy.may_break_glass(role, purpose)):
        return 403
    if claim == "break_glass":
        return 200 if policy.may_break_glass(role, purpose) else 403
    if claim in NEEDS and NEEDS[claim] in policy.bases(role, Relation.NONE, purpose):
        return 200
    return 403


def approval(w: World, role: str, purpose: str, until_s: float, user: str | None = None) -> int:
    """An access request of ``role``'s user (or ``user``'s) for his positions, approved by
    someone else until ``until_s`` from now."""
    name = user or role
    store = w.ctx.store
    rid = store.request_access(
        f"user:{w.users[name]}:user-{name}",
        role,
        w.person["offender"],
        purpose,
        "strap check, ticket 4413",
        at=w.ctx.clock.now(),
    )
    now = w.ctx.clock.now()
    store.approve_access(rid, "user:999999:approver", "supervisor", now + until_s, at=now)
    return int(rid)


@in_world_loop
async def test_every_role_purpose_and_basis_is_answered_as_the_policy_says(world: World) -> None:
    w, store = world, world.ctx.store
    ankle = store.get_device("ANKLE-1")
    other = store.get_device("KEYED-2").person_id
    his_hold = store.place_hold(
        "person", ankle.person_id, None, None, "court 2027-1", actor="cli", role="admin", at=T0
    ).id
    other_hold = store.place_hold(
        "person", other, None, None, "court 2027-2", actor="cli", role="admin", at=T0
    ).id
    # an incident about him, resolved: no basis any more
    event = Event(
        event_id("authz-matrix", w.next()), EventKind.TAMPER, T0, person_id=ankle.person_id
    )
    his_ended, created = store.record_incident("tamper", "high", event)
    assert created
    await w.act(his_ended, "resolve", outcome="resolved")
    subject = f"device:{ankle.id}"
    labels = {
        "incident": f"incident:{w.incidents['mine']}",
        "hold": f"hold:{his_hold}",
        "break_glass": "break_glass",
    }
    problems, allowed = [], 0
    for role in disclosure.ROLES:
        for purpose in [*(p.value for p in Purpose), FREE_TEXT]:
            approved = approval(w, role, purpose, 600)
            labels["approval"] = f"approval:{approved}"
            params = {
                "none": {},
                "incident": {"incident": w.incidents["mine"]},
                "incident_of_another": {"incident": w.incidents["theirs"]},
                "incident_ended": {"incident": his_ended},
                "hold": {"hold": his_hold},
                "hold_of_another": {"hold": other_hold},
                "approval": {"approval": approved},
                "approval_expired": {"approval": approval(w, role, purpose, -1)},
                "approval_of_another": {
                    "approval": approval(w, "operator", purpose, 600, user="officer-b")
                },
                "break_glass": {"break_glass": REASON},
                "break_glass_unexplained": {"break_glass": "because"},
            }
            for claim in CLAIMS:
                want = expected_read(role, purpose, claim)
                label = f"{role} {purpose} {claim}"
                audit_before = store.audit_head()[0]
                notices_before = len(store.notices(audience="staff", limit=100_000))
                r = await w.api.get(
                    f"/api/v1/devices/{ankle.identifier}/fixes",
                    params={"purpose": purpose, **params[claim]},
                    headers=w.headers[role],
                )
                new = [x for x in store.audit_records(since_id=audit_before) if x["action"] != "x"]
                reads = [x for x in new if x["action"] == "read_position"]
                if r.status_code != want:
                    problems.append(f"{label}: expected {want}, got {r.status_code} {r.text[:200]}")
                    continue
                if want != 200:
                    if r.headers["content-type"] != "application/problem+json" or reads:
                        problems.append(f"{label}: refused, but not as problem+json or audited")
                    if positions(r.json()):
                        problems.append(f"{label}: a refusal carried a position")
                    continue
                allowed += 1
                if not positions(r.json()["fixes"]):
                    problems.append(f"{label}: allowed, but no position came back")
                if [(x["subject"], x["purpose"]) for x in reads] != [(subject, purpose)]:
                    problems.append(f"{label}: read not audited with its purpose: {reads}")
                elif f"basis={labels[claim]}" not in reads[0]["fields"]:
                    problems.append(f"{label}: read not audited with its basis: {reads[0]}")
                glass = [x for x in new if x["action"] == "break_glass"]
                told = store.notices(audience="staff", limit=100_000)[notices_before:]
                if claim == "break_glass":
                    if [notes_of(x) for x in glass] != [REASON]:
                        problems.append(f"{label}: break-glass not recorded with its reason")
                    if sorted(n.role for n in told) != sorted(POLICY.alert_roles):
                        problems.append(f"{label}: alerted {[n.role for n in told]}")
                elif glass or told:
                    problems.append(f"{label}: a read on a basis marked as break-glass")
    assert problems == []
    # operator and supervisor, each: 3 incident purposes, court order, 2 on approval, and
    # break-glass for 2 purposes (the 2 incident-response ones counted once per basis)
    assert allowed == 2 * (3 + 1 + 2 + 2)


def notes_of(record: dict[str, Any]) -> str:
    return next(f[7:] for f in record["fields"] if f.startswith("reason="))


@in_world_loop
async def test_the_relations_too_follow_the_policy_the_app_runs_with(world: World) -> None:
    """A policy without the dispatched and handed-off rules: the officer's dispatch shows no
    target and the police link no position, through the same routes."""
    w = world
    gone = (Relation.DISPATCHED, Relation.HANDED_OFF)
    narrowed = replace(POLICY, rules={k: v for k, v in POLICY.rules.items() if k[1] not in gone})
    officer, link = w.headers["field_officer"], f"/api/v1/police/live/{w.links['open']}"

    async def shown() -> tuple[list[Any], int]:
        r = await w.api.get("/api/v1/field/dispatches", headers=officer)
        assert r.status_code == 200, r.text
        police = await w.api.get(link)
        return [d["target"] for d in r.json()["dispatches"]], police.status_code

    targets, police = await shown()
    assert any(t is not None for t in targets) and police == 200
    w.ctx.access_policy = w.ctx.handoffs.policy = narrowed
    try:
        targets, police = await shown()
        assert targets and all(t is None for t in targets) and police == 404
    finally:
        w.ctx.access_policy = w.ctx.handoffs.policy = POLICY
