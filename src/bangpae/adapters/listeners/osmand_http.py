"""The OsmAnd / Traccar Client listener: HTTP in, a fix durably stored, then 200 OK."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bangpae.adapters.listeners.metrics import counter
from bangpae.domain.model import Fix
from bangpae.protocols import osmand
from bangpae.protocols.errors import FrameError
from bangpae.services.auth import verify_password
from bangpae.services.ratelimit import FailureLimiter, source_allowed

log = logging.getLogger(__name__)
MAX_BODY = 64_000


class OsmAndListener:
    """Decodes, authenticates and submits; counts every rejection by reason."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.rejected = counter(
            ctx, "bangpae_rejected", "Device messages refused", ["protocol", "reason"]
        )
        self.accepted = counter(ctx, "bangpae_accepted", "Device messages stored", ["protocol"])
        self._devices: dict[str, tuple[int, str | None]] = {}
        self._keys_ok: set[tuple[int, str]] = set()
        self.limiter = FailureLimiter()
        self.networks = ctx.settings.allowed_networks()

    def _device(self, identifier: str) -> tuple[int, str | None] | None:
        hit = self._devices.get(identifier)
        if hit is None:
            device = self.ctx.store.get_device(identifier)
            if device is None or device.identifier != identifier:
                return None
            hit = (device.id, self.ctx.store.device_secret_hash(device.id))
            self._devices[identifier] = hit
        return hit

    def _key_ok(self, device_id: int, secret: str, key: str | None) -> bool:
        if not key:
            return False
        if (device_id, key) in self._keys_ok:
            return True
        ok = verify_password(secret, key)
        if ok:
            self._keys_ok.add((device_id, key))
        return ok

    def _refuse(self, status: int, reason: str, detail: str) -> PlainTextResponse:
        self.rejected.labels("osmand", reason).inc()
        return PlainTextResponse(detail + "\n", status_code=status)

    async def handle(self, request: Request) -> PlainTextResponse:
        """One OsmAnd report."""
        now = self.ctx.clock.now()
        source = request.client.host if request.client else "?"
        if not source_allowed(source, self.networks):
            return self._refuse(403, "source_not_allowed", "this network may not send fixes")
        if self.limiter.blocked(source, now):
            return self._refuse(429, "rate_limited", "too many failed identifications, slow down")
        body = await request.body()
        if len(body) > MAX_BODY:
            return self._refuse(413, "too_large", "body too large")
        try:
            ctype = request.headers.get("content-type", "")
            if "json" in ctype or body.lstrip()[:1] == b"{":
                decoded = osmand.decode_json(body, now)
            else:
                params = dict(request.query_params)
                if body and "form" in ctype:
                    form = await request.form()
                    params.update({k: str(v) for k, v in form.items()})
                decoded = osmand.decode_query(params, now)
        except FrameError as exc:
            log.info(
                "osmand: refused a malformed message from %s: %s",
                request.client.host if request.client else "?",
                exc.reason,
            )
            return self._refuse(400, "malformed", f"malformed: {exc.reason}")
        # Known devices and keys already verified are answered from memory, without a thread.
        device = self._devices.get(decoded.identifier) or await asyncio.to_thread(
            self._device, decoded.identifier
        )
        if device is None:
            self.limiter.failed(source, now)
            return self._refuse(403, "unknown_device", f"unknown device {decoded.identifier!r}")
        device_id, secret = device
        if secret is None:  # known by its identifier alone: only where the operator allows it
            if not self.ctx.settings.allow_keyless_devices:
                self.limiter.failed(source, now)
                return self._refuse(403, "no_key", "this device has no key: register one")
        elif (device_id, decoded.key) not in self._keys_ok:
            if not await asyncio.to_thread(self._key_ok, device_id, secret, decoded.key):
                self.limiter.failed(source, now)
                return self._refuse(403, "bad_key", "wrong or missing device key")
        fix = Fix(
            device_id,
            decoded.fix_time,
            decoded.lat,
            decoded.lon,
            decoded.accuracy_m,
            decoded.speed_mps,
            decoded.heading_deg,
            decoded.battery_pct,
            decoded.valid,
            decoded.alarms,
            now,
        )
        try:
            await self.ctx.ingest.submit([fix])
        except Exception:  # not stored: the device must retry, so it gets no 200
            log.exception("osmand: storing a fix failed")
            return self._refuse(503, "store_failed", "not stored, retry")
        self.accepted.labels("osmand").inc()
        return PlainTextResponse("", status_code=200)


def create_osmand_app(ctx: Any) -> Starlette:
    """The listener as an ASGI app: GET or POST on any path."""
    listener = OsmAndListener(ctx)
    return Starlette(routes=[Route("/{path:path}", listener.handle, methods=["GET", "POST"])])
