"""Live WebSocket streams: the victim's own status, and the control centre's events.

Browsers cannot set headers on a WebSocket, so a client may send its token as the
first message ``{"token": "..."}`` (within 10 s) instead of an Authorization
header. Closing codes: 4401 no or bad token, 4403 wrong role.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from bangpae.api.deps import authenticate
from bangpae.domain.model import Event
from bangpae.services import queries
from bangpae.services.auth import SCOPE_FULL, Principal

router = APIRouter(prefix="/api/v1")
AUTH_TIMEOUT_S = 10.0
HEARTBEAT_S = 20.0
SESSION_CHECK_S = 20.0  # an open stream ends this soon after its session is revoked
STAFF = ("operator", "supervisor")


async def _authenticate(ws: WebSocket, roles: tuple[str, ...]) -> Principal | None:
    ctx = ws.app.state.ctx
    await ws.accept()
    header = ws.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else None
    if token is None:
        try:
            first = await asyncio.wait_for(ws.receive_text(), AUTH_TIMEOUT_S)
            token = str(json.loads(first).get("token", ""))
        except (TimeoutError, ValueError, AttributeError, WebSocketDisconnect):
            token = ""
    who = await asyncio.to_thread(authenticate, ctx, token or "")
    if who is None:
        await ws.close(4401, "a valid token is required")
        return None
    if who.role not in roles or who.scope != SCOPE_FULL:
        await ws.close(4403, "this stream is not for your role")
        return None
    return who


class _Session:
    """Re-checks an open stream's session now and then: a revoked one ends the stream."""

    def __init__(self, ctx: Any, who: Principal) -> None:
        self.ctx, self.who = ctx, who
        self.checked = time.monotonic()

    async def ended(self, ws: WebSocket) -> bool:
        """Whether the session ended (the socket is then closed with 4401)."""
        if time.monotonic() - self.checked < SESSION_CHECK_S:
            return False
        self.checked = time.monotonic()
        who, ctx = self.who, self.ctx
        if who.sid is not None and await asyncio.to_thread(
            ctx.store.session_active, who.sid, who.user_id, ctx.clock.now()
        ):
            return False
        await ws.close(4401, "the session has ended")
        return True


@router.websocket("/victim/stream")
async def victim_stream(ws: WebSocket) -> None:
    """The protected person's status: sent at once, then whenever it changes."""
    who = await _authenticate(ws, ("victim",))
    if who is None:
        return
    ctx = ws.app.state.ctx
    orders = [
        o
        for o in await asyncio.to_thread(ctx.store.orders_for_person, who.person_id)
        if o.victim_id == who.person_id
    ]
    mine = {o.id for o in orders}

    def view(now: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        status, reads = queries.victim_view(ctx.engine, who, now, orders)
        return status, queries.victim_reads(who, reads, now)

    q = ctx.ingest.watch(mine, view)
    lock = asyncio.Lock()  # the stream loop and the notices task both send

    async def send(message: dict[str, Any]) -> None:
        async with lock:
            await ws.send_json(message)

    async def pursuit(seconds: int) -> None:  # her app reports faster while he is near
        await send({"type": "report_interval", "seconds": seconds})

    devices = await asyncio.to_thread(ctx.store.device_ids_of_person, who.person_id)
    for d in devices:
        await ctx.commands.register(d, pursuit)
    hub = ctx.notifier.hub if ctx.notifier is not None else None
    if hub is not None and who.person_id is not None:
        hub.listen_person(who.person_id, send)
    last: Any = None
    session = _Session(ctx, who)
    try:
        status: dict[str, Any] | None = None  # given by a batch, its reads already audited
        while not await session.ended(ws):
            if status is None:
                status = await asyncio.to_thread(
                    queries.victim_status, ctx.store, ctx.engine, who, ctx.clock.now(), None, orders
                )
            # the age of a fix changes every second; send when anything else changed
            shape = [
                {k: v for k, v in o.items() if k != "offender"}
                | {"fix": (o["offender"] or {}).get("fix_time")}
                for o in status["orders"]
            ]
            if shape != last:
                await send({"type": "status", **status})
                last = shape
            status = None
            while True:  # a heartbeat when quiet, so the app can tell a live link from a dead one
                try:
                    update = await asyncio.wait_for(q.get(), HEARTBEAT_S)
                except TimeoutError:
                    if await session.ended(ws):
                        return
                    await send({"type": "heartbeat"})
                    continue
                if isinstance(update, dict):
                    status = update
                    break
                if update & mine:
                    break
    except WebSocketDisconnect:
        pass
    finally:
        ctx.ingest.unwatch(q)
        if hub is not None:
            hub.forget(send)
        for d in devices:
            ctx.commands.unregister(d, pursuit)


def _public(e: Event) -> dict[str, Any]:
    # Positions stay behind the audited fixes API; the stream says what happened, not where.
    data = {k: v for k, v in e.data.items() if k not in ("lat", "lon")}
    return {
        "type": "event",
        "id": e.id,
        "kind": e.kind.value,
        "at": e.at,
        "order_id": e.order_id,
        "person_id": e.person_id,
        "device_id": e.device_id,
        "tier_from": None if e.tier_from is None else e.tier_from.label,
        "tier_to": None if e.tier_to is None else e.tier_to.label,
        "distance_m": e.distance_m,
        "late": e.late,
        "data": data,
    }


@router.websocket("/ops/stream")
async def ops_stream(ws: WebSocket) -> None:
    """Every stored event, as it is decided, for the control centre."""
    who = await _authenticate(ws, STAFF)
    if who is None:
        return
    ctx = ws.app.state.ctx
    q = ctx.bus.subscribe()
    lock = asyncio.Lock()  # the stream loop and the notices task both send

    async def send(message: dict[str, Any]) -> None:
        async with lock:
            await ws.send_json(message)

    hub = ctx.notifier.hub if ctx.notifier is not None else None
    if hub is not None:
        hub.listen_role(who.role, send)
    session = _Session(ctx, who)
    try:
        await send({"type": "hello", "role": who.role})
        while not await session.ended(ws):
            try:
                e = await asyncio.wait_for(q.get(), HEARTBEAT_S)
            except TimeoutError:
                await send({"type": "heartbeat"})
                continue
            await send(_public(e))
    except WebSocketDisconnect:
        pass
    finally:
        ctx.bus.unsubscribe(q)
        if hub is not None:
            hub.forget(send)
        with contextlib.suppress(RuntimeError):
            await ws.close()
