"""More attacks on device authentication and sign-in: what a refused address still learns
or does, old keys, IPv6 networks, the password pool, and fix times on every path.

Each test measures what the attacker gets, as in ``test_device_auth_attacks``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from argon2 import PasswordHasher

from bangpae.adapters.listeners.tcp import TcpListener
from bangpae.domain.model import Fix
from bangpae.protocols.gt06 import TCP as GT06
from bangpae.services import auth as auth_module
from bangpae.services.auth import hash_password
from bangpae.services.devicekeys import new_key
from tests.integration.test_device_auth_attacks import (  # noqa: F401
    HOME,
    NAT,
    PW,
    T0,
    basic,
    env,
    native,
    osmand_params,
)
from tests.integration.trackers import gt06_login, gt06_position

HIS = "198.51.100.66"
LEE = {"X-Limit-U": "lee", "X-Limit-D": "phone"}  # an OwnTracks phone registered long ago


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5.0
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_a_device_registered_through_the_api_refuses_fixes_from_before_it(env) -> None:  # noqa: F811
    ctx, client, _, _ = env
    api = client("api", HOME)
    op = await api.post("/api/v1/auth/login", json={"username": "op", "password": PW})
    staff = {"Authorization": f"Bearer {op.json()['access_token']}"}
    pid = ctx.store.add_person("offender", "R")
    r = await api.post(
        "/api/v1/devices",
        json={"identifier": "API-2", "kind": "ankle_monitor", "protocol": "api", "person_id": pid},
        headers=staff,
    )
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    before = ctx.store.count_fixes()
    # registered now (2027-01-15 08:00 UTC): a fix from the day before is not about him
    r = await api.post(
        "/api/v1/fixes", json=native("2027-01-14T08:00:00Z"), headers=basic("API-2", key)
    )
    assert r.status_code == 422 and "registered" in r.text, r.text
    assert ctx.store.count_fixes() == before


async def test_one_address_guessing_keys_does_not_lock_every_old_device_out(env) -> None:  # noqa: F811
    ctx, client, keys, _ = env
    ctx.device_keys.guard.everyone.max_failures = 100  # 2,000 in service; 100 keeps it short
    key = new_key()
    pid = ctx.store.add_person("offender", "S")
    ctx.store.add_device("OLD-2", "ankle_monitor", "osmand", pid, hash_password(key))
    prober = client("osmand", NAT)
    for _ in range(120):  # one address, wrong keys for a device it knows the name of
        await prober.get("/", params=osmand_params("ANKLE", new_key()))
    # a device registered before keyed hashing, reporting from elsewhere with its own key
    r = await client("osmand", HOME).get("/", params=osmand_params("OLD-2", key))
    assert r.status_code == 200, r.text


async def test_a_refused_address_cannot_tell_registered_identifiers_from_unknown_ones(
    env,  # noqa: F811
) -> None:
    ctx, client, keys, _ = env
    osm, api = client("osmand", HIS), client("api", HIS)
    for i in range(20):
        await osm.get("/", params=osmand_params(f"GUESS-{i}", new_key()))
    # refused from now on: registered or not, a wrong key gets the same answer
    known = await osm.get("/", params=osmand_params("ANKLE", new_key()))
    unknown = await osm.get("/", params=osmand_params("NOBODY", new_key()))
    assert (known.status_code, known.text) == (unknown.status_code, unknown.text)
    known = await api.post("/api/v1/fixes", json=native(), headers=basic("API-1", new_key()))
    unknown = await api.post("/api/v1/fixes", json=native(), headers=basic("NOBODY", new_key()))
    assert known.status_code == unknown.status_code
    # ...while a registered device behind the same address still reports with its key
    r = await osm.get("/", params=osmand_params("ANKLE", keys["ANKLE"]))
    assert r.status_code == 200, r.text


async def test_a_short_password_from_before_still_works_and_is_not_open_to_guessing(
    env,  # noqa: F811
) -> None:
    ctx, client, _, _ = env
    weak = "lee-phone-2024"  # 14 characters: allowed before keys had to be 22
    pid = ctx.store.add_person("victim", "L")
    ctx.store.add_device("owntracks/lee/phone", "phone", "owntracks", pid, hash_password(weak))
    body = {"_type": "location", "lat": 37.5, "lon": 127.0, "tst": int(T0) - 5, "acc": 8}
    hers = client("api", HOME)
    r = await hers.post("/owntracks", json=body, headers={**basic("lee", weak), **LEE})
    assert r.status_code == 200, r.text  # her phone keeps working after the upgrade
    his = client("api", HIS)
    codes = []
    for i in range(60):
        r = await his.post(
            "/owntracks", json=body, headers={**basic("lee", f"lee-{i:010d}"), **LEE}
        )
        codes.append(r.status_code)
    assert 429 in codes, codes  # a short password is guessed only within the failure limits
    r = await his.post("/owntracks", json=body, headers={**basic("lee", weak), **LEE})
    assert r.status_code == 429  # the right guess from his address is not tried either
    r = await hers.post("/owntracks", json=body, headers={**basic("lee", weak), **LEE})
    assert r.status_code == 200, r.text


async def test_the_addresses_of_one_ipv6_network_count_as_one_source(env) -> None:  # noqa: F811
    _, client, _, _ = env
    net = "2001:db8:66:1::"  # one subscriber's /64: 2^64 addresses
    for i in range(5):
        r = await client("api", f"{net}{i + 1:x}").post(
            "/api/v1/auth/login", json={"username": "vic", "password": "guess-guess"}
        )
        assert r.status_code == 401
    r = await client("api", f"{net}99").post(
        "/api/v1/auth/login", json={"username": "vic", "password": "guess-guess"}
    )
    assert r.status_code == 429, r.text  # her name is locked for his network
    codes = [
        (
            await client("osmand", f"{net}{i + 0x100:x}").get(
                "/", params=osmand_params(f"GUESS-{i}", new_key())
            )
        ).status_code
        for i in range(25)
    ]
    assert codes[:20] == [403] * 20 and set(codes[20:]) == {429}, codes


async def test_old_device_keys_cannot_crowd_people_out_of_the_password_pool(
    env,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx, client, _, _ = env
    gate = threading.Event()

    class Gated(PasswordHasher):  # argon2 held until the test lets it go
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
            gate.wait(10)
            return super().verify(hash, password)

    pid = ctx.store.add_person("offender", "U")
    ctx.store.add_device("OLD-3", "ankle_monitor", "osmand", pid, hash_password(new_key()))
    assert await ctx.device_keys.find("OLD-3") is not None
    monkeypatch.setattr(auth_module, "_HASHER", Gated())
    # 30 addresses, one wrong key each: within every failure limit
    flood = [
        asyncio.create_task(
            client("osmand", f"198.51.100.{i + 1}").get(
                "/", params=osmand_params("OLD-3", new_key())
            )
        )
        for i in range(30)
    ]
    await until(lambda: ctx.passwords.in_flight + sum(t.done() for t in flood) == 30)
    login = asyncio.create_task(
        client("api", HOME).post("/api/v1/auth/login", json={"username": "vic", "password": PW})
    )
    await asyncio.sleep(0.05)
    gate.set()
    r = await login
    await asyncio.gather(*flood)
    assert r.status_code == 200, r.text  # her sign-in is not refused busy


async def test_sign_ins_refused_by_a_lock_do_not_crowd_out_the_victims_sign_in(env) -> None:  # noqa: F811
    ctx, client, _, _ = env
    his = client("api", HIS)
    guess = {"username": "somebody", "password": "guess-guess"}
    for _ in range(5):  # five guesses: the name is locked from his address
        await his.post("/api/v1/auth/login", json=guess)
    stop = False
    refused = 0

    async def keep_trying() -> None:  # locked attempts cost him nothing: he sends many
        nonlocal refused
        while not stop:
            r = await his.post("/api/v1/auth/login", json=guess)
            assert r.status_code in (429, 503)
            refused += 1

    flood = [asyncio.create_task(keep_trying()) for _ in range(20)]
    await until(lambda: refused >= 50)
    hers = client("api", HOME)
    codes = []
    for _ in range(5):
        r = await hers.post("/api/v1/auth/login", json={"username": "vic", "password": PW})
        codes.append(r.status_code)
        await asyncio.sleep(0.02)
    stop = True
    await asyncio.gather(*flood)
    assert 503 not in codes, codes  # the pool is for password checks, not for refusals


async def test_a_tracker_fix_from_before_its_registration_is_dropped(env) -> None:  # noqa: F811
    ctx, _, _, _ = env
    imei = "864717003283581"
    pid = ctx.store.add_person("offender", "T")
    ctx.store.add_device(imei, "ankle_monitor", "gt06", pid, None, at=T0)
    listener = TcpListener(ctx, GT06)
    fixes: list[Fix] = []
    replies: list[bytes] = []
    bound = await listener._bind(gt06_login(imei), fixes, replies, HOME)
    assert bound is not None
    # a position a day before the tracker was registered: acknowledged, not stored
    frame = gt06_position(37.5, 127.0, T0 - 86400, 2)
    assert listener._bound_frame(frame, bound, fixes, replies)
    assert len(replies) == 2
    assert fixes == []
    frame = gt06_position(37.5, 127.0, T0 - 60, 3)
    assert listener._bound_frame(frame, bound, fixes, replies)
    assert len(fixes) == 1
