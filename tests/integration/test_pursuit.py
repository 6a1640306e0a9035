"""Pursuit mode: within the notify radius her app is asked to report every 15 s.

Her app's authenticated stream is the only thing pursuit mode reaches. His
devices, and every tracker (hers included: a tracker's identity is a printed
number anyone may log in as), are told one fixed interval at login and nothing
after it (tests/integration/test_tracker_silence.py compares the bytes).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bangpae.adapters.clock import ManualClock
from bangpae.app import build
from bangpae.config import Settings
from bangpae.domain.model import Fix, Order, Tier
from bangpae.domain.pursuit import TRACKER_INTERVAL_S, report_interval_s

from .trackers import HOME, Client, at, serve, stop, until


def test_the_interval_is_fast_whenever_any_order_is_near() -> None:
    assert report_interval_s([Tier.CLEAR]) == 60
    assert report_interval_s([Tier.CLEAR, Tier.NOTIFY]) == 15
    assert report_interval_s([Tier.UNCERTAIN]) == 15
    assert TRACKER_INTERVAL_S == 15  # a tracker reports as fast as pursuit mode, always


@pytest.mark.parametrize("workers", [0, 1], ids=["main-process", "intake-worker"])
async def test_her_app_goes_fast_while_he_is_near_and_his_h02_tracker_hears_one_fixed_command(
    tmp_path: Path, workers: int
) -> None:
    """Her interval follows the tier; his tracker is told 15 s at login, and nothing after."""
    now = time.time()
    ctx = build(Settings(data_dir=tmp_path), clock=ManualClock(now))
    s = ctx.store
    off, vic = s.add_person("offender", "O"), s.add_person("victim", "V")
    ankle = s.add_device("4209951296", "ankle_monitor", "h02", off)
    phone = s.add_device("PHONE", "phone", "osmand", vic)
    s.add_order(Order(0, off, vic))
    await ctx.start()
    port, server = await serve(ctx, "h02", workers)
    try:
        c = await Client.open("h02", port)
        await ctx.ingest.submit([Fix(phone, now - 10, *HOME, 5.0)])
        await c.login("4209951296", *at(5000), now - 9)
        await until(lambda: b",22,15#" in c.data)  # after its first frame was acknowledged
        assert c.data.count(b"#") == 2 and c.data.index(b",V4,V1,") < c.data.index(b",S71,")
        await c.position("4209951296", *at(1500), now - 8)  # notify: her app goes fast
        await until(lambda: ctx.commands.desired.get(phone) == 15)
        await c.position("4209951296", *at(4000), now - 7)  # clear again: back to normal
        await until(lambda: ctx.commands.desired.get(phone) == 60)
        await asyncio.sleep(0.2)
        # his tracker: the fixed command once, then only the replies to its own frames
        assert c.data.count(b",S71,") == 1 and c.data.count(b",V4,V1,") == 3
        assert ankle not in ctx.commands.desired  # nothing is ever computed for his devices
        await c.close()
    finally:
        await stop(server)
        await ctx.stop()
