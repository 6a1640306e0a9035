"""Attacks on her SOS loop and PINs by whoever holds her unlocked phone (docs/sos.md):
what her screens and live link show must not tell a duress PIN from a real one."""

from __future__ import annotations

import asyncio

import pytest

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
    api/streams.py does: woken on the loop, then read in a thread)."""
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


@pytest.mark.xfail(
    strict=True,
    reason="her later SOS press joins the open SOS her duress PIN raised, which stays "
    "hidden: the press answers its sos_id yet her loop never lists it, so she is never "
    "told her call was received (and whoever holds the phone sees an SOS id that is not "
    "in her list). Showing a joined hidden SOS needs its own view from the press on "
    "(steps after the press only, so the earlier duress time stays hidden): a design change",
)
async def test_her_own_sos_after_a_hidden_duress_sos_is_shown_to_her(env: Env) -> None:
    await _pins(env)
    r = await env.api.post("/api/v1/victim/pin/check", json={"pin": "9876"}, headers=env.h["vic"])
    assert r.json() == {"ok": True}
    env.clock.set(T0 + 120)
    iid = await sos(env)
    shown = await loop(env)
    assert [s["id"] for s in shown] == [iid]
    assert shown[0]["at"] == "2027-01-15T08:02:00.000Z"  # from her press, not the duress


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


@pytest.mark.xfail(
    strict=True,
    reason="PUT /victim/pins asks for no current PIN: whoever holds her unlocked phone "
    "clears or replaces her duress PIN (and app PIN) and she is not told, so her next "
    "duress PIN opens the app and calls no one. The fix needs the current PIN on the "
    "route (her duress PIN given there must seem to succeed, change nothing and raise the "
    "silent SOS), the settings screen asking for it, and its texts in both languages",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="GET /victim/pins says duress_pin_set: whoever holds her unlocked phone learns "
    "that she has a duress PIN, and so to doubt any PIN she gives. Hiding it is a design "
    "choice (her settings screen would offer 'set a duress PIN' whether or not one is set)",
)
async def test_her_phone_does_not_say_whether_a_duress_pin_is_set(env: Env) -> None:
    r = await env.api.get("/api/v1/victim/pins", headers=env.h["vic"])
    without = r.content
    await _pins(env)
    r = await env.api.get("/api/v1/victim/pins", headers=env.h["vic"])
    r_app_only = await env.api.put(
        "/api/v1/victim/pins", json={"app_pin": "1234", "duress_pin": None}, headers=env.h["vic"]
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


@pytest.mark.xfail(
    strict=True,
    reason="PUT /victim/contact asks for no PIN and tells no one: whoever holds her "
    "unlocked phone moves her texts to his own number, and from then on is texted "
    "whenever he comes within 2 km of her (docs/sms.md), long after he gave the phone "
    "back, while she gets nothing. The fix (her app PIN on the route, a text to the old "
    "number on a change) touches the contact route, her settings screen and the texts",
)
async def test_her_texts_cannot_be_moved_to_his_number_from_her_phone_without_her_pin(
    env: Env,
) -> None:
    await _pins(env)
    body = {"phone": "010-1234-5678", "sms": {"enabled": True, "tiers": []}, "lang": "ko"}
    r = await env.api.put("/api/v1/victim/contact", json=body, headers=env.h["vic"])
    assert r.status_code == 200, r.text
    his = {**body, "phone": "010-9876-5432"}
    r = await env.api.put("/api/v1/victim/contact", json=his, headers=env.h["vic"])
    assert r.status_code in (401, 403, 422), "her texts now go to the number he gave"
