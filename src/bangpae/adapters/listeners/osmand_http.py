"""The OsmAnd / Traccar Client listener: HTTP in, a fix durably stored, then 200 OK."""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bangpae.adapters.listeners.metrics import counter
from bangpae.domain.retention import fix_time_refusal
from bangpae.protocols import osmand
from bangpae.protocols.errors import FrameError
from bangpae.services import devices
from bangpae.services.ratelimit import source_allowed

log = logging.getLogger(__name__)
MAX_BODY = 64_000
# The device gate's refusals as OsmAnd clients are answered: status, metric reason, body.
REFUSALS = {
    devices.UNKNOWN: (403, devices.UNKNOWN, "unknown device"),
    devices.NO_KEY: (403, devices.NO_KEY, "this device has no key: register one"),
    devices.BAD_KEY: (403, devices.BAD_KEY, "wrong or missing device key"),
    devices.LIMITED: (429, "rate_limited", "too many failed identifications, slow down"),
}


class OsmAndListener:
    """Decodes, authenticates and submits; counts every rejection by reason."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.rejected = counter(
            ctx, "bangpae_rejected", "Device messages refused", ["protocol", "reason"]
        )
        self.accepted = counter(ctx, "bangpae_accepted", "Device messages stored", ["protocol"])
        self.networks = ctx.settings.allowed_networks()

    def _refuse(self, status: int, reason: str, detail: str) -> PlainTextResponse:
        self.rejected.labels("osmand", reason).inc()
        return PlainTextResponse(detail + "\n", status_code=status)

    async def handle(self, request: Request) -> PlainTextResponse:
        """One OsmAnd report."""
        now = self.ctx.clock.now()
        source = request.client.host if request.client else "?"
        if not source_allowed(source, self.networks):
            return self._refuse(403, "source_not_allowed", "this network may not send fixes")
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
        # A registered device with its key is answered from memory, whatever its address
        # did; only unknown identifiers and wrong keys count against the source.
        gate = self.ctx.device_gate
        device = await gate.admit("osmand", decoded.identifier, decoded.key, source, now)
        if isinstance(device, devices.Refused):
            await gate.delay_refusal()
            return self._refuse(*REFUSALS[device.reason])
        late = fix_time_refusal(
            decoded.fix_time, now, device.registered_at, self.ctx.settings.retention_days
        )
        if late is not None:
            return self._refuse(400, "fix_time", late)
        try:
            await self.ctx.ingest.submit([decoded.fix(device.device_id, now)])
        except Exception:  # not stored: the device must retry, so it gets no 200
            log.exception("osmand: storing a fix failed")
            return self._refuse(503, "store_failed", "not stored, retry")
        self.accepted.labels("osmand").inc()
        return PlainTextResponse("", status_code=200)


def create_osmand_app(ctx: Any) -> Starlette:
    """The listener as an ASGI app: GET or POST on any path."""
    listener = OsmAndListener(ctx)
    return Starlette(routes=[Route("/{path:path}", listener.handle, methods=["GET", "POST"])])
