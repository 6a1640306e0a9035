"""Attacks on device authentication and sign-in, as an outsider or a shared address makes them.

What each test measures is what the attacker gets: slow-hash work done for him (argon2
verifications), devices kept offline, a victim kept out of her account.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from bangpae.adapters.clock import ManualClock
from bangpae.adapters.listeners.osmand_http import create_osmand_app
from bangpae.app import build, http_app
from bangpae.config import Settings
from bangpae.domain.model import Order
from bangpae.services import auth as auth_module
from bangpae.services.auth import hash_password
from bangpae.services.devicekeys import KEY_PREFIX, new_key
from bangpae.services.passwords import PasswordPool
from tests.scenario import T0

PW = "a-long-enough-password"
NAT = "100.64.0.7"  # carrier-grade NAT: the prober and the fleet share it
HOME = "203.0.113.5"
KIM = {"X-Limit-U": "kim", "X-Limit-D": "phone"}  # her OwnTracks app


class CountingHasher(PasswordHasher):
    """argon2id as the service uses it, counting the verifications an attacker causes."""

    calls = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
        CountingHasher.calls += 1
        return super().verify(hash, password)


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> type[CountingHasher]:
    CountingHasher.calls = 0
    monkeypatch.setattr(auth_module, "_HASHER", CountingHasher())
    return CountingHasher


@pytest.fixture
async def env(tmp_path: Path):
    clock = ManualClock(T0)
    ctx = build(Settings(data_dir=tmp_path, allow_keyless_devices=False), clock=clock)
    s = ctx.store
    off = s.add_person("offender", "O")
    vic = s.add_person("victim", "V")
    keys = {"ANKLE": new_key(), "PHONE": new_key(), "API-1": new_key()}
    s.add_device("ANKLE", "ankle_monitor", "osmand", off, ctx.device_keys.hash_new(keys["ANKLE"]))
    phone = ctx.device_keys.hash_new(keys["PHONE"])
    s.add_device("owntracks/kim/phone", "phone", "owntracks", vic, phone)
    s.add_device("API-1", "ankle_monitor", "api", off, ctx.device_keys.hash_new(keys["API-1"]))
    s.add_order(Order(0, off, vic))
    s.add_user("vic", hash_password(PW), "victim", vic)
    s.add_user("op", hash_password(PW), "operator", None)
    await ctx.start()
    clients: list[httpx.AsyncClient] = []

    def client(kind: str, source: str) -> httpx.AsyncClient:
        app = create_osmand_app(ctx) if kind == "osmand" else http_app(ctx)
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(source, 40000)),
            base_url=f"http://{kind}",
        )
        clients.append(c)
        return c

    yield ctx, client, keys, clock
    for c in clients:
        await c.aclose()
    await ctx.stop()


def basic(user: str, key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def osmand_params(identifier: str, key: str | None, t: float = T0 - 5) -> dict[str, str]:
    p = {"id": identifier, "lat": "37.500000", "lon": "127.000000", "timestamp": str(int(t))}
    if key is not None:
        p["key"] = key
    return p


def native(t_iso: str = "2027-01-15T08:00:00Z") -> dict[str, object]:
    return {"fixes": [{"fix_time": t_iso, "lat": 37.5, "lon": 127.0, "accuracy_m": 8}]}


async def test_a_flood_of_wrong_keys_on_every_http_path_costs_no_slow_hash(
    env, argon2_calls
) -> None:
    ctx, client, keys, _ = env
    osm, api = client("osmand", NAT), client("api", NAT)
    codes = set()
    for _ in range(60):
        bad = new_key()
        codes.add((await osm.get("/", params=osmand_params("ANKLE", bad))).status_code)
        r = await api.post("/api/v1/fixes", json=native(), headers=basic("API-1", bad))
        codes.add(r.status_code)
        body = {"_type": "location", "lat": 37.5, "lon": 127.0, "tst": int(T0) - 5}
        r = await api.post("/owntracks", json=body, headers={**basic("kim", bad), **KIM})
        codes.add(r.status_code)
    assert codes <= {401, 403, 429}
    assert argon2_calls.calls == 0  # the attacker made the server do no password-hash work


async def test_registered_devices_behind_a_probing_address_keep_reporting(env) -> None:
    ctx, client, keys, _ = env
    osm, api = client("osmand", NAT), client("api", NAT)
    probe = [
        (await osm.get("/", params=osmand_params(f"GUESS-{i}", new_key()))).status_code
        for i in range(40)
    ]
    assert probe[:20] == [403] * 20 and set(probe[20:]) == {429}  # the prober is slowed
    before = ctx.store.count_fixes()
    # ...but the fleet behind the same address is not
    r = await osm.get("/", params=osmand_params("ANKLE", keys["ANKLE"]))
    assert r.status_code == 200, r.text
    r = await api.post("/api/v1/fixes", json=native(), headers=basic("API-1", keys["API-1"]))
    assert r.status_code == 202, r.text
    body = {"_type": "location", "lat": 37.5, "lon": 127.0, "tst": int(T0) - 5, "acc": 8}
    r = await api.post("/owntracks", json=body, headers={**basic("kim", keys["PHONE"]), **KIM})
    assert r.status_code == 200, r.text
    assert ctx.store.count_fixes() == before + 3


async def test_unknown_ids_from_many_addresses_hit_a_global_limit_not_the_store(
    env, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, client, keys, _ = env
    lookups = 0
    real = ctx.store.device_credential

    def counted(identifier: str):  # type: ignore[no-untyped-def]
        nonlocal lookups
        lookups += 1
        return real(identifier)

    monkeypatch.setattr(ctx.store, "device_credential", counted)
    ctx.device_keys.guard.everyone.max_failures = 50
    for i in range(100):  # 100 addresses, 3 guesses each: under every per-source limit
        c = client("osmand", f"198.51.100.{i + 1}")
        for j in range(3):
            await c.get("/", params=osmand_params(f"GUESS-{i}-{j}", new_key()))
    assert lookups <= 51  # past the global limit, unknown identifiers cost nothing
    assert ctx.device_keys.guard.refused >= 249
    metrics = (await client("api", HOME).get("/metrics")).text
    limited = [x for x in metrics.splitlines() if x.startswith("bangpae_device_auth_limited_total")]
    assert limited and float(limited[0].split()[-1]) >= 249  # the control centre sees it
    r = await client("osmand", "198.51.100.200").get(
        "/", params=osmand_params("ANKLE", keys["ANKLE"])
    )
    assert r.status_code == 200  # a registered device with its key is never refused


async def test_a_key_hashed_before_keyed_hashing_is_checked_once_then_upgraded(
    env, argon2_calls
) -> None:
    ctx, client, _, _ = env
    key = new_key()
    pid = ctx.store.add_person("offender", "Q")
    did = ctx.store.add_device("OLD-1", "ankle_monitor", "osmand", pid, hash_password(key))
    osm = client("osmand", HOME)
    for _ in range(3):
        assert (await osm.get("/", params=osmand_params("OLD-1", key))).status_code == 200
    assert argon2_calls.calls == 1
    assert ctx.store.device_secret_hash(did).startswith(KEY_PREFIX)
    assert (await osm.get("/", params=osmand_params("OLD-1", new_key()))).status_code == 403
    assert argon2_calls.calls == 1


async def test_fixes_dated_before_registration_or_past_retention_are_refused(env) -> None:
    ctx, client, keys, clock = env
    osm, api = client("osmand", HOME), client("api", HOME)
    key = new_key()
    # registered now (2027-01-15 08:00 UTC): it cannot have been on him a day before
    ctx.store.add_device("API-NEW", "ankle_monitor", "api", 1, ctx.device_keys.hash_new(key), T0)
    before = ctx.store.count_fixes()
    for ident, secret, iso, why in (
        ("API-1", keys["API-1"], "1970-01-01T00:00:10Z", "retention"),
        ("API-1", keys["API-1"], "0001-01-01T00:00:00Z", "retention"),
        ("API-NEW", key, "2027-01-14T08:00:00Z", "registered"),
    ):
        r = await api.post("/api/v1/fixes", json=native(iso), headers=basic(ident, secret))
        assert r.status_code == 422, (iso, r.text)
        assert why in r.text
    r = await osm.get("/", params=osmand_params("ANKLE", keys["ANKLE"], t=T0 - 91 * 86400))
    assert r.status_code == 400 and "retention" in r.text
    assert ctx.store.count_fixes() == before
    r = await api.post(
        "/api/v1/fixes", json=native("2027-01-15T07:59:00Z"), headers=basic("API-NEW", key)
    )
    assert r.status_code == 202, r.text


async def test_her_user_name_in_his_hands_does_not_keep_her_out(env) -> None:
    ctx, client, _, clock = env
    hers, his = client("api", HOME), client("api", "198.51.100.66")
    r = await hers.post("/api/v1/auth/login", json={"username": "vic", "password": PW})
    assert r.status_code == 200
    session = {"Authorization": f"Bearer {r.json()['access_token']}"}
    refresh = r.json()["refresh_token"]
    for _ in range(12):  # he tries her name from his address, again and again
        await his.post("/api/v1/auth/login", json={"username": "vic", "password": "guess-guess"})
        clock.advance(10)
    r = await his.post("/api/v1/auth/login", json={"username": "vic", "password": PW})
    assert r.status_code == 429  # locked, for him
    # her open session, her SOS and her refresh all work; a new sign-in from her phone too
    assert (await hers.get("/api/v1/victim/status", headers=session)).status_code == 200
    r = await hers.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert r.status_code == 200
    r = await hers.post("/api/v1/auth/login", json={"username": "vic", "password": PW})
    assert r.status_code == 200, r.text
    # a new phone, somewhere else: not locked either
    r = await client("api", "192.0.2.9").post(
        "/api/v1/auth/login", json={"username": "vic", "password": PW}
    )
    assert r.status_code == 200, r.text
    # the control centre lifts the lock on his address too (e.g. it was her, borrowing)
    op = await client("api", "10.0.0.2").post(
        "/api/v1/auth/login", json={"username": "op", "password": PW}
    )
    staff = {"Authorization": f"Bearer {op.json()['access_token']}"}
    uid = ctx.store.get_user_by_name("vic").id
    r = await client("api", "10.0.0.2").post(f"/api/v1/admin/users/{uid}/unlock", headers=staff)
    assert r.status_code == 200, r.text
    unlocks = [a for a in ctx.store.audit_records() if a["action"] == "user_unlock"]
    assert [a["subject"] for a in unlocks] == [f"user:{uid}"]  # who lifted it is on record
    r = await his.post("/api/v1/auth/login", json={"username": "vic", "password": PW})
    assert r.status_code == 200


async def test_a_shared_address_full_of_failures_still_lets_its_known_users_in(env) -> None:
    _, client, _, clock = env
    proxy = client("api", "10.9.9.9")  # a proxy that sends no forwarded-for header
    assert (
        await proxy.post("/api/v1/auth/login", json={"username": "vic", "password": PW})
    ).status_code == 200
    for i in range(25):  # strangers behind the same address
        await proxy.post("/api/v1/auth/login", json={"username": f"x{i}", "password": "nope-nope"})
        clock.advance(1)
    r = await proxy.post("/api/v1/auth/login", json={"username": "op", "password": PW})
    assert r.status_code == 429  # a name never seen from here is held back
    r = await proxy.post("/api/v1/auth/login", json={"username": "vic", "password": PW})
    assert r.status_code == 200  # she signed in from here before: not locked out


async def test_a_flood_of_sign_ins_is_refused_busy_and_the_victims_reads_go_on(
    env, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, client, _, _ = env
    hers = client("api", HOME)
    r = await hers.post("/api/v1/auth/login", json={"username": "vic", "password": PW})
    session = {"Authorization": f"Bearer {r.json()['access_token']}"}
    ctx.passwords.close()
    ctx.passwords = PasswordPool(workers=1, queue=2)
    gate = threading.Event()

    class Held(PasswordHasher):  # each check holds its place until every sign-in has come
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
            gate.wait(10)
            return super().verify(hash, password)

    monkeypatch.setattr(auth_module, "_HASHER", Held())
    flood = [
        asyncio.ensure_future(
            client("api", f"198.51.100.{i}").post(
                "/api/v1/auth/login", json={"username": f"n{i}", "password": "x" * 20}
            )
        )
        for i in range(12)
    ]
    deadline = asyncio.get_running_loop().time() + 10
    while ctx.passwords.in_flight + sum(f.done() for f in flood) < 12:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)
    # the pool is full and held: her reads do not wait on it
    reads = await asyncio.gather(
        *(hers.get("/api/v1/victim/status", headers=session) for _ in range(5))
    )
    assert all(r.status_code == 200 for r in reads)
    gate.set()
    results = await asyncio.gather(*flood)
    codes = [r.status_code for r in results]
    assert codes.count(503) == 9 and set(codes) <= {401, 503}
    busy = next(r for r in results if r.status_code == 503)
    assert busy.headers["Retry-After"] == "1" and busy.json()["code"] == "busy"
    metrics = (await hers.get("/metrics")).text
    assert "bangpae_password_pool_busy_total 9.0" in metrics


async def test_a_refused_guess_is_answered_late_and_a_right_key_at_once(env) -> None:
    ctx, client, keys, _ = env
    ctx.settings.device_failure_delay_s = 2.0
    osm = client("osmand", NAT)
    loop = asyncio.get_running_loop()
    t = loop.time()
    assert (await osm.get("/", params=osmand_params("ANKLE", new_key()))).status_code == 403
    assert loop.time() - t >= 2.0  # a prober waiting for answers: one guess per delay
    t = loop.time()
    assert (await osm.get("/", params=osmand_params("ANKLE", keys["ANKLE"]))).status_code == 200
    assert loop.time() - t < 2.0  # the device with its key is never made to wait
