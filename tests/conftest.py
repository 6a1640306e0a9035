"""Shared helpers: tests that need a server skip locally, and fail in CI, when it is absent."""

from __future__ import annotations

import os

import pytest

# Examples per decoder fuzz test: 1,000 in every run; `make fuzz` asks for millions.
FUZZ_EXAMPLES = int(os.environ.get("BANGPAE_FUZZ_EXAMPLES", "1000"))


def pytest_configure(config: pytest.Config) -> None:
    """Staff sign in with a password alone here (tests of TOTP turn it on themselves).

    The setting defaults to on; servers the e2e tests start inherit this environment.
    """
    os.environ.setdefault("BANGPAE_REQUIRE_TOTP_FOR_STAFF", "false")
    # Most tests register trackers without keys; the tests of keys turn this off.
    os.environ.setdefault("BANGPAE_ALLOW_KEYLESS_DEVICES", "true")
    # Refused device identifications are answered at once (the delay has its own test).
    os.environ.setdefault("BANGPAE_DEVICE_FAILURE_DELAY_S", "0")
    # PIN answers wait 50 ms after the check, not 500 (the wait has its own test,
    # tests/integration/test_redteam_pins3.py, at the production value).
    os.environ.setdefault("BANGPAE_PIN_ANSWER_FLOOR_S", "0.05")
    _cheap_passwords()


def _cheap_passwords() -> None:
    """The tests' own password and PIN hashes at argon2id's cheapest (1 pass, 1 MiB):
    about 1 ms instead of 150. A hash carries its parameters, so servers the tests start
    verify these as cheaply, and what is checked (a hash, never the password; the same
    work whichever PIN) is unchanged. The production profile has its own test
    (tests/unit/test_passwords_profile.py)."""
    from argon2 import PasswordHasher

    from bangpae.services import auth

    auth._HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    auth._DUMMY_HASH = auth._HASHER.hash("not anyone's password")


def services_required() -> bool:
    """CI sets BANGPAE_REQUIRE_SERVICES=1: a missing server is then a failure, not a skip."""
    return os.environ.get("BANGPAE_REQUIRE_SERVICES") == "1"


def need_service(reason: str) -> None:
    """Skip (locally) or fail (in CI) when a server the test needs is absent."""
    if services_required():
        pytest.fail(f"required service unavailable: {reason}", pytrace=False)
    pytest.skip(reason)
