"""Texts to her phone over SMPP, on the real composition root (docs/sms.md).

Fixes go through the real ingest, the notices follow the real bus, and the texts go
over TCP to the SMSC of ``tests/integration/smppserver.py``, which decodes what it
receives by the specification and sends delivery receipts back.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bangpae.adapters.clock import ManualClock
from bangpae.api.factory import create_app
from bangpae.app import build
from bangpae.config import Settings
from bangpae.domain.model import Order
from bangpae.domain.notices import SMS_TIERS, TEXTS, service_notices
from tests.integration.conftest import signed_in
from tests.integration.smppserver import Smsc
from tests.integration.test_notices import T0, Env

PASSWORD = "secret1"
CONTACT = {"phone": "010-1234-5678", "sms": {"enabled": True, "tiers": ["notify"]}, "lang": "ko"}


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - the SMPP session runs on its own tasks
            await asyncio.sleep(0.02)


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    server = await Smsc(password=PASSWORD).start()
    yield server
    await server.stop()


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def profile() -> str:
    return "kr"


@pytest.fixture
def enquire_s() -> float:
    return 30.0


@pytest.fixture
async def env(
    tmp_path: Path, smsc: Smsc, password: str, profile: str, enquire_s: float
) -> AsyncIterator[Env]:
    clock = ManualClock(T0)
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'bangpae.sqlite'}",
        tick_s=60,
        sms_url=f"smpp://bangpae:{password}@127.0.0.1:{smsc.port}?source=BANGPAE&tls=0",
        sms_reconnect_min_s=0.05,
        sms_retry_base_s=0.05,
        sms_submit_timeout_s=30.0,
        sms_enquire_link_s=enquire_s,
    )
    ctx = build(settings, clock=clock)
    s = ctx.store
    off = s.add_person("offender", "O")
    vic = s.add_person("victim", "V")
    ankle = s.add_device("ANKLE", "ankle_monitor", "osmand", off)
    phone = s.add_device("PHONE", "phone", "osmand", vic)
    order = s.add_order(Order(0, off, vic, profile=profile))
    users = (("sup", "supervisor", None), ("vic", "victim", vic), ("off", "offender", off))
    headers = signed_in(s, ctx.secret, users, T0, ttl_s=36000)
    await ctx.start()
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://test"
    )
    yield Env(ctx, api, clock, headers, order, off, vic, ankle, phone)
    await api.aclose()
    await ctx.stop()


def victim_notices(env: Env) -> list[Any]:
    return env.ctx.store.notices(audience="victim", person_id=env.victim)


def sms_state(env: Env, kind: str) -> str | None:
    texts = [n.sms for n in victim_notices(env) if n.kind == kind and n.sms]
    return texts[-1][-1]["state"] if texts else None


async def test_the_kr_pre_alert_reaches_her_phone_as_ucs2_korean_and_its_receipt_is_kept(
    env: Env, smsc: Smsc
) -> None:
    r = await env.api.put("/api/v1/victim/contact", json=CONTACT, headers=env.headers["vic"])
    assert r.status_code == 200, r.text
    assert r.json()["phone"] == "+821012345678"
    await until(lambda: smsc.bound == 1)
    await env.walk(0, 5000)
    await env.walk(600, 1800)  # within 2 km: notify, the kr pre-alert
    await env.settled()
    await until(lambda: sms_state(env, "tier_notify") == "delivered")

    [submit] = smsc.submits
    assert submit.data_coding == 0x08  # UCS-2
    assert submit.registered_delivery & 0x01  # a receipt asked for
    assert (submit.destination, submit.dest_ton) == ("821012345678", 1)
    assert submit.source == "BANGPAE"
    assert smsc.texts() == [("821012345678", TEXTS["tier_notify"].ko)]
    # nothing that locates him: no digit at all, so no distance, position or time
    assert not re.search(r"\d", smsc.texts()[0][1])

    [notice] = [n for n in victim_notices(env) if n.kind == "tier_notify"]
    [text] = notice.sms
    assert text["state"] == "delivered" and text["attempts"] == 1 and text["parts"] == 1
    assert text["submitted_at"] is not None and text["done_at"] is not None
    assert notice.delivery["sms"] == "delivered"
    row = env.ctx.store.sms(text["id"])
    assert row is not None and row["message_id"] == submit.message_id
    metrics = (await env.api.get("/metrics")).text
    assert "bangpae_sms_receipts_total 1.0" in metrics and "bangpae_sms_bound 1.0" in metrics
    # she reads it too, without the number
    r = await env.api.get("/api/v1/victim/notices", headers=env.headers["vic"])
    sent = [n for n in r.json() if n["kind"] == "tier_notify"]
    assert sent[0]["sms"][0]["state"] == "delivered"
    assert "821012345678" not in r.text and "5678" not in r.text

    # she chose the pre-alert only: the breach goes to her app, not by text
    await env.walk(1000, 50)
    await env.settled()
    breach = [n for n in victim_notices(env) if n.kind == "tier_breach"]
    assert breach and breach[0].delivery["sms"] == "tier not chosen"
    assert len(smsc.submits) == 1


async def test_a_long_korean_text_is_split_with_a_udh_and_reassembled(env: Env, smsc: Smsc) -> None:
    await env.api.put("/api/v1/victim/contact", json=CONTACT, headers=env.headers["vic"])
    await until(lambda: smsc.bound == 1)
    gw = env.ctx.sms
    assert gw is not None
    [notice] = service_notices([env.ctx.store.get_order(env.order)], True, T0)
    long_text = TEXTS["offender_device_down"].ko * 2  # 120 characters: two parts in UCS-2
    assert await gw.send("+821012345678", long_text, notice) == "queued"
    await until(lambda: len(smsc.texts()) == 1)
    assert len(smsc.submits) == 2
    assert all(s.esm_class & 0x40 and s.data_coding == 0x08 for s in smsc.submits)
    assert smsc.texts() == [("821012345678", long_text)]
    # one receipt per part; the text is delivered when the last part is
    [row_id] = [i for i in range(1, 5) if (r := env.ctx.store.sms(i)) and r["parts"] == 2]
    await until(lambda: (env.ctx.store.sms(row_id) or {}).get("state") == "delivered")


async def test_english_goes_in_the_gsm_alphabet(env: Env, smsc: Smsc) -> None:
    body = {**CONTACT, "lang": "en"}
    r = await env.api.put("/api/v1/victim/contact", json=body, headers=env.headers["vic"])
    assert r.status_code == 200
    await until(lambda: smsc.bound == 1)
    n = env.ctx.notifier
    assert n is not None
    [notice] = service_notices([env.ctx.store.get_order(env.order)], True, T0)
    assert await n.send_all([notice]) == 1
    await until(lambda: sms_state(env, "service_degraded") == "delivered")
    [submit] = smsc.submits
    assert submit.data_coding == 0x00
    assert smsc.texts() == [("821012345678", TEXTS["service_degraded"].en)]


async def test_a_tier_flapping_sends_one_text_per_five_minutes(env: Env, smsc: Smsc) -> None:
    body = {**CONTACT, "sms": {"enabled": True, "tiers": ["breach"]}}
    await env.api.put("/api/v1/victim/contact", json=body, headers=env.headers["vic"])
    await until(lambda: smsc.bound == 1)
    walk = [(0, 5000), (600, 50), (700, 1500), (800, 50), (900, 1500), (1000, 50)]
    for t, d in walk:
        await env.walk(t, d)
    await env.walk(1100, 1500)
    await env.walk(1200, 50)  # ten minutes after the first: texted again
    await env.settled()
    breaches = [n for n in victim_notices(env) if n.kind == "tier_breach"]
    assert len(breaches) >= 3, [n.kind for n in victim_notices(env)]
    outcomes = [n.delivery["sms"] for n in breaches]
    texted = [n.at - T0 for n in breaches if n.delivery["sms"] != "capped"]
    assert "capped" in outcomes
    assert all(b - a >= 300 for a, b in zip(texted, texted[1:], strict=False)), texted
    await until(lambda: len(smsc.submits) == len(texted))


async def test_a_dropped_connection_is_bound_again_and_texts_go_on(env: Env, smsc: Smsc) -> None:
    await env.api.put("/api/v1/victim/contact", json=CONTACT, headers=env.headers["vic"])
    await until(lambda: smsc.bound == 1)
    smsc.drop()
    await until(lambda: smsc.bound == 1 and len(smsc.binds) == 2)
    assert [ok for _, ok in smsc.binds] == ["ok", "ok"]
    await env.walk(0, 5000)
    await env.walk(600, 1800)
    await env.settled()
    await until(lambda: sms_state(env, "tier_notify") == "delivered")


@pytest.mark.parametrize("enquire_s", [1.0])
async def test_an_idle_bind_is_kept_alive_with_enquire_link(env: Env, smsc: Smsc) -> None:
    await until(lambda: smsc.bound == 1)
    await until(lambda: smsc.enquire_links >= 2, within_s=8.0)
    assert smsc.bound == 1 and len(smsc.binds) == 1


@pytest.mark.parametrize("password", ["wrong1"])
async def test_a_wrong_bind_password_is_refused_and_the_text_is_recorded_as_failed(
    env: Env, smsc: Smsc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await env.api.put("/api/v1/victim/contact", json=CONTACT, headers=env.headers["vic"])
    await until(lambda: len(smsc.binds) >= 2)  # refused, and tried again after a backoff
    assert {ok for _, ok in smsc.binds} == {"refused"}
    await env.walk(0, 5000)
    await env.walk(600, 1800)
    await env.settled()
    assert sms_state(env, "tier_notify") == "queued"
    gw = env.ctx.sms
    assert gw is not None
    # no SMSC answers: each attempt times out, then the text is given up, and recorded
    for _ in range(env.ctx.settings.sms_max_attempts):
        env.clock.set(env.clock.now() + 31)
        await asyncio.sleep(1.5)
    await until(lambda: sms_state(env, "tier_notify") == "failed")
    [notice] = [n for n in victim_notices(env) if n.kind == "tier_notify"]
    assert notice.sms[0]["attempts"] == env.ctx.settings.sms_max_attempts
    assert notice.delivery["sms"] == "failed"
    assert smsc.submits == []
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "ESME_RINVPASWD" in log
    assert "wrong1" not in log and "821012345678" not in log


async def test_refused_submits_are_retried_a_bounded_number_of_times(env: Env, smsc: Smsc) -> None:
    from aiosmpplib import SmppCommandStatus

    smsc.submit_status = SmppCommandStatus.ESME_RSYSERR
    await env.api.put("/api/v1/victim/contact", json=CONTACT, headers=env.headers["vic"])
    await until(lambda: smsc.bound == 1)
    await env.walk(0, 5000)
    await env.walk(600, 1800)
    await env.settled()
    await until(lambda: sms_state(env, "tier_notify") == "failed")
    [notice] = [n for n in victim_notices(env) if n.kind == "tier_notify"]
    assert notice.sms[0]["attempts"] == 3
    assert "ESME_RSYSERR" in notice.sms[0]["error"]


async def test_a_receipt_after_a_restart_is_matched_by_the_stored_message_id(
    env: Env, smsc: Smsc
) -> None:
    from bangpae.adapters.sms import SmppGateway, parse_sms_url

    smsc.hold_receipts = True
    await env.api.put("/api/v1/victim/contact", json=CONTACT, headers=env.headers["vic"])
    await until(lambda: smsc.bound == 1)
    await env.walk(0, 5000)
    await env.walk(600, 1800)
    await env.settled()
    await until(lambda: sms_state(env, "tier_notify") == "submitted")
    old = env.ctx.sms
    assert old is not None
    await old.stop()  # the process that sent it is gone, and its correlator with it
    await until(lambda: smsc.bound == 0)
    settings = env.ctx.settings
    assert settings.sms_url is not None
    config = parse_sms_url(settings.sms_url.get_secret_value())
    new = SmppGateway(config, env.ctx.store, env.clock, reconnect_min_s=0.05)
    await new.start()
    try:
        await until(lambda: smsc.bound == 1)
        smsc.release()
        await until(lambda: sms_state(env, "tier_notify") == "delivered")
        assert new.stats.receipts == 1
    finally:
        await new.stop()


async def test_an_undeliverable_receipt_is_kept_as_such(env: Env, smsc: Smsc) -> None:
    smsc.receipt_stat = "UNDELIV"
    await env.api.put("/api/v1/victim/contact", json=CONTACT, headers=env.headers["vic"])
    await until(lambda: smsc.bound == 1)
    await env.walk(0, 5000)
    await env.walk(600, 1800)
    await env.settled()
    await until(lambda: sms_state(env, "tier_notify") == "undeliverable")


@pytest.mark.parametrize("profile", ["es"])
async def test_outside_korea_the_pre_alert_is_not_texted_by_default(env: Env, smsc: Smsc) -> None:
    r = await env.api.put(
        f"/api/v1/people/{env.victim}/contact",
        json={"phone": "+821012345678", "sms": {"enabled": True, "tiers": []}, "lang": "ko"},
        headers=env.headers["sup"],
    )
    assert r.status_code == 200, r.text
    # back to the defaults: stored choices removed by the store directly
    env.ctx.store.set_contact(env.victim, "+821012345678", None)
    r = await env.api.get("/api/v1/victim/contact", headers=env.headers["vic"])
    assert r.json()["sms"] == {"enabled": True, "tiers": ["reveal", "breach", "uncertain"]}
    await env.walk(0, 5000)
    await env.walk(600, 1800)
    await env.settled()
    [notice] = [n for n in victim_notices(env) if n.kind == "tier_notify"]
    assert notice.delivery["sms"] == "tier not chosen"


# -- her contact: the API, the audit, the command line -------------------------------------------


@pytest.mark.parametrize(
    ("phone", "stored"),
    [
        ("010-1234-5678", "+821012345678"),
        ("+82 10 1234 5678", "+821012345678"),
        ("+44 20 7946 0958", "+442079460958"),
        (None, None),
    ],
)
async def test_her_number_is_kept_in_e164(env: Env, phone: str | None, stored: str | None) -> None:
    body = {**CONTACT, "phone": phone}
    r = await env.api.put("/api/v1/victim/contact", json=body, headers=env.headers["vic"])
    assert r.status_code == 200, r.text
    assert r.json() == {
        "phone": stored,
        "sms": {"enabled": True, "tiers": ["notify"]},
        "lang": "ko",
    }
    r = await env.api.get("/api/v1/victim/contact", headers=env.headers["vic"])
    assert r.json()["phone"] == stored


@pytest.mark.parametrize(
    "body",
    [
        {**CONTACT, "phone": "12345"},
        {**CONTACT, "phone": "010-1234"},
        {**CONTACT, "phone": "not a number"},
        {**CONTACT, "phone": "+82" + "1" * 40},
        {**CONTACT, "sms": {"enabled": True, "tiers": ["clear"]}},
        {**CONTACT, "lang": "fr"},
        {**CONTACT, "extra": 1},
        {"phone": "010-1234-5678"},
    ],
)
async def test_a_bad_contact_is_refused_with_422(env: Env, body: dict[str, Any]) -> None:
    r = await env.api.put("/api/v1/victim/contact", json=body, headers=env.headers["vic"])
    assert r.status_code == 422, r.text
    assert env.ctx.store.contact(env.victim).phone is None


async def test_before_she_chooses_the_kr_profile_texts_every_tier(env: Env) -> None:
    r = await env.api.get("/api/v1/victim/contact", headers=env.headers["vic"])
    assert r.json() == {
        "phone": None,
        "sms": {"enabled": True, "tiers": ["notify", "reveal", "breach", "uncertain"]},
        "lang": "ko",
    }


async def test_the_number_is_sealed_and_changes_are_audited_without_it(env: Env) -> None:
    r = await env.api.put("/api/v1/victim/contact", json=CONTACT, headers=env.headers["vic"])
    assert r.status_code == 200
    body = {**CONTACT, "sms": {"enabled": False, "tiers": []}, "phone": "+821087654321"}
    r = await env.api.put(
        f"/api/v1/people/{env.victim}/contact", json=body, headers=env.headers["sup"]
    )
    assert r.status_code == 200 and r.json()["sms"]["enabled"] is False
    r = await env.api.get(
        f"/api/v1/people/{env.victim}/contact?purpose=victim_safety", headers=env.headers["sup"]
    )
    assert r.json()["phone"] == "+821087654321"
    records = env.ctx.store.audit_records(subject=f"person:{env.victim}")
    assert [(a["action"], a["role"], a["purpose"]) for a in records] == [
        ("contact.set", "victim", "victim_safety"),
        ("contact.set", "supervisor", "administration"),
        ("contact.read", "supervisor", "victim_safety"),
    ]
    assert records[0]["fields"][0] == "phone"
    dump = repr(records)
    assert "1234" not in dump and "4321" not in dump
    import sqlite3

    with sqlite3.connect(env.ctx.settings.data_dir / "bangpae.sqlite") as c:
        [(raw,)] = c.execute("SELECT phone FROM people WHERE id = ?", (env.victim,)).fetchall()
    assert "4321" not in raw  # sealed at rest


async def test_staff_read_of_a_number_needs_a_purpose_and_the_offender_has_no_contact(
    env: Env,
) -> None:
    r = await env.api.get(f"/api/v1/people/{env.victim}/contact", headers=env.headers["sup"])
    assert r.status_code == 422
    r = await env.api.get(
        f"/api/v1/people/{env.offender}/contact?purpose=administration",
        headers=env.headers["sup"],
    )
    assert r.status_code == 404
    r = await env.api.put(
        f"/api/v1/people/{env.offender}/contact", json=CONTACT, headers=env.headers["sup"]
    )
    assert r.status_code == 422
    for who in ("off", "vic"):
        r = await env.api.get(
            f"/api/v1/people/{env.victim}/contact?purpose=administration",
            headers=env.headers[who],
        )
        assert r.status_code == 403
    r = await env.api.get("/api/v1/victim/contact", headers=env.headers["off"])
    assert r.status_code == 403


def test_the_command_line_sets_her_contact_and_audits_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bangpae.app import open_store
    from bangpae.cli import main

    settings = Settings(data_dir=tmp_path)
    store = open_store(settings, create=True)
    off = store.add_person("offender", "O")
    vic = store.add_person("victim", "V")
    store.add_order(Order(0, off, vic, profile="kr"))
    store.close()
    base = ["set-contact", "--data-dir", str(tmp_path)]
    assert main([*base, "--person", str(vic), "--phone", "010-1234-5678", "--sms", "off"]) == 0
    assert "5678" not in capsys.readouterr().out
    assert main([*base, "--person", str(vic), "--phone", "12345"]) == 2
    assert main([*base, "--person", str(off), "--phone", "010-1234-5678"]) == 1
    store = open_store(settings, create=False)
    try:
        c = store.contact(vic)
        assert c is not None and c.phone == "+821012345678"
        assert c.sms_prefs == {"enabled": False, "tiers": list(SMS_TIERS), "lang": "ko"}
        [record] = store.audit_records(subject=f"person:{vic}")
        assert (record["actor"], record["action"]) == ("cli", "contact.set")
        assert "5678" not in repr(record)
    finally:
        store.close()
