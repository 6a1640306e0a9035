"""OwnTracks over the real local Mosquitto broker."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from bangpae.adapters.clock import ManualClock
from bangpae.adapters.listeners.owntracks_mqtt import run_owntracks_mqtt
from bangpae.app import build
from bangpae.config import Settings
from tests.conftest import need_service

BROKER = ("127.0.0.1", 1883)


def _broker_up() -> bool:
    try:
        socket.create_connection(BROKER, timeout=1).close()
        return True
    except OSError:
        return False


async def test_a_location_published_to_the_broker_is_stored(tmp_path: Path) -> None:
    if not _broker_up():
        need_service("no MQTT broker on 127.0.0.1:1883")
    import aiomqtt

    clock = ManualClock(time.time())
    ctx = build(Settings(data_dir=tmp_path), clock=clock)
    topic = f"owntracks/kim/phone-{tmp_path.name[-8:]}"
    ctx.store.add_device(topic, "phone", "owntracks", ctx.store.add_person("victim", "K"))
    await ctx.start()
    ready = asyncio.Event()
    task = asyncio.create_task(run_owntracks_mqtt(ctx, "mqtt://127.0.0.1:1883", ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with aiomqtt.Client(*BROKER) as pub:
            for i, topic_used in enumerate((topic, "owntracks/stranger/x")):
                body = {
                    "_type": "location",
                    "lat": 37.5 + i / 1000,
                    "lon": 127.0,
                    "tst": int(clock.now()) - 10 + i,
                    "acc": 9,
                    "tid": "KP",
                }
                await pub.publish(topic_used, json.dumps(body), qos=1)
        deadline = time.monotonic() + 10
        # the broker delivers on its own schedule: poll the store for the effect
        while ctx.store.count_fixes() < 1 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert ctx.store.count_fixes() == 1
        device = ctx.store.get_device(topic)
        (stored,) = ctx.store.fixes_for_device(device.id)
        assert stored.fix.lat == pytest.approx(37.5) and stored.fix.accuracy_m == 9
    finally:
        task.cancel()
        await ctx.stop()
