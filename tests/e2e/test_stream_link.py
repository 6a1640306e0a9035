"""The victim's live link over real sockets: a new order is picked up, heartbeats keep time."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import websockets

from .conftest import Server, free_port
from .test_serve import PASSWORD, send


def _people(srv: Server, offenders: int = 1) -> tuple[dict[str, str], list[int], int]:
    """Staff, offenders and a victim with a device each, but no order yet."""
    srv.add_user("sup1", "supervisor", PASSWORD)
    srv.start()
    staff = srv.login("sup1", PASSWORD)
    api = f"{srv.api}/api/v1"
    ids = []
    parties = [("offender", f"ANKLE-{i + 1}", "ankle_monitor") for i in range(offenders)]
    for kind, ident, device in [*parties, ("victim", "PHONE-1", "phone")]:
        pid = httpx.post(f"{api}/people", json={"kind": kind, "name": kind}, headers=staff).json()[
            "id"
        ]
        r = httpx.post(
            f"{api}/devices",
            headers=staff,
            json={"identifier": ident, "kind": device, "protocol": "osmand", "person_id": pid},
        )
        assert r.status_code == 201, r.text
        ids.append(pid)
    srv.add_user("victim1", "victim", PASSWORD, ids[-1])
    return staff, ids[:-1], ids[-1]


def _order(srv: Server, staff: dict[str, str], off: int, vic: int) -> int:
    r = httpx.post(
        f"{srv.api}/api/v1/orders", headers=staff, json={"offender_id": off, "victim_id": vic}
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _recv(ws: websockets.ClientConnection, wait_s: float) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), wait_s))


@pytest.fixture
def fast_heartbeat_server(tmp_path: Path) -> Server:
    srv = Server(tmp_path / "data", free_port(), free_port())
    srv.data_dir.mkdir(mode=0o700)
    env = srv.env
    srv.env = lambda: {**env(), "BANGPAE_STREAM_HEARTBEAT_S": "1"}  # type: ignore[method-assign]
    yield srv
    srv.kill()


async def test_an_order_created_while_her_link_is_open_is_shown_within_two_seconds(
    server: Server,
) -> None:
    staff, (far, near), vic = _people(server, offenders=2)
    _order(server, staff, far, vic)
    t = time.time() - 30
    await asyncio.to_thread(send, server, "PHONE-1", 0.0, t - 10)  # her track: two
    await asyncio.to_thread(send, server, "PHONE-1", 0.0, t)  # agreeing reports
    await asyncio.to_thread(send, server, "ANKLE-1", 9000.0, t + 1)  # the first far away
    await asyncio.to_thread(send, server, "ANKLE-2", 300.0, t + 1)  # the second 300 m away
    victim = server.login("victim1", PASSWORD)
    ws_url = server.api.replace("http", "ws") + "/api/v1"
    async with websockets.connect(f"{ws_url}/victim/stream") as ws:
        await ws.send(json.dumps({"token": victim["Authorization"][7:]}))
        first = await _recv(ws, 5)
        assert first["type"] == "status" and len(first["orders"]) == 1
        order_id = await asyncio.to_thread(_order, server, staff, near, vic)
        created = time.monotonic()
        status = None
        while status is None:  # a correctness bound: she must not be told "clear" for long
            frame = await _recv(ws, max(0.01, 3.0 - (time.monotonic() - created)))
            if frame["type"] == "status" and len(frame["orders"]) == 2:
                status = frame
        order = status["orders"][1]
        assert order["order_id"] == order_id
        assert order["tier"] == "reveal" and order["offender"] is not None


async def test_heartbeats_keep_their_deadline_while_updates_keep_arriving(
    fast_heartbeat_server: Server,
) -> None:
    srv = fast_heartbeat_server
    staff, [off], vic = _people(srv)
    _order(srv, staff, off, vic)
    t = time.time() - 60
    await asyncio.to_thread(send, srv, "PHONE-1", 0.0, t)
    victim = srv.login("victim1", PASSWORD)
    ws_url = srv.api.replace("http", "ws") + "/api/v1"
    async with websockets.connect(f"{ws_url}/victim/stream") as ws:
        await ws.send(json.dumps({"token": victim["Authorization"][7:]}))
        assert (await _recv(ws, 5))["type"] == "status"
        gaps, last, heartbeats = [], time.monotonic(), 0

        async def walk() -> None:  # his fixes far away, every 0.2 s: her status never changes
            for i in range(20):
                await asyncio.to_thread(send, srv, "ANKLE-1", 9000.0 + i, t + 1 + i)
                await asyncio.sleep(0.2)

        walker = asyncio.create_task(walk())
        end = time.monotonic() + 4.5
        while time.monotonic() < end:
            frame = await _recv(ws, 5)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            heartbeats += frame["type"] == "heartbeat"
        await walker
        # every second since the last message, whatever the queue does (generous bound)
        assert heartbeats >= 3 and max(gaps) < 2.0


def _post(url: str, headers: dict[str, str], body: dict) -> dict:
    r = httpx.post(url, headers=headers, json=body)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


async def test_her_link_carries_her_sos_loop_within_two_seconds_of_each_step(
    server: Server,
) -> None:
    staff, [off], vic = _people(server)
    _order(server, staff, off, vic)
    victim = server.login("victim1", PASSWORD)
    ws_url = server.api.replace("http", "ws") + "/api/v1"
    api = f"{server.api}/api/v1"
    async with websockets.connect(f"{ws_url}/victim/stream") as ws:
        await ws.send(json.dumps({"token": victim["Authorization"][7:]}))
        assert (await _recv(ws, 5))["type"] == "status"  # no SOS yet: no "sos" frame

        async def next_sos(since: float) -> list[dict]:
            while True:  # a correctness bound: she is told within 2 s (3 s: generous)
                frame = await _recv(ws, max(0.01, 3.0 - (time.monotonic() - since)))
                if frame["type"] == "sos":
                    return list(frame["sos"])

        sent = time.monotonic()
        body = await asyncio.to_thread(_post, f"{api}/victim/sos", victim, {"silent": True})
        [received] = await next_sos(sent)
        assert received["id"] == body["sos_id"] and received["state"] == "received"
        assert received["silent"] is True
        acted = time.monotonic()
        url = f"{api}/incidents/{body['sos_id']}/acknowledge"
        await asyncio.to_thread(_post, url, staff, {"note": "on it"})
        [seen] = await next_sos(acted)
        assert seen["state"] == "seen" and [s["state"] for s in seen["steps"]] == [
            "received",
            "seen",
        ]
    # a new link starts with her SOS list
    async with websockets.connect(f"{ws_url}/victim/stream") as ws:
        await ws.send(json.dumps({"token": victim["Authorization"][7:]}))
        frames = [await _recv(ws, 5), await _recv(ws, 5)]
        assert [f["type"] for f in frames] == ["status", "sos"] and frames[1]["sos"] == [seen]


async def test_an_order_ending_while_her_link_is_open_leaves_her_status_then(
    server: Server,
) -> None:
    staff, [off], vic = _people(server)
    ends = datetime.now(UTC) + timedelta(seconds=4)
    body = {"offender_id": off, "victim_id": vic, "valid_until": ends.isoformat()}
    await asyncio.to_thread(_post, f"{server.api}/api/v1/orders", staff, body)
    victim = server.login("victim1", PASSWORD)
    ws_url = server.api.replace("http", "ws") + "/api/v1"
    async with websockets.connect(f"{ws_url}/victim/stream") as ws:
        await ws.send(json.dumps({"token": victim["Authorization"][7:]}))
        assert len((await _recv(ws, 5))["orders"]) == 1
        while True:  # nothing else happens: the order's end alone must be noticed
            frame = await _recv(ws, 8)
            if frame["type"] == "status":
                break
        assert frame["orders"] == []
        assert datetime.now(UTC) >= ends
