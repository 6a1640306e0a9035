"""Signing in over real HTTP on the composition root: refresh rotation and reuse, logout,
lockout and throttling on a fake clock, TOTP for staff, the admin's view of sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from bangpae.adapters.clock import ManualClock
from bangpae.adapters.housekeeping import run_purge
from bangpae.adapters.store import Store
from bangpae.api.factory import create_app
from bangpae.app import AppContext, build
from bangpae.cli import main as cli_main
from bangpae.config import Settings
from bangpae.domain.errors import Conflict, NotFound
from bangpae.domain.model import Order
from bangpae.domain.retention import DAY_S, Policy
from bangpae.services import sessions
from bangpae.services.auth import hash_password
from tests.scenario import T0

PW = "a-long-enough-password"
LOGIN = "/api/v1/auth/login"


@dataclass
class Env:
    ctx: AppContext
    api: httpx.AsyncClient
    clock: ManualClock
    client: Callable[[str], httpx.AsyncClient]
    people: dict[str, int]

    async def login(self, user: str, password: str = PW, **extra: Any) -> httpx.Response:
        return await self.api.post(LOGIN, json={"username": user, "password": password, **extra})

    async def tokens(self, user: str, **extra: Any) -> dict[str, Any]:
        r = await self.login(user, **extra)
        assert r.status_code == 200, r.text
        return dict(r.json())


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def _env(tmp_path: Path, **settings: Any) -> AsyncIterator[Env]:
    clock = ManualClock(T0)
    ctx = build(Settings(data_dir=tmp_path, tick_s=60, **settings), clock=clock)
    s = ctx.store
    off = s.add_person("offender", "O")
    vic = s.add_person("victim", "V")
    vic2 = s.add_person("victim", "W")
    s.add_order(Order(0, off, vic, valid_from=1.0))
    for user, role, pid in (
        ("admin", "admin", None),
        ("op", "operator", None),
        ("sup", "supervisor", None),
        ("vic", "victim", vic),
        ("vic2", "victim", vic2),
        ("off", "offender", off),
    ):
        s.add_user(user, hash_password(PW), role, pid)
    await ctx.start()
    app = create_app(ctx)
    clients: list[httpx.AsyncClient] = []

    def client(ip: str) -> httpx.AsyncClient:
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(ip, 40000)), base_url="http://test"
        )
        clients.append(c)
        return c

    api = client("127.0.0.1")
    yield Env(ctx, api, clock, client, {"offender": off, "victim": vic, "victim2": vic2})
    for c in clients:
        await c.aclose()
    await ctx.stop()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in _env(tmp_path, require_totp_for_staff=False):
        yield e


@pytest.fixture
async def totp_env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in _env(tmp_path, require_totp_for_staff=True):
        yield e


# -- refresh tokens --------------------------------------------------------------------


async def test_login_returns_an_access_token_bound_to_a_session_and_a_refresh_token(
    env: Env,
) -> None:
    t = await env.tokens("vic")
    assert t["token_type"] == "bearer" and t["role"] == "victim" and t["scope"] == "full"
    assert t["expires_in"] == 900 and t["refresh_expires_in"] == 30 * 86400
    assert len(t["refresh_token"]) >= 43
    me = await env.api.get("/api/v1/me", headers=bearer(t))
    assert me.status_code == 200 and me.json()["username"] == "vic"
    # only the hash of the refresh token is stored
    (session,) = env.ctx.store.active_sessions(T0)
    assert session.username == "vic" and session.ip == "127.0.0.1"
    staff = await env.tokens("op")
    assert staff["refresh_expires_in"] == 12 * 3600


async def test_a_refresh_token_works_once_and_returns_a_new_pair(env: Env) -> None:
    first = await env.tokens("vic")
    env.clock.advance(600)
    r = await env.api.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["refresh_expires_in"] == 30 * 86400 - 600  # the sign-in's end does not move
    assert (await env.api.get("/api/v1/me", headers=bearer(second))).status_code == 200
    (session,) = env.ctx.store.active_sessions(env.clock.now())
    assert session.last_used_at == T0 + 600 and session.created_at == T0


async def test_a_spent_refresh_token_presented_again_ends_the_whole_session(env: Env) -> None:
    first = await env.tokens("vic")
    r = await env.api.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    second = r.json()
    # someone replays the first token: refused, and the session it belongs to ends
    r = await env.api.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 401 and r.json()["code"] == "session_ended"
    assert r.headers["content-type"] == "application/problem+json"
    r = await env.api.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 401
    assert (await env.api.get("/api/v1/me", headers=bearer(second))).status_code == 401
    assert env.ctx.store.active_sessions(env.clock.now()) == []
    (record,) = [
        a for a in env.ctx.store.audit_records(limit=100) if a["action"] == "refresh_token_reused"
    ]
    assert record["actor"].endswith(":vic") and record["subject"].startswith("session:")
    # a made-up token is simply refused
    r = await env.api.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 43})
    assert r.status_code == 401


async def test_a_refresh_token_is_refused_once_the_sign_in_has_expired(env: Env) -> None:
    t = await env.tokens("op")
    env.clock.advance(12 * 3600 - 100)
    r = await env.api.post("/api/v1/auth/refresh", json={"refresh_token": t["refresh_token"]})
    assert r.status_code == 200 and r.json()["expires_in"] == 100  # never past the session
    env.clock.advance(100)
    r = await env.api.post(
        "/api/v1/auth/refresh", json={"refresh_token": r.json()["refresh_token"]}
    )
    assert r.status_code == 401


# -- logout and revocation -------------------------------------------------------------


async def test_logout_ends_the_session_at_once_though_the_access_token_has_not_expired(
    env: Env,
) -> None:
    t = await env.tokens("vic")
    assert (await env.api.post("/api/v1/auth/logout", headers=bearer(t))).status_code == 204
    assert (await env.api.get("/api/v1/me", headers=bearer(t))).status_code == 401
    r = await env.api.post("/api/v1/auth/refresh", json={"refresh_token": t["refresh_token"]})
    assert r.status_code == 401


async def test_logout_with_only_the_refresh_token_works_as_a_quick_exit_does(env: Env) -> None:
    t = await env.tokens("vic")
    r = await env.api.post("/api/v1/auth/logout", json={"refresh_token": t["refresh_token"]})
    assert r.status_code == 204
    assert (await env.api.get("/api/v1/me", headers=bearer(t))).status_code == 401
    # nothing to end, or nonsense: still 204, nothing said
    assert (await env.api.post("/api/v1/auth/logout")).status_code == 204
    r = await env.api.post("/api/v1/auth/logout", json={"refresh_token": "nonsense"})
    assert r.status_code == 204


async def test_a_disabled_user_is_refused_with_a_token_that_has_not_expired(env: Env) -> None:
    admin = await env.tokens("admin")
    op = await env.tokens("op")
    assert (await env.api.get("/api/v1/incidents", headers=bearer(op))).status_code == 200
    uid = env.ctx.store.get_user_by_name("op").id
    r = await env.api.post(f"/api/v1/admin/users/{uid}/disable", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["sessions_ended"] == 1
    assert (await env.api.get("/api/v1/incidents", headers=bearer(op))).status_code == 401
    r = await env.api.post("/api/v1/auth/refresh", json={"refresh_token": op["refresh_token"]})
    assert r.status_code == 401
    r = await env.login("op")
    assert r.status_code == 401 and r.json()["detail"] == "unknown user or wrong password"
    r = await env.api.post(f"/api/v1/admin/users/{uid}/enable", headers=bearer(admin))
    assert r.status_code == 200
    assert (await env.login("op")).status_code == 200
    actions = [a["action"] for a in env.ctx.store.audit_records(subject=f"user:{uid}")]
    assert actions == ["user_disable", "user_enable"]


async def test_a_disabled_user_is_refused_even_if_a_session_somehow_stayed_open(env: Env) -> None:
    t = await env.tokens("vic")
    store = env.ctx.store
    uid = store.get_user_by_name("vic").id
    with store.engine.begin() as c:  # disabled behind the service's back
        from sqlalchemy import update

        from bangpae.adapters.store import schema

        c.execute(update(schema.users).where(schema.users.c.id == uid).values(disabled=True))
    assert (await env.api.get("/api/v1/me", headers=bearer(t))).status_code == 401


async def test_the_sessions_of_an_orders_parties_end_with_it_unless_another_order_holds(
    env: Env,
) -> None:
    store, ctx = env.ctx.store, env.ctx
    off = store.add_person("offender", "P")
    first_victim, second_victim = store.add_person("victim", "X"), store.add_person("victim", "Y")
    first = store.add_order(Order(0, off, first_victim, valid_from=1.0, valid_until=T0 + 100))
    second = store.add_order(Order(0, off, second_victim, valid_from=1.0, valid_until=T0 + 200))
    headers = {}
    for name, role, person in (
        ("p", "offender", off),
        ("x", "victim", first_victim),
        ("y", "victim", second_victim),
    ):
        store.add_user(name, "not-a-password-hash", role, person)
        user = store.get_user_by_name(name)
        issued = sessions.open_session(store, ctx.settings, ctx.secret, user, "full", T0)
        headers[name] = {"Authorization": f"Bearer {issued.access_token}"}

    async def signed_in() -> set[str]:
        return {
            n for n, h in headers.items() if (await env.api.get("/api/v1/me", headers=h)).is_success
        }

    env.clock.set(T0 + 100)  # the first order ends; he is still under the second
    assert store.revoke_order_sessions(first, env.clock.now()) == 1
    assert await signed_in() == {"p", "y"}
    env.clock.set(T0 + 200)
    assert store.revoke_order_sessions(second, env.clock.now()) == 2
    assert await signed_in() == set()
    assert {s.revoked_reason for s in map(store.get_session, range(1, 4))} == {"order_ended"}


# -- lockout and throttling ------------------------------------------------------------


async def test_five_failures_lock_a_name_for_fifteen_minutes_even_with_the_right_password(
    env: Env,
) -> None:
    for _ in range(5):
        r = await env.login("op", "wrong-password-guess")
        assert r.status_code == 401
        env.clock.advance(60)
    r = await env.login("op")
    assert r.status_code == 429 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "login_throttled"
    # the lock runs 15 minutes from the fifth failure (4 minutes ago)
    assert r.headers["retry-after"] == str(15 * 60 - 60)
    env.clock.advance(15 * 60 - 61)
    assert (await env.login("op")).status_code == 429  # refusals do not extend the lock
    env.clock.advance(1)
    assert (await env.login("op")).status_code == 200
    outcomes = [a["outcome"] for a in env.ctx.store.login_attempts("op")]
    assert outcomes == ["failed"] * 5 + ["locked", "locked", "ok"]


async def test_a_success_starts_the_count_afresh(env: Env) -> None:
    for _ in range(4):
        assert (await env.login("op", "wrong-password-guess")).status_code == 401
    assert (await env.login("op")).status_code == 200
    for _ in range(4):
        assert (await env.login("op", "wrong-password-guess")).status_code == 401
    assert (await env.login("op")).status_code == 200


async def test_an_unknown_name_gets_the_same_answers_as_a_real_one(env: Env) -> None:
    answers = {}
    for user in ("op", "no-such-user"):
        seen = []
        for _ in range(6):
            r = await env.login(user, "wrong-password-guess")
            seen.append((r.status_code, r.json(), r.headers.get("retry-after")))
        answers[user] = seen
    assert answers["op"] == answers["no-such-user"]
    assert [s for s, _, _ in answers["op"]] == [401] * 5 + [429]


async def test_a_lock_is_kept_in_the_database_and_survives_a_restart(
    env: Env, tmp_path: Path
) -> None:
    for _ in range(5):
        await env.login("vic", "wrong-password-guess")
    again = build(Settings(data_dir=tmp_path, require_totp_for_staff=False), clock=env.clock)
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(again)), base_url="http://test"
    )
    r = await api.post(LOGIN, json={"username": "vic", "password": PW})
    assert r.status_code == 429
    await api.aclose()
    again.store.close()


async def test_too_many_failures_from_one_address_block_it_for_every_name(env: Env) -> None:
    attacker, other = env.client("192.0.2.7"), env.client("198.51.100.9")
    for i in range(20):  # a spray: four names, five guesses each, all from one address
        user = ("op", "sup", "vic", "admin")[i % 4]
        r = await attacker.post(LOGIN, json={"username": user, "password": f"guess-{i}"})
        assert r.status_code in (401, 429)
    r = await attacker.post(LOGIN, json={"username": "vic2", "password": PW})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    r = await other.post(LOGIN, json={"username": "vic2", "password": PW})
    assert r.status_code == 200  # others are not punished
    env.clock.advance(15 * 60)
    r = await attacker.post(LOGIN, json={"username": "vic2", "password": PW})
    assert r.status_code == 200


# -- password policy -------------------------------------------------------------------


async def test_a_weak_password_is_refused_when_a_user_is_created(tmp_path: Path) -> None:
    def create(username: str, password: str) -> int:
        return cli_main(
            [
                "admin",
                "create-user",
                "--data-dir",
                str(tmp_path),
                "--username",
                username,
                "--password",
                password,
                "--role",
                "operator",
                "--init",
            ]
        )

    assert create("kim", "short") == 2
    assert create("kim", "password1234") == 2  # common
    assert create("operator-kim", "Operator-Kim") == 2  # the user name
    assert create("kim", "a-long-enough-password") == 0


async def test_a_user_changes_their_password_under_the_policy(env: Env) -> None:
    here = await env.tokens("vic")
    elsewhere = await env.tokens("vic")
    url = "/api/v1/auth/password"
    r = await env.api.post(
        url, json={"current_password": "wrong", "new_password": "x"}, headers=bearer(here)
    )
    assert r.status_code == 403
    for weak in ("short", "password1234", "vic-vic-vic-vic"):
        r = await env.api.post(
            url, json={"current_password": PW, "new_password": weak}, headers=bearer(here)
        )
        assert r.status_code == 422 and r.json()["code"] == "weak_password", weak
    new = "seoul-shield-e2e-2026"
    r = await env.api.post(
        url, json={"current_password": PW, "new_password": new}, headers=bearer(here)
    )
    assert r.status_code == 204
    assert (await env.api.get("/api/v1/me", headers=bearer(here))).status_code == 200
    assert (await env.api.get("/api/v1/me", headers=bearer(elsewhere))).status_code == 401
    assert (await env.login("vic")).status_code == 401
    assert (await env.login("vic", new)).status_code == 200


# -- TOTP ------------------------------------------------------------------------------


async def _enrol(env: Env, user: str) -> tuple[pyotp.TOTP, dict[str, Any]]:
    """Sign in with the password alone, enrol, confirm; returns the authenticator."""
    limited = await env.tokens(user)
    assert limited["scope"] == "totp_enrol"
    r = await env.api.post("/api/v1/auth/totp/enrol", headers=bearer(limited))
    assert r.status_code == 200, r.text
    totp = pyotp.TOTP(r.json()["secret"])
    assert r.json()["otpauth_uri"].startswith(f"otpauth://totp/bangpae:{user}?")
    code = totp.at(env.clock.now())
    r = await env.api.post(
        "/api/v1/auth/totp/confirm", json={"code": code}, headers=bearer(limited)
    )
    assert r.status_code == 200 and r.json() == {"enabled": True, "sessions_ended": 1}
    env.clock.advance(30)  # the confirming code is spent: sign in with the next one
    return totp, limited


async def test_staff_without_a_second_factor_may_only_enrol_one(totp_env: Env) -> None:
    env = totp_env
    t = await env.tokens("op")
    assert t["scope"] == "totp_enrol"
    for path in ("/api/v1/me", "/api/v1/incidents"):
        r = await env.api.get(path, headers=bearer(t))
        assert r.status_code == 403 and "second factor" in r.json()["detail"]
    # victims have no second-factor step at all
    vic = await env.tokens("vic")
    assert vic["scope"] == "full"
    r = await env.api.post("/api/v1/auth/totp/enrol", headers=bearer(vic))
    assert r.status_code == 403


async def test_totp_enrol_confirm_and_sign_in_with_a_code(totp_env: Env) -> None:
    env = totp_env
    totp, limited = await _enrol(env, "op")
    # the enrolment session ended; the password alone no longer signs in
    assert (await env.api.get("/api/v1/me", headers=bearer(limited))).status_code == 401
    r = await env.login("op")
    assert r.status_code == 401 and r.json()["code"] == "totp_required"
    t = await env.tokens("op", totp=totp.at(env.clock.now()))
    assert t["scope"] == "full"
    assert (await env.api.get("/api/v1/incidents", headers=bearer(t))).status_code == 200
    # the secret is never shown again: enrolling anew is refused
    r = await env.api.post("/api/v1/auth/totp/enrol", headers=bearer(t))
    assert r.status_code == 409
    # and it is stored sealed
    factor = env.ctx.store.totp(env.ctx.store.get_user_by_name("op").id)
    assert factor.enabled and totp.secret not in factor.sealed_secret


async def test_a_totp_code_works_once(totp_env: Env) -> None:
    env = totp_env
    totp, _ = await _enrol(env, "sup")
    code = totp.at(env.clock.now())
    assert (await env.login("sup", totp=code)).status_code == 200
    r = await env.login("sup", totp=code)  # replayed within the same time step
    assert r.status_code == 401 and r.json()["code"] == "totp_invalid"
    r = await env.login("sup", totp=totp.at(env.clock.now() - 30))  # an older step: also spent
    assert r.status_code == 401
    env.clock.advance(30)
    assert (await env.login("sup", totp=totp.at(env.clock.now()))).status_code == 200


async def test_wrong_totp_codes_count_toward_the_lockout(totp_env: Env) -> None:
    env = totp_env
    totp, _ = await _enrol(env, "op")
    right = totp.at(env.clock.now())
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert (await env.login("op", totp=wrong)).status_code == 401
    assert (await env.login("op", totp=right)).status_code == 429


async def test_an_admin_resets_a_lost_second_factor(totp_env: Env) -> None:
    env = totp_env
    admin_totp, _ = await _enrol(env, "admin")
    _, _ = await _enrol(env, "op")
    admin = await env.tokens("admin", totp=admin_totp.at(env.clock.now()))
    uid = env.ctx.store.get_user_by_name("op").id
    r = await env.api.post(f"/api/v1/admin/users/{uid}/reset-totp", headers=bearer(admin))
    assert r.status_code == 200
    assert (await env.tokens("op"))["scope"] == "totp_enrol"  # enrols anew


# -- the admin's view of sessions ------------------------------------------------------


async def test_an_admin_lists_sessions_and_revokes_one_with_audit_records(env: Env) -> None:
    admin = await env.tokens("admin")
    phone = env.client("203.0.113.5")
    r = await phone.post(
        LOGIN,
        json={"username": "vic", "password": PW},
        headers={"User-Agent": "VictimApp/1.0"},
    )
    vic = r.json()
    r = await env.api.get("/api/v1/admin/sessions", headers=bearer(admin))
    assert r.status_code == 200
    rows = {s["username"]: s for s in r.json()["sessions"]}
    assert set(rows) == {"admin", "vic"}
    assert rows["admin"]["current"] is True
    v = rows["vic"]
    assert v["role"] == "victim" and v["ip"] == "203.0.113.5"
    assert v["user_agent"] == "VictimApp/1.0" and v["created_at"] == v["last_used_at"]
    assert "token_hash" not in v and "refresh_token" not in v
    r = await env.api.post(f"/api/v1/admin/sessions/{v['id']}/revoke", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["was_open"] is True
    assert (await phone.get("/api/v1/me", headers=bearer(vic))).status_code == 401
    r = await env.api.get("/api/v1/admin/sessions", headers=bearer(admin))
    assert [s["username"] for s in r.json()["sessions"]] == ["admin"]
    r = await env.api.post("/api/v1/admin/sessions/999/revoke", headers=bearer(admin))
    assert r.status_code == 404
    trail = [
        (a["action"], a["subject"], a["role"])
        for a in env.ctx.store.audit_records(actor="user:1:admin")
    ]
    assert trail == [
        ("list_sessions", "sessions", "admin"),
        ("revoke_session", f"session:{v['id']}", "admin"),
        ("list_sessions", "sessions", "admin"),
    ]


async def test_only_an_admin_sees_or_revokes_sessions(env: Env) -> None:
    for user in ("op", "sup", "vic"):
        t = await env.tokens(user)
        r = await env.api.get("/api/v1/admin/sessions", headers=bearer(t))
        assert r.status_code == 403, user
        r = await env.api.post("/api/v1/admin/sessions/1/revoke", headers=bearer(t))
        assert r.status_code == 403, user
        r = await env.api.post("/api/v1/admin/users/1/disable", headers=bearer(t))
        assert r.status_code == 403, user
    assert (await env.api.get("/api/v1/admin/sessions")).status_code == 401


# -- the store, on every backend -------------------------------------------------------


def _user(store: Store, name: str = "op", role: str = "operator") -> int:
    return store.add_user(name, "not-a-password-hash", role)


def test_the_store_rotates_a_refresh_token_once_and_revokes_on_reuse(store: Store) -> None:
    uid = _user(store)
    sid = store.open_session(uid, "full", "a" * 64, T0, T0 + 3600, "10.0.0.1", "UA")
    assert store.session_active(sid, uid, T0) and not store.session_active(sid, uid + 1, T0)
    status, s = store.rotate_refresh_token("a" * 64, "b" * 64, T0 + 10)
    assert status == "rotated" and s is not None and s.id == sid and s.last_used_at == T0 + 10
    assert store.rotate_refresh_token("c" * 64, "d" * 64, T0 + 20) == ("unknown", None)
    status, s = store.rotate_refresh_token("a" * 64, "e" * 64, T0 + 30)
    assert status == "reused" and s is not None and s.revoked_reason == "refresh_token_reused"
    assert store.rotate_refresh_token("b" * 64, "f" * 64, T0 + 40) == ("inactive", None)
    assert not store.session_active(sid, uid, T0 + 40)
    # an expired session is inactive too, and is purged with its retired tokens
    other = store.open_session(uid, "full", "g" * 64, T0, T0 + 60)
    assert store.rotate_refresh_token("g" * 64, "h" * 64, T0 + 60) == ("inactive", None)
    assert store.active_sessions(T0 + 59)[0].id == other
    # the retention purge's sign-in class: 90 days after a session ended, by default
    report = run_purge(store, Policy(), T0 + 3600 + 90 * DAY_S)
    assert report.counts["signins"] == 2  # both sessions (their spent tokens go with them)
    assert store.get_session(sid) is None and store.get_session(other) is None


def test_the_store_locks_a_name_from_an_address_and_an_address_after_failures(
    store: Store,
) -> None:
    limits = {"max_failures": 3, "ip_max_failures": 5, "window_s": 100.0, "lockout_s": 50.0}
    for i in range(3):
        _, until = store.begin_login_attempt("op", "10.0.0.1", T0 + i, **limits)
        assert until is None
    _, until = store.begin_login_attempt("op", "10.0.0.2", T0 + 3, **limits)
    assert until is None  # the name is locked from the address that failed, not everywhere
    _, until = store.begin_login_attempt("op", "10.0.0.1", T0 + 3.5, **limits)
    assert until == T0 + 2 + 50  # from the last failure there
    _, until = store.begin_login_attempt("kim", "10.0.0.1", T0 + 4, **limits)
    assert until is None  # the address has 3 failures so far, now 4
    attempt, until = store.begin_login_attempt("lee", "10.0.0.1", T0 + 5, **limits)
    assert until is None
    store.finish_login_attempt(attempt, "ok")  # right password: not a failure
    _, until = store.begin_login_attempt("park", "10.0.0.1", T0 + 6, **limits)
    _, until = store.begin_login_attempt("choi", "10.0.0.1", T0 + 7, **limits)
    assert until == T0 + 6 + 50  # the address is locked...
    _, until = store.begin_login_attempt("lee", "10.0.0.1", T0 + 8, **limits)
    assert until is None  # ...except for a name that signed in from it before
    assert [a["outcome"] for a in store.login_attempts("op")] == ["failed"] * 4 + ["locked"]
    store.unlock_login("op", T0 + 9)  # the control centre lifts the lock on the name
    _, until = store.begin_login_attempt("op", "10.0.0.1", T0 + 10, **limits)
    assert until is None


def test_the_store_accepts_each_totp_step_once(store: Store) -> None:
    uid = _user(store)
    store.save_totp_secret(uid, "v1:sealed", T0)
    assert not store.totp(uid).enabled
    assert not store.use_totp_step(uid, 100, T0)  # not confirmed yet
    assert store.use_totp_step(uid, 100, T0, enable=True)
    assert store.totp(uid).enabled and store.totp(uid).last_step == 100
    assert not store.use_totp_step(uid, 100, T0) and not store.use_totp_step(uid, 99, T0)
    assert store.use_totp_step(uid, 101, T0)
    with pytest.raises(Conflict):
        store.save_totp_secret(uid, "v1:other", T0)
    assert store.delete_totp(uid) and store.totp(uid) is None


def test_the_store_ends_sessions_of_a_disabled_user_and_of_an_ended_order(store: Store) -> None:
    off, vic = store.add_person("offender", "O"), store.add_person("victim", "V")
    order = store.add_order(Order(0, off, vic, valid_from=1.0, valid_until=T0))
    staff = _user(store)
    victim = store.add_user("vic", "not-a-password-hash", "victim", vic)
    s1 = store.open_session(staff, "full", "a" * 64, T0, T0 + 3600)
    s2 = store.open_session(victim, "full", "b" * 64, T0, T0 + 3600)
    assert store.set_user_disabled(staff, True, T0) == 1
    assert not store.session_active(s1, staff, T0)
    assert store.set_user_disabled(staff, False, T0) == 0
    assert not store.session_active(s1, staff, T0)  # re-enabling opens no old session
    assert store.revoke_order_sessions(order, T0) == 1
    assert store.get_session(s2).revoked_reason == "order_ended"
    with pytest.raises(NotFound):
        store.revoke_order_sessions(999, T0)
    with pytest.raises(NotFound):
        store.revoke_session(999, T0, "x")


async def test_a_token_whose_role_or_person_is_not_the_stored_users_is_refused(env: Env) -> None:
    # Whoever can mint tokens (the signing key leaked, a bug in issuing) must still not get
    # a role or a person the user does not have: the session's user is read with the token.
    from bangpae.services.auth import Principal, issue_token, read_token

    mine = await env.tokens("vic")
    who = read_token(mine["access_token"], env.ctx.secret, T0)
    assert who is not None and who.sid is not None
    r = await env.api.get("/api/v1/victim/status", headers=bearer(mine))
    assert r.status_code == 200
    people = env.people
    for role, pid, path in (
        ("supervisor", None, "/api/v1/incidents"),  # a victim's session, a supervisor's role
        ("victim", people["victim2"], "/api/v1/victim/status"),  # another victim's person
    ):
        forged = issue_token(
            Principal(who.user_id, who.username, role, pid, who.sid), env.ctx.secret, T0
        )
        r = await env.api.get(path, headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401, (role, pid, r.text)
