"""Passwords and tokens."""

from __future__ import annotations

import jwt

from bangpae.services.auth import (
    Principal,
    hash_password,
    issue_token,
    load_or_create_secret,
    read_token,
    verify_password,
)

KEY = b"k" * 32
NOW = 1_800_000_000.0
WHO = Principal(7, "op", "operator", None)


def test_passwords_are_argon2id_and_verify() -> None:
    h = hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "correct horse") and not verify_password(h, "wrong")
    assert not verify_password(None, "anything")


def test_a_token_reads_back_until_it_expires() -> None:
    token = issue_token(WHO, KEY, NOW, ttl_s=900)
    assert read_token(token, KEY, NOW + 899) == WHO
    assert read_token(token, KEY, NOW + 900) is None


def test_forged_or_foreign_tokens_are_refused() -> None:
    token = issue_token(WHO, KEY, NOW)
    assert read_token(token, b"x" * 32, NOW) is None
    assert read_token(token[:-2] + "AA", KEY, NOW) is None
    none_alg = jwt.encode(
        {"sub": "1", "role": "admin", "exp": NOW + 60, "iat": NOW}, key=None, algorithm="none"
    )
    assert read_token(none_alg, KEY, NOW) is None
    unknown_role = jwt.encode({"sub": "1", "role": "root", "exp": NOW + 60, "iat": NOW}, KEY)
    assert read_token(unknown_role, KEY, NOW) is None


def test_the_signing_key_is_made_once_and_kept_private(tmp_path) -> None:
    path = tmp_path / "secret.key"
    key = load_or_create_secret(path)
    assert load_or_create_secret(path) == key and len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
