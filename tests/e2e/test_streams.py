"""The victim and control-centre WebSocket streams, over real sockets."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from .conftest import Server
from .test_serve import at, seed_case


async def _recv(ws: websockets.ClientConnection, wait_s: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), wait_s))


def _fix(srv: Server, ident: str, d: float, t: float) -> None:
    lat, lon = at(d)
    r = httpx.get(
        srv.osmand,
        params={
            "id": ident,
            "lat": f"{lat:.7f}",
            "lon": f"{lon:.7f}",
            "timestamp": f"{t:.3f}",
            "accuracy": "5",
        },
    )
    assert r.status_code == 200


async def test_the_victim_stream_shows_each_tier_as_fixes_arrive(server: Server) -> None:
    staff, victim, order_id = seed_case(server)
    ws_url = server.api.replace("http", "ws") + "/api/v1"
    token = victim["Authorization"][7:]
    async with (
        websockets.connect(f"{ws_url}/victim/stream") as ws,
        websockets.connect(f"{ws_url}/ops/stream") as ops,
    ):
        await ws.send(json.dumps({"token": token}))
        await ops.send(json.dumps({"token": staff["Authorization"][7:]}))
        assert (await _recv(ops))["type"] == "hello"
        first = await _recv(ws)
        assert first["type"] == "status" and first["orders"][0]["tier"] == "clear"
        t = time.time() - 30
        await asyncio.to_thread(_fix, server, "PHONE-1", 0.0, t - 10)  # her track: two
        await asyncio.to_thread(_fix, server, "PHONE-1", 0.0, t)  # agreeing reports
        seen, intervals = [], []
        for i, d in enumerate((1500, 450, 80)):
            sent = time.monotonic()
            await asyncio.to_thread(_fix, server, "ANKLE-1", d, t + i + 1)
            frame = await _recv(ws)
            while frame["type"] != "status":  # pursuit mode speaks on the same stream
                intervals.append(frame["seconds"])
                frame = await _recv(ws)
            seen.append(frame["orders"][0]["tier"])
            assert time.monotonic() - sent < 1.0  # shown within a second of acceptance
            if d > 600:
                assert frame["orders"][0]["offender"] is None
                assert "lat" not in json.dumps(frame)
            else:
                assert frame["orders"][0]["offender"]["lat"] == pytest.approx(at(d)[0], abs=1e-6)
        # 1.5 km: warned from his cell (docs/disclosure.md), "close" if his cell is near
        assert seen[0] in ("notify", "reveal") and seen[1:] == ["reveal", "breach"]
        while not intervals:  # her app was asked to report every 15 s once he was near
            frame = await _recv(ws)
            if frame["type"] == "report_interval":
                intervals.append(frame["seconds"])
        assert intervals[0] == 15
        kinds = []
        while "breach" not in [k[1] for k in kinds]:
            e = await _recv(ops)
            kinds.append((e["kind"], e["tier_to"]))
            assert "lat" not in e["data"]


async def test_a_stream_refuses_a_missing_token_and_the_wrong_role(server: Server) -> None:
    staff, victim, _ = seed_case(server)
    ws_url = server.api.replace("http", "ws") + "/api/v1"
    async with websockets.connect(f"{ws_url}/ops/stream") as ws:
        await ws.send(json.dumps({"token": victim["Authorization"][7:]}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await _recv(ws)
        assert closed.value.rcvd.code == 4403
    async with websockets.connect(f"{ws_url}/victim/stream") as ws:
        await ws.send(json.dumps({"token": "forged"}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await _recv(ws)
        assert closed.value.rcvd.code == 4401
