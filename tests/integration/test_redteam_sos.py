"""Attacks on her SOS loop and PINs by whoever holds her unlocked phone (docs/sos.md):
what her screens and live link show must not tell a duress PIN from a real one."""

from __future__ import annotations

import asyncio

from bangpae.services import sos as sos_service
from bangpae.services.auth import Principal
from tests.integration import test_sos_loop
from tests.integration.test_sos_loop import T0, Env, act, loop, sos

env = test_sos_loop.env  # the same composition root, SQLite and PostgreSQL

PINS = {"app_pin": "1234", "duress_pin": "9876"}


async def _pins(env: Env) -> None:
    r = await env.api.put("/api/v1/victim/pins", json=PINS, headers=env.h["vic"])
    assert r.status_code == 204, r.text


def _her_link(env: Env) -> list[asyncio.Task[list[dict]]]:
    """What her live link reads each time the store says one of her SOS moved (as
    api/routes/streams.py does: woken on the loop, then read in a thread)."""
    reads: list[asyncio.Task[list[dict]]] = []
    her = Principal(2, "vic", "victim", env.vic)

    def woke() -> None:
        now = env.ctx.clock.now()
        reads.append(
            asyncio.create_task(asyncio.to_thread(sos_service.victim_sos, env.ctx.store, her, now))
        )

    env.ctx.sos.listen(env.vic, woke)
    return reads


async def test_a_duress_pin_at_the_app_lock_never_flashes_an_sos_on_her_live_link(
    env: Env,
) -> None:
    await _pins(env)
    reads = _her_link(env)
    r = await env.api.post("/api/v1/victim/pin/check", json={"pin": "9876"}, headers=env.h["vic"])
    assert r.json() == {"ok": True}
    [raised] = env.ctx.store.incidents(status="open")
    assert env.ctx.store.get_incident(raised.id).duress
    shown = [s for s in await asyncio.gather(*reads) if s]
    # whoever made her open the app sees the link's SOS list: not one frame may name it
    assert shown == [], f"her link showed the duress SOS {len(shown)} time(s): {shown}"
    assert await loop(env) == []


async def test_a_duress_cancel_of_a_closed_sos_changes_nothing_she_sees_of_her_open_one(
    env: Env,
) -> None:
    """A real cancel of a closed SOS changes nothing; the duress one must not either."""
    await _pins(env)
    closed = await sos(env)
    await act(env, closed, "resolve", note="she is fine")
    env.clock.set(T0 + 60)
    opened = await sos(env)
    r = await env.api.post(
        f"/api/v1/victim/sos/{closed}/cancel", json={"pin": "1234"}, headers=env.h["vic"]
    )
    assert r.json() == {"cancelled": True}
    after_real = await loop(env)
    env.clock.set(T0 + 120)
    r = await env.api.post(
        f"/api/v1/victim/sos/{closed}/cancel", json={"pin": "9876"}, headers=env.h["vic"]
    )
    assert r.json() == {"cancelled": True}
    assert env.ctx.store.get_incident(opened).duress  # the operators are told
    after_duress = await loop(env)
    assert [(s["id"], s["cancelled"]) for s in after_duress] == [
        (s["id"], s["cancelled"]) for s in after_real
    ], "her open SOS turned 'cancelled' only after the duress PIN"


async def test_her_duress_pin_still_calls_for_help_after_he_locked_the_app_out(env: Env) -> None:
    """He tries five PINs; then she is made to give one: her duress PIN must still raise
    the silent SOS (the answer stays the lockout's, whichever PIN it was)."""
    await _pins(env)
    check = "/api/v1/victim/pin/check"
    for guess in ("0000", "1111", "2222", "3333", "4444"):
        r = await env.api.post(check, json={"pin": guess}, headers=env.h["vic"])
        assert r.json() == {"ok": False}
    r_real = await env.api.post(check, json={"pin": "1234"}, headers=env.h["vic"])
    r_duress = await env.api.post(check, json={"pin": "9876"}, headers=env.h["vic"])
    assert r_real.status_code == r_duress.status_code == 429
    assert r_real.content == r_duress.content
    raised = env.ctx.store.incidents(status="open")
    assert len(raised) == 1, "her duress PIN was refused unread: no one was called"
    assert env.ctx.store.get_incident(raised[0].id).duress
    assert await loop(env) == []


async def test_her_hidden_duress_sos_cannot_be_found_by_trying_ids_on_her_phone(
    env: Env,
) -> None:
    """He holds her phone after she opened it with her duress PIN. SOS ids are small
    integers: he tries each on her routes. An id that answers as hers but is missing
    from her list is the hidden SOS, i.e. proof that she gave the duress PIN."""
    await _pins(env)
    r = await env.api.post("/api/v1/victim/pin/check", json={"pin": "9876"}, headers=env.h["vic"])
    assert r.json() == {"ok": True}
    assert await loop(env) == []
    learned = []
    for iid in range(1, 6):  # every id up to past the newest
        cancel = await env.api.post(
            f"/api/v1/victim/sos/{iid}/cancel", json={"pin": None}, headers=env.h["vic"]
        )
        upload = await env.api.post(
            f"/api/v1/victim/sos/{iid}/evidence", content=b"not audio", headers=env.h["vic"]
        )
        if cancel.status_code != 404 or upload.status_code != 404:
            learned.append((iid, cancel.status_code, upload.status_code))
    assert learned == [], f"ids that answer as hers though her list is empty: {learned}"
    [raised] = env.ctx.store.incidents(status="open")
    actions = [e["action"] for e in env.ctx.store.get_incident(raised.id).timeline]
    assert "victim_cancel" not in actions, "he 'cancelled' her hidden call for help"


async def test_her_own_sos_after_a_hidden_duress_sos_is_shown_to_her(env: Env) -> None:
    await _pins(env)
    r = await env.api.post("/api/v1/victim/pin/check", json={"pin": "9876"}, headers=env.h["vic"])
    assert r.json() == {"ok": True}
    env.clock.set(T0 + 120)
    iid = await sos(env)
    shown = await loop(env)
    assert [s["id"] for s in shown] == [iid]
    assert shown[0]["at"] == "2027-01-15T08:02:00.000Z"  # from her press, not the duress
    assert [s["state"] for s in shown[0]["steps"]] == ["received"]
    assert shown[0]["silent"] is False  # hers was not silent; the duress SOS was
    # from now on her routes answer for it: she may say she is safe, as after any press
    r = await env.api.post(
        f"/api/v1/victim/sos/{iid}/cancel", json={"pin": "1234"}, headers=env.h["vic"]
    )
    assert r.json() == {"cancelled": True}


async def test_a_burst_of_concurrent_pin_guesses_gets_no_more_than_five_checked(env: Env) -> None:
    """The limit is checked before the (slow) argon2 check and counted after it: guesses
    sent at once all pass the check. Measured: how many PINs were actually tried."""
    await _pins(env)
    guesses = [f"{n:04d}" for n in range(5000, 5009)]  # the password pool's 9 slots
    answers = await asyncio.gather(
        *(
            env.api.post("/api/v1/victim/pin/check", json={"pin": g}, headers=env.h["vic"])
            for g in guesses
        )
    )
    tried = sum(r.status_code == 200 for r in answers)
    assert tried <= 5, f"{tried} PINs tried in one window (limit 5)"


async def test_her_duress_pin_cannot_be_cleared_from_her_phone_without_her_pin(
    env: Env,
) -> None:
    await _pins(env)
    r = await env.api.put(
        "/api/v1/victim/pins", json={"app_pin": "1111", "duress_pin": None}, headers=env.h["vic"]
    )
    assert r.status_code in (401, 403, 422), "her PINs were changed by whoever held the phone"
    r = await env.api.post("/api/v1/victim/pin/check", json={"pin": "9876"}, headers=env.h["vic"])
    assert r.json() == {"ok": True}
    assert len(env.ctx.store.incidents(status="open")) == 1  # her duress PIN still calls


async def test_pin_changes_need_her_app_pin_and_her_duress_pin_there_calls_for_help(
    env: Env,
) -> None:
    """He makes her give a PIN to change her PINs. A wrong one is refused and counted
    with the lock's; her duress PIN makes the change as her app PIN would (what he reads
    back must not differ) and calls for help unseen."""
    await _pins(env)
    pins = "/api/v1/victim/pins"
    change = {"app_pin": "5555"}
    r = await env.api.put(pins, json={**change, "current_pin": "0000"}, headers=env.h["vic"])
    assert r.status_code == 403
    r = await env.api.put(pins, json=change, headers=env.h["vic"])
    assert r.status_code == 403
    assert env.ctx.store.incidents(status="open") == []
    r_duress = await env.api.put(pins, json={**change, "current_pin": "9876"}, headers=env.h["vic"])
    assert r_duress.status_code == 204 and r_duress.content == b""
    [raised] = env.ctx.store.incidents(status="open")
    record = env.ctx.store.get_incident(raised.id)
    assert record.duress and record.priority == "critical"
    assert [e["data"]["source"] for e in record.timeline if e["action"] == "duress"] == ["settings"]
    assert await loop(env) == []  # nothing of it on her phone
    check = "/api/v1/victim/pin/check"
    r = await env.api.post(check, json={"pin": "5555"}, headers=env.h["vic"])
    assert r.json() == {"ok": True}  # his new PIN opens the app, as he expects
    for old in ("1234", "9876"):  # as after any change of PIN, the old ones do not
        r = await env.api.post(check, json={"pin": old}, headers=env.h["vic"])
        assert r.json() == {"ok": False}


async def test_a_new_app_pin_cannot_be_used_to_find_her_duress_pin(env: Env) -> None:
    """With her app PIN he tries new app PINs, hoping one is refused as her duress PIN.
    Every answer is the same: a new app PIN equal to her duress PIN is taken, and that
    PIN is then her app PIN only. Measured: what the answers tell apart."""
    await _pins(env)
    pins = "/api/v1/victim/pins"
    current, answers = "1234", {}
    for guess in ("9875", "9876", "9877"):
        r = await env.api.put(
            pins, json={"current_pin": current, "app_pin": guess}, headers=env.h["vic"]
        )
        answers[guess] = (r.status_code, r.content)
        current = guess
    assert len(set(answers.values())) == 1, answers
    assert answers["9876"] == (204, b"")
    assert env.ctx.store.incidents(status="open") == []  # her duress PIN was never given
    assert env.ctx.store.pins(2)[1] is None  # 9876 became an app PIN, then was replaced


async def test_her_duress_pin_on_her_contact_keeps_her_number_and_answers_as_a_change(
    env: Env,
) -> None:
    await _pins(env)
    contact = "/api/v1/victim/contact"
    body = {"phone": "010-1234-5678", "sms": {"enabled": True, "tiers": []}, "lang": "ko"}
    r = await env.api.put(contact, json={**body, "pin": "1234"}, headers=env.h["vic"])
    assert r.status_code == 200, r.text
    his = {**body, "phone": "010-9876-5432", "sms": {"enabled": False, "tiers": []}}
    r_duress = await env.api.put(contact, json={**his, "pin": "9876"}, headers=env.h["vic"])
    assert r_duress.status_code == 200
    assert r_duress.json()["phone"] == "+821098765432"  # what he asked, as if it were done
    kept = env.ctx.store.contact(env.vic)
    # her number stays; her choices follow his (a text he turned off arriving would tell)
    assert kept.phone == "+821012345678" and kept.sms_prefs["enabled"] is False
    [raised] = env.ctx.store.incidents(status="open")
    assert env.ctx.store.get_incident(raised.id).duress
    assert await loop(env) == []
    # her phone reads back what he asked; her texts still go to her own number
    shown = await env.api.get(contact, headers=env.h["vic"])
    assert shown.content == r_duress.content
    assert env.ctx.store.contacts([env.vic])[env.vic].phone == "+821012345678"
    staff = await env.api.get(
        f"/api/v1/people/{env.vic}/contact",
        params={"purpose": "victim_safety"},
        headers=env.h["op"],
    )
    assert staff.status_code in (200, 403)  # staff, where allowed, see where texts go
    if staff.status_code == 200:
        assert staff.json()["phone"] == "+821012345678"
    r_real = await env.api.put(contact, json={**his, "pin": "1234"}, headers=env.h["vic"])
    assert r_real.content == r_duress.content  # the same bytes as a change made
    assert env.ctx.store.contact(env.vic).phone == "+821098765432"
    assert "shown" not in (env.ctx.store.contact(env.vic).sms_prefs or {})


async def test_her_phone_does_not_say_whether_a_duress_pin_is_set(env: Env) -> None:
    r = await env.api.get("/api/v1/victim/pins", headers=env.h["vic"])
    without = r.content
    await _pins(env)
    r = await env.api.get("/api/v1/victim/pins", headers=env.h["vic"])
    r_app_only = await env.api.put(
        "/api/v1/victim/pins",
        json={"current_pin": "1234", "app_pin": "1234", "duress_pin": None},
        headers=env.h["vic"],
    )
    assert r_app_only.status_code == 204
    app_only = (await env.api.get("/api/v1/victim/pins", headers=env.h["vic"])).content
    assert r.content == app_only, f"{r.content!r} != {app_only!r} (unset: {without!r})"


def _looks(view: dict) -> tuple:
    return (view["state"], [s["state"] for s in view["steps"]], view["eta_min"], view["cancelled"])


async def test_what_follows_a_cancel_on_her_screen_is_the_same_for_her_duress_pin(
    env: Env,
) -> None:
    """He makes her cancel, then watches her SOS screen. After her duress PIN the
    operators send an officer (do not call back); after a real cancel they call her to
    verify. Her screen must not turn to 'officer assigned, 2 min' only in the first case."""
    await _pins(env)
    looks = {}
    for pin, t in (("1234", 0), ("9876", 1000)):
        env.clock.set(T0 + t)
        iid = await sos(env)
        await act(env, iid, "acknowledge")
        r = await env.api.post(
            f"/api/v1/victim/sos/{iid}/cancel", json={"pin": pin}, headers=env.h["vic"]
        )
        assert r.json() == {"cancelled": True}
        [after_cancel] = [s for s in await loop(env) if s["id"] == iid]
        env.clock.set(T0 + t + 30)
        if env.ctx.store.get_incident(iid).duress:  # what the operators do
            await act(env, iid, "dispatch", officer_id=env.officer, note="do not call her")
        [watched] = [s for s in await loop(env) if s["id"] == iid]
        looks[pin] = (_looks(after_cancel), _looks(watched))
        env.clock.set(T0 + t + 60)
        await act(env, iid, "resolve")
    assert looks["1234"] == looks["9876"], looks


async def test_her_texts_cannot_be_moved_to_his_number_from_her_phone_without_her_pin(
    env: Env,
) -> None:
    await _pins(env)
    body = {"phone": "010-1234-5678", "sms": {"enabled": True, "tiers": []}, "lang": "ko"}
    r = await env.api.put(
        "/api/v1/victim/contact", json={**body, "pin": "1234"}, headers=env.h["vic"]
    )
    assert r.status_code == 200, r.text
    his = {**body, "phone": "010-9876-5432"}
    r = await env.api.put("/api/v1/victim/contact", json=his, headers=env.h["vic"])
    assert r.status_code in (401, 403, 422), "her texts now go to the number he gave"
    r = await env.api.put(
        "/api/v1/victim/contact", json={**his, "pin": "0000"}, headers=env.h["vic"]
    )
    assert r.status_code == 403
    assert env.ctx.store.contact(env.vic).phone == "+821012345678"
