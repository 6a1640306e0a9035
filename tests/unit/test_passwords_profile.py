"""The password and PIN hashes bangpae makes outside the tests: argon2id with RFC 9106's
low-memory profile (the tests use a cheaper one, tests/conftest.py)."""

from __future__ import annotations

from argon2 import PasswordHasher, extract_parameters, profiles

from bangpae.services import auth


def test_bangpae_hashes_with_rfc_9106_low_memory_argon2id() -> None:
    assert auth.PROFILE == profiles.RFC_9106_LOW_MEMORY
    made = PasswordHasher.from_parameters(auth.PROFILE).hash("a-long-enough-password")
    assert made.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert extract_parameters(made) == profiles.RFC_9106_LOW_MEMORY


def test_a_hash_made_with_the_tests_cheap_parameters_still_verifies_at_full_profile() -> None:
    cheap = auth.hash_password("a-long-enough-password")  # the tests' hasher
    assert PasswordHasher.from_parameters(auth.PROFILE).verify(cheap, "a-long-enough-password")
