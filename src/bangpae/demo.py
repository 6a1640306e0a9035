"""``bangpae demo``: a seeded Seoul case, simulated devices over OsmAnd, a live readout."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from typing import Any

from bangpae.adapters.store.refuges import sample_refuges
from bangpae.app import AppContext, build, serve
from bangpae.config import Settings, parse_listen
from bangpae.domain.model import Order
from bangpae.services.auth import WeakPassword, new_password_hash
from bangpae.services.devicekeys import new_key
from bangpae.simulate import run_devices, seoul_scenario

TIER_KO = {
    "clear": "안전",
    "notify": "알림",
    "reveal": "위치 공개",
    "breach": "접근 금지 위반",
    "uncertain": "신호 끊김",
}


def seed(ctx: AppContext) -> dict[str, Any]:
    """Create two Seoul cases, their devices, and logins with fresh random passwords."""
    store = ctx.store
    people = {}
    for key, kind, name in (
        ("off1", "offender", "Offender A (가해자 A)"),
        ("vic1", "victim", "Victim A (피해자 A)"),
        ("off2", "offender", "Offender B (가해자 B)"),
        ("vic2", "victim", "Victim B (피해자 B)"),
        ("officer", "officer", "Officer Kim (경찰관 김)"),
    ):
        people[key] = store.add_person(kind, name)
    devices = {
        "DEMO-ANKLE-1": ("ankle_monitor", "off1"),
        "DEMO-PHONE-1": ("phone", "vic1"),
        "DEMO-ANKLE-2": ("ankle_monitor", "off2"),
        "DEMO-PHONE-2": ("phone", "vic2"),
    }
    keys = {}
    for identifier, (kind, who) in devices.items():
        keys[identifier] = new_key()  # each simulated device proves itself
        secret = ctx.device_keys.hash_new(keys[identifier])
        store.add_device(identifier, kind, "osmand", people[who], secret)
    orders = [
        store.add_order(Order(id=0, offender_id=people["off1"], victim_id=people["vic1"])),
        store.add_order(Order(id=0, offender_id=people["off2"], victim_id=people["vic2"])),
    ]
    logins = {}
    for username, role, person in (
        ("admin", "admin", None),
        ("operator", "operator", None),
        ("supervisor", "supervisor", None),
        ("auditor", "auditor", None),
        ("victim-a", "victim", people["vic1"]),
        ("officer-kim", "field_officer", people["officer"]),  # the field app, /field/
    ):
        password_hash = None
        while password_hash is None:  # a random 16-character password passes the policy
            password = secrets.token_urlsafe(12)
            try:
                password_hash = new_password_hash(password, username)
            except WeakPassword:
                continue
        store.add_user(username, password_hash, role, person)
        logins[username] = (role, password)
    # places of refuge near case 1, from the sample file (docs/refuges.md)
    at = ctx.clock.now()
    store.import_refuges(sample_refuges(), "replace", actor="demo", role="admin", at=at)
    return {"people": people, "orders": orders, "logins": logins, "keys": keys}


async def _readout(ctx: AppContext, orders: list[int], every_s: float = 2.0) -> None:
    """Print what the control centre knows of each order, every few seconds."""
    while True:
        await asyncio.sleep(every_s)
        parts = []
        for oid in orders:
            view = ctx.engine.order_view(oid, ctx.clock.now())
            if view is None:
                continue
            tier = view.tier.label
            dist = "—" if view.distance_m is None else f"{view.distance_m:,.0f} m"
            # what the protected person is shown, beside the truth (docs/disclosure.md)
            shown = view.shown_tier.label
            parts.append(f"order {oid}: {tier:<9} {TIER_KO[tier]:<8} {dist:>9} (shown {shown})")
        print(time.strftime("%H:%M:%S"), " | ".join(parts), flush=True)


async def run_demo(settings: Settings, duration_s: float | None = None) -> int:
    """Seed, serve, drive the simulated devices and print the live tiers."""
    if "BANGPAE_REQUIRE_TOTP_FOR_STAFF" not in os.environ:
        # A local showcase: staff sign in with the printed password alone, unless asked.
        settings = settings.model_copy(update={"require_totp_for_staff": False})
    ctx = build(settings)
    seeded = seed(ctx)
    http = parse_listen(settings.http, "127.0.0.1")
    osm = parse_listen(settings.osmand, "127.0.0.1")
    if osm is None:
        print("the demo needs the OsmAnd listener: do not set it off")
        return 2
    ready = asyncio.Event()
    server = asyncio.create_task(serve(ctx, ready))
    await ready.wait()
    host = "127.0.0.1" if osm[0] in ("0.0.0.0", "::") else osm[0]
    devices, notes = seoul_scenario()
    for identifier, device in devices.items():
        device.key = seeded["keys"][identifier]
    print("\n== bangpae demo (방패 데모) ==")
    if http:
        print(f"API:      http://{http[0]}:{http[1]}/api/v1  (OpenAPI: /api/v1/openapi.json)")
    print(f"OsmAnd:   http://{host}:{osm[1]}/  (simulated devices report every 2 s)")
    print("\n".join(notes))
    print("Logins (generated for this run):")
    if not settings.require_totp_for_staff:
        print("  (staff sign in without a TOTP code in the demo: BANGPAE_REQUIRE_TOTP_FOR_STAFF)")
    for user, (role, password) in seeded["logins"].items():
        print(f"  {user:<11} {role:<11} {password}")
    if http:
        print(
            f"Try: curl -s -X POST http://{http[0]}:{http[1]}/api/v1/auth/login "
            "-H 'content-type: application/json' "
            f'-d \'{{"username":"victim-a","password":"{seeded["logins"]["victim-a"][1]}"}}\''
        )
    print("Ctrl-C stops.\n", flush=True)
    sim = asyncio.create_task(run_devices(f"http://{host}:{osm[1]}/", list(devices.values())))
    readout = asyncio.create_task(_readout(ctx, seeded["orders"]))
    try:
        if duration_s is None:
            await server
        else:
            await asyncio.wait_for(asyncio.shield(server), duration_s)
    except TimeoutError:
        pass
    finally:
        sim.cancel()
        readout.cancel()
        if not server.done():
            server.cancel()
            try:
                await server
            except asyncio.CancelledError:
                pass
    return 0
