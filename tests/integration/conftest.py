"""Shared fixtures: a database URL for each real backend the store supports.

PostgreSQL: one fresh database per test session (dropped afterwards), and a fresh,
empty schema per test inside it, so every test migrates from nothing and sees only
its own rows. Without a server the PostgreSQL cases skip with the reason, unless
BANGPAE_REQUIRE_SERVICES=1, when they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from bangpae.adapters.store import Store
from bangpae.domain.model import Order
from bangpae.services.auth import Principal, issue_token, new_refresh_token, token_hash
from tests.conftest import need_service

PG_ADMIN_URL = os.environ.get(
    "BANGPAE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    try:
        import psycopg  # noqa: F401 - only to tell a missing driver from a missing server
    except ImportError:
        need_service("PostgreSQL driver psycopg is not installed")
    admin = create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"bangpae_test_{secrets.token_hex(4)}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))  # generated name: nothing to quote
    except (OperationalError, InterfaceError) as exc:
        admin.dispose()
        need_service(f"PostgreSQL not reachable at {make_url(PG_ADMIN_URL)!r}: {exc.orig}")
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections work in a new, empty schema of the session's database."""
    schema = f"t_{secrets.token_hex(6)}"
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend (SQLite in a temporary file)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bangpae.sqlite'}"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A migrated store on each backend, with an audit key of its own."""
    s = Store(database_url, audit_key=secrets.token_bytes(32))
    s.migrate()
    yield s
    s.close()


@dataclass(frozen=True)
class Case:
    """One protective order: an offender with an ankle monitor, a victim with a phone."""

    offender: int
    victim: int
    ankle: int
    phone: int
    order: int


def make_case(store: Store, suffix: str = "") -> Case:
    """Register an offender, a victim, their devices and an order between them."""
    off = store.add_person("offender", f"Offender{suffix}")
    vic = store.add_person("victim", f"Victim{suffix}")
    ankle = store.add_device(f"ANKLE{suffix}", "ankle_monitor", "osmand", off)
    phone = store.add_device(f"PHONE{suffix}", "phone", "osmand", vic)
    order = store.add_order(Order(0, off, vic, valid_from=1.0))
    return Case(off, vic, ankle, phone, order)


@pytest.fixture
def case(store: Store) -> Case:
    """One order with both parties' devices, in the test's store."""
    return make_case(store)


def signed_in(
    store: Store,
    secret: bytes,
    users: Iterable[tuple[str, str, int | None]],
    at: float,
    ttl_s: int = 3600,
) -> dict[str, dict[str, str]]:
    """Bearer headers for new users (name, role, person), each with an open session.

    Tokens are issued directly: signing in is tested on its own, and is slow on purpose.
    """
    headers = {}
    for user, role, pid in users:
        uid = store.add_user(user, "not-a-password-hash", role, pid)
        sid = store.open_session(uid, "full", token_hash(new_refresh_token()), at, at + 86400)
        token = issue_token(Principal(uid, user, role, pid, sid), secret, at, ttl_s=ttl_s)
        headers[user] = {"Authorization": f"Bearer {token}"}
    return headers
