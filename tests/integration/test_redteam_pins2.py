"""More attacks on her PINs, her texts and her hidden SOS by whoever holds her unlocked,
signed-in phone (docs/sos.md "The duress PIN" and "PINs", docs/sms.md "Her number and her
choices"). He reads every answer, its status, its bytes and how long it took, and may send
as many requests as he likes. Each test measures what he learns: which PIN she gave him,
whether she has a duress PIN, whether a hidden SOS is open, and at what cost.

Her app PIN is 1234 and her duress PIN 9876 unless a test says otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bangpae.services import sos as sos_service
from tests.integration import test_sos_loop
from tests.integration.test_redteam_sos import PINS, _pins
from tests.integration.test_sos_loop import T0, Env, act, fix, loop

env = test_sos_loop.env  # the same composition root, SQLite and PostgreSQL

PINS_URL = "/api/v1/victim/pins"
CHECK_URL = "/api/v1/victim/pin/check"
CONTACT_URL = "/api/v1/victim/contact"
APP, DURESS = PINS["app_pin"], PINS["duress_pin"]
VIC_USER = 2  # the user id of "vic" (tests/integration/test_sos_loop.py)
HER_SMS: dict[str, Any] = {"enabled": True, "tiers": ["breach"], "lang": "ko"}
HERS = {"phone": "010-1234-5678", "sms": {"enabled": True, "tiers": ["breach"]}, "lang": "ko"}
HIS = {"phone": "010-9876-5432", "sms": {"enabled": False, "tiers": []}, "lang": "ko"}
ARGON2_S = 0.4  # one argon2id operation in production (services/passwords.py)
STEP_S = 310.0  # past the wrong-PIN window, well within her token's hour

Probe = Callable[[Env, str], Awaitable[tuple[Any, ...]]]


def _fresh(env: Env, t: float) -> None:
    """Her PINs and contact as before any probe, and the wrong-PIN window long past."""
    env.clock.set(t)
    env.ctx.store.set_pins(VIC_USER, *sos_service.pin_hashes(APP, DURESS))
    env.ctx.store.set_contact(env.vic, "+821012345678", HER_SMS)


async def _given(env: Env, probes: dict[str, Probe]) -> dict[str, dict[str, tuple[Any, ...]]]:
    """What each probe shows him when the PIN she gave him was her app PIN, and when it
    was her duress PIN: {probe: {pin: what he sees}}."""
    seen: dict[str, dict[str, tuple[Any, ...]]] = {}
    t = T0
    for name, probe in probes.items():
        for pin in (APP, DURESS):
            t += STEP_S
            _fresh(env, t)
            seen.setdefault(name, {})[pin] = await probe(env, pin)
    return seen


def _tells(seen: dict[str, dict[str, tuple[Any, ...]]]) -> dict[str, dict[str, tuple[Any, ...]]]:
    return {name: by_pin for name, by_pin in seen.items() if by_pin[APP] != by_pin[DURESS]}


async def _put_pins(env: Env, body: dict[str, Any]) -> tuple[int, bytes]:
    r = await env.api.put(PINS_URL, json=body, headers=env.h["vic"])
    return r.status_code, r.content


async def _check(env: Env, pin: str) -> Any:
    r = await env.api.post(CHECK_URL, json={"pin": pin}, headers=env.h["vic"])
    return r.status_code, r.json()


# -- which PIN she gave him --------------------------------------------------------------------


async def _duress_pin_as_itself(env: Env, pin: str) -> tuple[Any, ...]:
    return await _put_pins(env, {"current_pin": pin, "duress_pin": pin})


async def _clear_app_pin_only(env: Env, pin: str) -> tuple[Any, ...]:
    return await _put_pins(env, {"current_pin": pin, "app_pin": None})


async def test_one_pin_change_tells_him_whether_she_gave_her_duress_pin(env: Env) -> None:
    """She opened the app for him with a PIN. He asks for a change that her app PIN must
    refuse and that her duress PIN, which 'answers as her app PIN would', accepts."""
    seen = await _given(
        env,
        {
            "duress_pin = the PIN she gave": _duress_pin_as_itself,
            "app_pin: null, duress PIN kept": _clear_app_pin_only,
        },
    )
    told = _tells(seen)
    assert told == {}, f"answers that differ by the PIN she gave ({len(told)} of 2): {told}"


async def _clear_both_then_read(env: Env, pin: str) -> tuple[Any, ...]:
    put = await _put_pins(env, {"current_pin": pin, "app_pin": None, "duress_pin": None})
    r = await env.api.get(PINS_URL, headers=env.h["vic"])
    return put, r.json()


async def _set_duress_then_open_with_it(env: Env, pin: str) -> tuple[Any, ...]:
    put = await _put_pins(env, {"current_pin": pin, "duress_pin": "5555"})
    return put, await _check(env, "5555")


async def _set_app_then_open_with_the_old(env: Env, pin: str) -> tuple[Any, ...]:
    put = await _put_pins(env, {"current_pin": pin, "app_pin": "4444"})
    return put, await _check(env, "4444"), await _check(env, pin)


async def test_what_her_phone_reads_back_after_a_pin_change_tells_her_duress_pin(
    env: Env,
) -> None:
    seen = await _given(
        env,
        {
            "clear both, then GET /victim/pins": _clear_both_then_read,
            "duress_pin 5555, then open with 5555": _set_duress_then_open_with_it,
            "app_pin 4444, then open with the old PIN": _set_app_then_open_with_the_old,
        },
    )
    told = _tells(seen)
    assert told == {}, f"read-backs that differ by the PIN she gave ({len(told)} of 3): {told}"


async def _move_texts_then_read(env: Env, pin: str) -> tuple[Any, ...]:
    put = await env.api.put(CONTACT_URL, json={**HIS, "pin": pin}, headers=env.h["vic"])
    got = await env.api.get(CONTACT_URL, headers=env.h["vic"])
    return put.status_code, put.content, got.content


async def test_her_contact_read_back_after_a_change_tells_her_duress_pin(env: Env) -> None:
    seen = await _given(env, {"move her texts, then GET /victim/contact": _move_texts_then_read})
    told = _tells(seen)
    assert told == {}, f"what he reads back differs by the PIN she gave: {told}"


# -- whether she has a duress PIN at all (he knows her app PIN) --------------------------------


async def test_clearing_her_app_pin_says_whether_she_has_a_duress_pin(env: Env) -> None:
    answers = {}
    for has_duress in (False, True):
        env.clock.set(T0 + STEP_S * has_duress)
        hashes = sos_service.pin_hashes(APP, DURESS if has_duress else None)
        env.ctx.store.set_pins(VIC_USER, *hashes)
        answers[has_duress] = await _put_pins(env, {"current_pin": APP, "app_pin": None})
    assert answers[False] == answers[True], answers


def _count_argon2(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each argon2id operation the PIN routes do, in order."""
    ops: list[str] = []
    verify, hash_ = sos_service.verify_password, sos_service.hash_password

    def counted_verify(h: str | None, p: str) -> bool:
        ops.append("verify")
        return bool(verify(h, p))

    def counted_hash(p: str) -> str:
        ops.append("hash")
        return str(hash_(p))

    monkeypatch.setattr(sos_service, "verify_password", counted_verify)
    monkeypatch.setattr(sos_service, "hash_password", counted_hash)
    return ops


async def test_a_pin_change_takes_as_long_whatever_is_secret(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = _count_argon2(monkeypatch)
    cost: dict[str, tuple[int, float]] = {}

    async def measured(name: str, body: dict[str, Any]) -> None:
        ops.clear()
        t = time.perf_counter()
        status, _ = await _put_pins(env, body)
        assert status == 204, (name, status)
        cost[name] = (len(ops), round(time.perf_counter() - t, 3))

    for has_duress in (False, True):
        env.clock.set(T0 + STEP_S * has_duress)
        hashes = sos_service.pin_hashes(APP, DURESS if has_duress else None)
        env.ctx.store.set_pins(VIC_USER, *hashes)
        await measured(
            f"new app PIN, duress PIN set={has_duress}", {"current_pin": APP, "app_pin": "5555"}
        )
    for i, pin in enumerate((APP, DURESS)):
        _fresh(env, T0 + STEP_S * (2 + i))
        await measured(
            f"both, given {pin}", {"current_pin": pin, "app_pin": "4444", "duress_pin": "3333"}
        )
    ops_only = {name: n for name, (n, _) in cost.items()}
    leaks = {
        "duress PIN set": ops_only["new app PIN, duress PIN set=False"]
        != ops_only["new app PIN, duress PIN set=True"],
        "which PIN she gave": ops_only[f"both, given {APP}"] != ops_only[f"both, given {DURESS}"],
    }
    extra_s = {
        "duress PIN set": ARGON2_S
        * abs(
            ops_only["new app PIN, duress PIN set=True"]
            - ops_only["new app PIN, duress PIN set=False"]
        ),
        "which PIN she gave": ARGON2_S
        * abs(ops_only[f"both, given {APP}"] - ops_only[f"both, given {DURESS}"]),
    }
    assert not any(leaks.values()), (
        f"argon2 operations (count, seconds here): {cost}; extra seconds in production: {extra_s}"
    )


# -- finding her duress PIN by trying ----------------------------------------------------------


async def test_trying_new_app_pins_never_finds_her_duress_pin(env: Env) -> None:
    """With her app PIN he tries new app PINs one after the other, each the current PIN
    of the next, hoping one is answered differently because it is her duress PIN."""
    await _pins(env)
    current = APP
    tried: list[tuple[str, int, bytes]] = []
    for n in range(9874, 9880):  # her duress PIN among them
        guess = f"{n:04d}"
        status, content = await _put_pins(env, {"current_pin": current, "app_pin": guess})
        tried.append((guess, status, content))
        current = guess
    answers = {(status, content) for _, status, content in tried}
    assert answers == {(204, b"")}, f"answers that single out a PIN: {tried}"
    assert env.ctx.store.incidents(status="open") == []


# -- the hidden SOS ----------------------------------------------------------------------------


async def test_a_dispatch_to_her_hidden_sos_is_not_listed_in_her_accesses(env: Env) -> None:
    await _pins(env)
    await env.ctx.ingest.submit([fix(env.phone, -10, 0)])  # her phone reported a position
    before = (await env.api.get("/api/v1/victim/accesses", headers=env.h["vic"])).json()
    assert (await _check(env, DURESS)) == (200, {"ok": True})
    [hidden] = env.ctx.store.incidents(status="open")
    env.clock.set(T0 + 30)
    await act(env, hidden.id, "dispatch", officer_id=env.officer, note="do not call her")
    r = await env.api.get("/api/v1/field/dispatches", headers=env.h["kim"])  # the officer's app
    assert r.status_code == 200
    assert await loop(env) == []  # nothing on her SOS screen
    after = (await env.api.get("/api/v1/victim/accesses", headers=env.h["vic"])).json()
    assert after == before, f"her accesses list the hidden SOS's dispatch: {after}"


# -- defended: the wrong-PIN budget and the lockout's answer -----------------------------------


async def test_wrong_pins_sent_at_once_to_all_her_pin_routes_get_five_checked(env: Env) -> None:
    """He sends wrong PINs at once to the app lock, the PIN change and the contact change:
    all count against one budget, checked one at a time."""
    await _pins(env)
    h = env.h["vic"]
    sends = []
    for n in range(4):
        sends.append(env.api.post(CHECK_URL, json={"pin": f"000{n}"}, headers=h))
        sends.append(
            env.api.put(PINS_URL, json={"current_pin": f"111{n}", "app_pin": "2222"}, headers=h)
        )
        sends.append(env.api.put(CONTACT_URL, json={**HIS, "pin": f"333{n}"}, headers=h))
    answers = await asyncio.gather(*sends)
    tried = [r for r in answers if r.status_code in (200, 403)]
    assert len(tried) <= 5, f"{len(tried)} wrong PINs checked at once (limit 5)"
    assert all(r.status_code in (200, 403, 429) for r in answers), [r.status_code for r in answers]
    assert env.ctx.store.contact(env.vic).phone is None  # nothing moved


async def test_a_locked_out_change_answers_the_same_for_every_pin(env: Env) -> None:
    """Once locked out, every PIN gets the same 429, body and Retry-After, on the PIN and
    contact changes alike; her duress PIN still calls for help there."""
    await _pins(env)
    for n in range(5):
        status, _ = await _put_pins(env, {"current_pin": f"000{n}", "app_pin": "2222"})
        assert status == 403
    env.clock.set(T0 + 10)
    seen = {}
    for pin in (APP, DURESS, "5555"):
        p = await env.api.put(
            PINS_URL, json={"current_pin": pin, "app_pin": "2222"}, headers=env.h["vic"]
        )
        c = await env.api.put(CONTACT_URL, json={**HIS, "pin": pin}, headers=env.h["vic"])
        seen[pin] = [(r.status_code, r.content, r.headers.get("retry-after")) for r in (p, c)]
    assert seen[APP] == seen[DURESS] == seen["5555"], seen
    assert seen[APP][0][0] == 429
    [raised] = env.ctx.store.incidents(status="open")
    assert env.ctx.store.get_incident(raised.id).duress
    assert await loop(env) == []
    assert env.ctx.store.contact(env.vic).phone is None
