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

from bangpae.api.context import RouteContext
from bangpae.api.deps import authenticate
from bangpae.domain.audit import AuditEntry
from bangpae.domain.model import Event
from bangpae.services import queries, sos
from bangpae.services.auth import SCOPE_FULL, Principal
from bangpae.services.live import REGISTRY_CHANGED

router = APIRouter(prefix="/api/v1")
AUTH_TIMEOUT_S = 10.0
HEARTBEAT_S = 20.0  # the control centre's stream; hers follows ``stream_heartbeat_s``
SOS_CHANGED = "sos"  # put on her stream's queue when one of her SOS incidents moved
SESSION_CHECK_S = 20.0  # an open stream ends this soon after its session is revoked
STAFF = ("operator", "supervisor")


async def _authenticate(ws: WebSocket, roles: tuple[str, ...]) -> Principal | None:
    ctx: RouteContext = ws.app.state.ctx
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

    def __init__(self, ctx: RouteContext, who: Principal) -> None:
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


def _her_orders(ctx: RouteContext, who: Principal) -> list[Any]:
    """The orders protecting her (not those she is the other party of)."""
    if who.person_id is None:
        return []
    return [o for o in ctx.store.orders_for_person(who.person_id) if o.victim_id == who.person_id]


def _next_boundary(orders: list[Any], now: float) -> float | None:
    """When one of these orders next starts or ends (None: none will)."""
    times = [t for o in orders for t in (o.valid_from, o.valid_until) if t is not None and t > now]
    return min(times, default=None)


def _shape(status: dict[str, Any]) -> list[dict[str, Any]]:
    # the age of a fix changes every second; a status is sent when anything else changed
    return [
        {k: v for k, v in o.items() if k != "offender"}
        | {"fix": (o["offender"] or {}).get("fix_time")}
        for o in status["orders"]
    ]


@router.websocket("/victim/stream")
async def victim_stream(ws: WebSocket) -> None:
    """The protected person's status: sent at once, then whenever it changes.

    Orders entered or ended while the stream is open are picked up (docs/disclosure.md,
    "The live link"); her SOS incidents are sent as they move (docs/sos.md); and a
    heartbeat goes out whenever nothing else was sent for ``stream_heartbeat_s``,
    however busy the queue, so the app's watchdog never takes a live link for dead.
    """
    who = await _authenticate(ws, ("victim",))
    if who is None:
        return
    ctx: RouteContext = ws.app.state.ctx
    heartbeat_s = float(ctx.settings.stream_heartbeat_s or HEARTBEAT_S)
    orders = await asyncio.to_thread(_her_orders, ctx, who)

    def view(now: float) -> tuple[dict[str, Any], list[AuditEntry]]:
        status, reads = queries.victim_view(ctx.engine, who, now, orders)
        return status, queries.victim_reads(who, reads, now)

    q = ctx.ingest.live.watch({o.id for o in orders}, view)
    lock = asyncio.Lock()  # the stream loop and the notices task both send
    sent_at = time.monotonic()

    async def send(message: dict[str, Any]) -> None:
        nonlocal sent_at
        async with lock:
            await ws.send_json(message)
            sent_at = time.monotonic()

    async def pursuit(seconds: int) -> None:  # her app reports faster while he is near
        await send({"type": "report_interval", "seconds": seconds})

    def sos_changed() -> None:  # on the event loop: the SOS hub wakes the stream
        if q.full():
            q.get_nowait()
        q.put_nowait(SOS_CHANGED)

    devices = (
        await asyncio.to_thread(ctx.store.device_ids_of_person, who.person_id)
        if who.person_id is not None
        else []
    )
    for d in devices:
        await ctx.commands.register(d, pursuit)
    hub = ctx.notifier.hub if ctx.notifier is not None else None
    if hub is not None and who.person_id is not None:
        hub.listen_person(who.person_id, send)
    if who.person_id is not None:
        ctx.sos.listen(who.person_id, sos_changed)
    session = _Session(ctx, who)
    last: list[dict[str, Any]] | None = None
    last_sos: list[dict[str, Any]] | None = None

    async def send_status(status: dict[str, Any] | None) -> None:
        nonlocal last
        if status is None:  # read (and audited) here; a batch's view is audited already
            status = await asyncio.to_thread(
                queries.victim_status, ctx.store, ctx.engine, who, ctx.clock.now(), None, orders
            )
        if _shape(status) != last:
            await send({"type": "status", **status})
            last = _shape(status)

    async def send_sos(first: bool) -> None:
        nonlocal last_sos
        mine = await asyncio.to_thread(sos.victim_sos, ctx.store, who, ctx.clock.now())
        if mine != last_sos and (mine or not first):
            await send({"type": "sos", "sos": mine})
        last_sos = mine

    try:
        await send_status(None)
        await send_sos(first=True)
        while not await session.ended(ws):
            wait = sent_at + heartbeat_s - time.monotonic()
            boundary = _next_boundary(orders, ctx.clock.now())
            if boundary is not None:
                wait = min(wait, boundary - ctx.clock.now())
            try:
                update = await asyncio.wait_for(q.get(), max(wait, 0.0))
            except TimeoutError:
                if boundary is not None and ctx.clock.now() >= boundary:
                    await send_status(None)  # an order began or ended
                if time.monotonic() - sent_at >= heartbeat_s:
                    await send({"type": "heartbeat"})
                continue
            if isinstance(update, dict):
                await send_status(update)
            elif update == SOS_CHANGED:
                await send_sos(first=False)
            elif update == REGISTRY_CHANGED:
                fresh = await asyncio.to_thread(_her_orders, ctx, who)
                if fresh != orders:
                    orders[:] = fresh
                    ctx.ingest.live.rewatch(q, {o.id for o in orders})
                    await send_status(None)
            elif isinstance(update, set) and update & {o.id for o in orders}:
                await send_status(None)
    except WebSocketDisconnect:
        pass
    finally:
        ctx.ingest.live.unwatch(q)
        ctx.sos.forget(sos_changed)
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
    """Every stored event, as it is decided, for the control centre.

    A screen that falls more than the bus's screen queue behind loses the oldest events
    and is told how many (``{"type": "dropped", "events": n}``) before the next one; the
    notices and pursuit are reactions and never lose any (docs/architecture.md).
    """
    who = await _authenticate(ws, STAFF)
    if who is None:
        return
    ctx: RouteContext = ws.app.state.ctx
    q = ctx.bus.subscribe()
    lock = asyncio.Lock()  # the stream loop and the notices task both send

    async def send(message: dict[str, Any]) -> None:
        async with lock:
            await ws.send_json(message)

    hub = ctx.notifier.hub if ctx.notifier is not None else None
    if hub is not None:
        hub.listen_role(who.role, send)
    session = _Session(ctx, who)
    told_dropped = 0  # the screen's queue is bounded: what it lost is counted, and said
    try:
        await send({"type": "hello", "role": who.role})
        while not await session.ended(ws):
            try:
                e = await asyncio.wait_for(q.get(), HEARTBEAT_S)
            except TimeoutError:
                await send({"type": "heartbeat"})
                continue
            if q.dropped > told_dropped:  # fell behind: say so before going on
                await send({"type": "dropped", "events": q.dropped - told_dropped})
                told_dropped = q.dropped
            await send(_public(e))
    except WebSocketDisconnect:
        pass
    finally:
        ctx.bus.unsubscribe(q)
        if hub is not None:
            hub.forget(send)
        with contextlib.suppress(RuntimeError):
            await ws.close()
