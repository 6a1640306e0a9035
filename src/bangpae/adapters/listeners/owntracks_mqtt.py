"""OwnTracks over MQTT: subscribe to ``owntracks/+/+``; PUBACK only once the fix is stored.

The session is persistent (clean_session off, QoS 1), so what arrives while
bangpae is down is delivered when it reconnects, and a message whose fix was
not stored is never acknowledged to the broker, which redelivers it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from bangpae.adapters.listeners.metrics import counter
from bangpae.adapters.listeners.owntracks_http import resolve
from bangpae.protocols import owntracks
from bangpae.protocols.errors import FrameError

log = logging.getLogger(__name__)
TOPIC = "owntracks/+/+"


async def _handle(ctx: Any, topic: str, payload: bytes, rejected: Any) -> None:
    now = ctx.clock.now()
    try:
        decoded = owntracks.decode(payload, topic, now)
    except FrameError as exc:
        rejected.labels("malformed").inc()
        log.info("owntracks mqtt %s: malformed: %s", topic, exc.reason)
        return
    # MQTT identity is the topic, already checked by the broker's own authentication.
    fixes, refusal = await resolve(ctx, "owntracks_mqtt", decoded.fixes, None, now, "mqtt")
    if refusal is not None:
        rejected.labels(refusal[1]).inc()
        log.info("owntracks mqtt %s: refused: %s", topic, refusal[2])
        return
    if fixes:
        await ctx.ingest.submit(fixes)


async def run_owntracks_mqtt(ctx: Any, url: str, ready: asyncio.Event | None = None) -> None:
    """Subscribe until cancelled, reconnecting after broker outages."""
    u = urlsplit(url)
    rejected = counter(ctx, "bangpae_mqtt_rejected", "OwnTracks MQTT messages refused", ["reason"])
    while True:
        try:
            async with aiomqtt.Client(
                u.hostname or "127.0.0.1",
                u.port or 1883,
                username=u.username,
                password=u.password,
                identifier="bangpae-owntracks",
                clean_session=False,
            ) as client:
                # paho acknowledges on receipt unless told otherwise: we ack after storing.
                client._client.manual_ack_set(True)
                await client.subscribe(TOPIC, qos=1)
                log.info("owntracks: subscribed to %s on %s", TOPIC, u.hostname)
                if ready is not None:
                    ready.set()
                async for message in client.messages:
                    topic = str(message.topic)
                    payload = (
                        message.payload
                        if isinstance(message.payload, bytes)
                        else str(message.payload).encode()
                    )
                    try:
                        await _handle(ctx, topic, payload, rejected)
                    except Exception:  # not stored: leave it unacknowledged for redelivery
                        log.exception("owntracks mqtt: storing a fix failed")
                        continue
                    client._client.ack(message.mid, message.qos)
        except aiomqtt.MqttError as exc:
            log.warning("owntracks mqtt: %s; reconnecting in 2 s", exc)
            await asyncio.sleep(2.0)
