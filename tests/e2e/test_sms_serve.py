"""A real ``bangpae serve`` texting her over SMPP to the test SMSC (docs/sms.md)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from bangpae.domain.notices import TEXTS
from tests.integration.smppserver import Smsc

from .conftest import Server
from .test_serve import seed_case, send

SMPP_PASSWORD = "e2e-pw1"


@pytest.fixture
def smsc() -> Iterator[Smsc]:
    """The test SMSC on its own event loop, in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(Smsc(password=SMPP_PASSWORD).start(), loop).result(10)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def wait_for(
    condition: Callable[[], bool], what: Callable[[], object], within_s: float = 20.0
) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.1)


def test_serve_texts_her_tier_step_over_smpp_and_keeps_the_receipt(
    server: Server, smsc: Smsc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "BANGPAE_SMS_URL", f"smpp://bangpae:{SMPP_PASSWORD}@127.0.0.1:{smsc.port}?source=BANGPAE"
    )
    _staff, victim, _order = seed_case(server)
    r = httpx.put(
        f"{server.api}/api/v1/victim/contact",
        headers=victim,
        json={"phone": "010-1234-5678", "sms": {"enabled": True, "tiers": ["notify", "reveal"]}},
    )
    assert r.status_code == 200, r.text
    wait_for(lambda: smsc.bound == 1, lambda: smsc.binds)
    # live fixes, all after the order began (a notice is for what happens now, and only
    # under an order in force): the first one a moment from now, within the bounds
    t = time.time() + 9
    send(server, "PHONE-1", 0.0, t - 10)
    send(server, "PHONE-1", 0.0, t)
    send(server, "ANKLE-1", 5000, t + 1)
    # within 2 km: the pre-alert; what she is shown follows his 1 km cell on a secret
    # grid (docs/disclosure.md), which may already be near enough to say "nearby"
    send(server, "ANKLE-1", 1500, t + 2)

    def told() -> object:
        return (
            httpx.get(f"{server.api}/api/v1/victim/notices", headers=victim).json(),
            httpx.get(f"{server.api}/api/v1/victim/status", headers=victim).json(),
            smsc.submits,
        )

    wait_for(lambda: len(smsc.texts()) == 1, told)
    [(to, text)] = smsc.texts()
    assert to == "821012345678" and text in (TEXTS["tier_notify"].ko, TEXTS["tier_reveal"].ko)
    assert smsc.submits[0].data_coding == 0x08
    assert not re.search(r"\d", smsc.texts()[0][1])

    def delivered() -> bool:
        told = httpx.get(f"{server.api}/api/v1/victim/notices", headers=victim).json()
        return any(n["sms"] and n["sms"][0]["state"] == "delivered" for n in told)

    wait_for(delivered, told)
    log = (server.data_dir / "serve.log").read_text()
    assert SMPP_PASSWORD not in log and "12345678" not in log
