"""What the server log may hold: that something happened, never whom it happened to or where.

One scenario on the real composition root, served by the real uvicorn listeners: two
people with names and phone numbers, their trackers with keys, an order, fixes of both
approaching into a breach (OsmAnd over HTTP and her app), a malformed report, her SOS,
the police hand-off on e-mail, SMS and a signed webhook, the live link followed, Web
Push and SMS notices, and a moment when the store fails. Every logger is captured at
DEBUG, and every captured line (its message with its arguments, its exception and its
stack) is searched for the scenario's coordinates, names, phone numbers, tokens and
token-bearing links.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import secrets
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from geographiclib.geodesic import Geodesic

from bangpae.adapters.clock import ManualClock
from bangpae.app import build, servers_for
from bangpae.config import Settings
from bangpae.domain.model import Fix, Order
from bangpae.services.auth import hash_password
from tests.integration.conftest import signed_in
from tests.scenario import T0

HOME = (37.4979, 127.0276)  # hers
VICTIM = ("Lee Seoyeon", "seoyeon.lee", "+821023456789")
OFFENDER = ("Kim Minjun", "minjun.kim", "+821098761234")
PASSWORD = "her-own-long-passphrase"
# every logger at DEBUG: the libraries' as well as ours (SQLAlchemy's at INFO, statements
# and their parameters: at DEBUG it prints the rows read, and is never turned on)
LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore", "urllib3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - delivery runs in its own tasks
            await asyncio.sleep(0.01)


# -- what must never be written --------------------------------------------------------------


@dataclass
class Secrets:
    """What the scenario gave the service that no log line may carry."""

    coordinates: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def place(self, lat: float, lon: float) -> tuple[float, float]:
        self.coordinates += [lat, lon]
        return lat, lon

    def token(self, value: str) -> str:
        self.tokens.append(value)
        return value

    def leaks(self, line: str) -> list[str]:
        """What of the secrets this line gives away."""
        found = []
        # any rendering of a coordinate to 3 decimals or more (rounded or cut: 110 m)
        for number in re.findall(r"-?\d+\.\d{3,}", line):
            if any(abs(float(number) - c) < 0.001 for c in self.coordinates):
                found.append(f"coordinate {number}")
        low = line.lower()
        found += [f"name {n!r}" for n in self.names if n.lower() in low]
        for run in re.findall(r"\+?\d[\d\s().-]{6,}\d", line):
            digits = re.sub(r"\D", "", run)
            found += [f"phone {run!r}" for p in self.phones if p[-10:] in digits]
        for t in self.tokens:
            # a token, a JWT's payload or signature alone, or a long enough piece of one
            parts = t.split(".")[1:] if t.count(".") == 2 else [t[:16], t[-16:]]
            if t in line or any(len(p) >= 16 and p in line for p in parts):
                found.append(f"token {t[:6]}...")
        return found


def logged_text(record: logging.LogRecord) -> str:
    """Everything a handler writes of a record: message, exception, stack."""
    exc = record.exc_text  # what handlers write when it is set
    if not exc and record.exc_info:
        exc = logging.Formatter().formatException(record.exc_info)
    return "\n".join((record.getMessage(), exc or "", record.stack_info or ""))


# -- the police's webhook and the browsers' push service, on 127.0.0.1 ------------------------


@dataclass
class Outside:
    """One HTTP server standing in for the police's webhook and a push service."""

    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    base: str = ""


@pytest.fixture
def outside() -> Iterator[Outside]:
    out = Outside()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            out.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(201 if self.path.startswith("/push/") else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield out
    server.shutdown()
    server.server_close()


def subscription(endpoint: str) -> dict[str, Any]:
    """What a browser sends when it subscribes (RFC 8291 keys)."""
    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {"endpoint": endpoint, "keys": {"p256dh": b64(public), "auth": b64(os.urandom(16))}}


# -- the scenario ------------------------------------------------------------------------------


async def test_no_log_line_carries_a_position_a_name_a_phone_number_or_a_token(
    tmp_path: Path, outside: Outside, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    hidden = Secrets(
        names=[VICTIM[0], OFFENDER[0], "Seoyeon", "Minjun", VICTIM[1], OFFENDER[1]],
        phones=[VICTIM[2], OFFENDER[2]],
    )
    hook = hidden.token(secrets.token_urlsafe(24))
    handoff_secret = hidden.token(secrets.token_urlsafe(24))
    clock = ManualClock(T0)
    ctx = build(
        Settings(
            data_dir=tmp_path,
            http=f"127.0.0.1:{free_port()}",
            osmand=f"127.0.0.1:{free_port()}",
            gt06="off",
            h02="off",
            tick_s=60,  # the scenario steps the timers itself
            handoff_webhook_url=f"{outside.base}/police/{hook}",
            handoff_secret=handoff_secret,
            handoff_retry_base_s=0.01,
            push_allowed_hosts="127.0.0.1",
        ),
        clock=clock,
    )
    s = ctx.store
    vic = s.add_person("victim", VICTIM[0])
    off = s.add_person("offender", OFFENDER[0])
    s.set_person_phone(vic, VICTIM[2])
    s.set_person_phone(off, OFFENDER[2])
    keys = {"PHONE-7": hidden.token(secrets.token_urlsafe(18))}
    keys["ANKLE-7"] = hidden.token(secrets.token_urlsafe(18))
    phone = s.add_device(
        "PHONE-7", "phone", "osmand", vic, secret_hash=hash_password(keys["PHONE-7"])
    )
    s.add_device(
        "ANKLE-7", "ankle_monitor", "osmand", off, secret_hash=hash_password(keys["ANKLE-7"])
    )
    s.add_order(Order(0, off, vic))
    s.add_user(VICTIM[1], hash_password(PASSWORD), "victim", vic)
    staff = signed_in(s, ctx.secret, [("op", "operator", None), ("sup", "supervisor", None)], T0)
    for h in staff.values():
        hidden.token(h["Authorization"][7:])
    op = staff["op"]

    await ctx.start()
    servers = servers_for(ctx)
    for name in ("uvicorn", "uvicorn.access"):  # uvicorn's loggers keep to their own handlers
        logging.getLogger(name).addHandler(caplog.handler)
    tasks = [asyncio.create_task(srv.serve()) for _, srv in servers]
    try:
        await until(lambda: all(srv.started for _, srv in servers))
        api = f"http://{ctx.settings.http}/api/v1"
        osmand = f"http://{ctx.settings.osmand}/"
        async with httpx.AsyncClient(timeout=10) as http:

            async def report(device: str, t: float, d: float) -> None:
                """A tracker's OsmAnd report ``d`` metres east of her home at ``t``."""
                g = Geodesic.WGS84.Direct(HOME[0], HOME[1], 90.0, d)
                lat, lon = hidden.place(g["lat2"], g["lon2"])
                clock.set(T0 + t)
                q = {"id": device, "lat": lat, "lon": lon, "timestamp": T0 + t, "accuracy": 5}
                r = await http.get(osmand, params=q | {"key": keys[device]})
                assert r.status_code == 200, r.text

            async def signed_in_again(refresh: str) -> tuple[dict[str, str], str]:
                """Her app's refresh: a new access token (bearer header) and refresh token."""
                r = await http.post(f"{api}/auth/refresh", json={"refresh_token": refresh})
                assert r.status_code == 200, r.text
                bearer = {"Authorization": f"Bearer {hidden.token(r.json()['access_token'])}"}
                return bearer, hidden.token(r.json()["refresh_token"])

            # she signs in on her phone
            r = await http.post(
                f"{api}/auth/login", json={"username": VICTIM[1], "password": PASSWORD}
            )
            assert r.status_code == 200, r.text
            hidden.token(r.json()["access_token"])
            her, refresh = await signed_in_again(hidden.token(r.json()["refresh_token"]))

            # her browser and the operator's subscribe to Web Push; her old laptop's
            # push service is down
            down = f"http://127.0.0.1:{free_port()}"
            for who, base in ((her, outside.base), (op, outside.base), (her, down)):
                endpoint = f"{base}/push/{hidden.token(secrets.token_urlsafe(32))}"
                r = await http.post(
                    f"{api}/push/subscriptions", json=subscription(endpoint), headers=who
                )
                assert r.status_code == 201, r.text

            # both report; he comes closer, into a breach
            for t, d in ((0, 5000), (600, 1800), (900, 500), (1000, 50)):
                await report("PHONE-7", t, 0)
                await report("ANKLE-7", t, d)
            # her app signs in again (its access token lasts minutes) and reports her position
            her, refresh = await signed_in_again(refresh)
            lat, lon = hidden.place(HOME[0] + 0.0002, HOME[1] - 0.0001)
            r = await http.post(
                f"{api}/victim/location",
                json={"lat": lat, "lon": lon, "accuracy_m": 8},
                headers=her,
            )
            assert r.status_code == 202, r.text
            # a tracker misconfigured with latitude and longitude swapped is refused
            lat, lon = hidden.place(HOME[1] + 0.0003, HOME[0] + 0.0003)
            q = {"id": "ANKLE-7", "lat": lat, "lon": lon, "key": keys["ANKLE-7"]}
            assert (await http.get(osmand, params=q)).status_code == 400
            # she presses SOS
            clock.set(T0 + 1010)
            lat, lon = hidden.place(HOME[0] - 0.0001, HOME[1] + 0.0002)
            r = await http.post(
                f"{api}/victim/sos", json={"lat": lat, "lon": lon, "accuracy_m": 6}, headers=her
            )
            assert r.status_code == 201, r.text

            # the operator hands the breach to the police on every channel
            [breach] = [i for i in s.incidents(status="open") if i.kind == "breach"]
            handoffs = {}
            for channel in ("email", "sms", "webhook"):
                r = await http.post(
                    f"{api}/incidents/{breach.id}/handoff",
                    json={"channel": channel, "note": f"{OFFENDER[0]} at her door"},
                    headers=op,
                )
                assert r.status_code == 201, r.text
                live = r.json()["live_url"]
                hidden.token(live.rsplit("/", 1)[1])
                handoffs[channel] = r.json()["id"]
            await until(
                lambda: all(s.get_handoff(h).status != "pending" for h in handoffs.values())
            )
            assert [s.get_handoff(h).status for h in handoffs.values()] == [
                "logged",
                "logged",
                "delivered",
            ]
            # the police follow the live link
            path = live.split("/api/v1", 1)[1]
            assert (await http.get(f"{api}{path}")).status_code == 200

            # the store fails for a moment: ingest refuses, she is told, then it is back
            db = tmp_path / "bangpae.sqlite"
            with sqlite3.connect(db) as c:
                c.execute("ALTER TABLE fixes RENAME TO fixes_away")
            clock.set(T0 + 1030)
            g = Geodesic.WGS84.Direct(HOME[0], HOME[1], 180.0, 20)
            lat, lon = hidden.place(g["lat2"], g["lon2"])
            with pytest.raises(Exception, match="fixes"):
                await ctx.ingest.submit([Fix(phone, T0 + 1030, lat, lon, 5.0)])
            assert ctx.notifier is not None
            await ctx.notifier.check_service(ctx.ingest)
            with sqlite3.connect(db) as c:
                c.execute("ALTER TABLE fixes_away RENAME TO fixes")

            # every notice went out by push and by SMS
            await until(lambda: ctx.reactions.caught_up(ctx.ingest.stats.events))
            told = s.notices(audience="victim")
            assert any(x.delivery.get("sms") == "logged" for x in told), told
            assert any(x.delivery.get("push", "").startswith("sent 1") for x in told), told
            for path_, headers, _ in outside.received:
                if path_.startswith("/push/"):  # the VAPID token the server signed
                    hidden.token(headers["authorization"].split("t=")[1].split(",")[0])
    finally:
        for _, srv in servers:
            srv.should_exit = True
        await asyncio.gather(*tasks)
        for name in ("uvicorn", "uvicorn.access"):
            logging.getLogger(name).removeHandler(caplog.handler)
        await ctx.stop()

    records = caplog.records
    assert records, "the scenario logged nothing: the capture is broken"
    leaks = [
        (r.name, r.levelname, found, logged_text(r)[:300])
        for r in records
        if (found := hidden.leaks(logged_text(r)))
    ]
    assert leaks == [], "\n".join(map(str, leaks))
    # and none of it was kept out only by the redaction behind the sources
    slipped = [
        logged_text(r)
        for r in records
        if r.name.startswith("bangpae") and getattr(r, "redacted", False)
    ]
    assert slipped == [], slipped
    # what an operator needs is there: each delivery, by channel and id
    lines = [r.getMessage() for r in records if r.name.startswith("bangpae")]
    for channel in ("email", "sms"):
        assert any(f"hand-off {handoffs[channel]} via {channel}" in x for x in lines), lines
    assert any(x.startswith("sms to") for x in lines), lines
