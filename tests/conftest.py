"""Shared fixtures: a database URL for each real backend the store supports."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN = os.environ.get(
    "BANGPAE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def services_required() -> bool:
    """CI sets BANGPAE_REQUIRE_SERVICES=1: a missing server is then a failure, not a skip."""
    return os.environ.get("BANGPAE_REQUIRE_SERVICES") == "1"


def need_service(reason: str) -> None:
    """Skip (locally) or fail (in CI) when a server the test needs is absent."""
    if services_required():
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    try:
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"bangpae_test_{secrets.token_hex(4)}"
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - no server or no driver: say which
        need_service(f"PostgreSQL not reachable at {PG_ADMIN}: {exc.__class__.__name__}")
        return
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated-from-scratch database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    base: str = request.getfixturevalue("postgres_url")
    # Each test gets its own schema-free database state: truncate everything first.
    from sqlalchemy import create_engine, inspect, text

    eng = create_engine(base)
    with eng.begin() as c:
        tables = [t for t in inspect(c).get_table_names() if t != "alembic_version"]
        if tables:
            c.execute(
                text(
                    "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
                )
            )
    eng.dispose()
    return base
