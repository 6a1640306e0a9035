"""Passwords and tokens."""

from __future__ import annotations

import hashlib

import jwt
import pyotp
import pytest

from bangpae.services.auth import (
    Principal,
    WeakPassword,
    check_password,
    hash_password,
    issue_token,
    load_or_create_secret,
    locked_until,
    new_password_hash,
    new_refresh_token,
    new_totp_secret,
    open_secret,
    read_token,
    seal_secret,
    token_hash,
    totp_step,
    totp_uri,
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


def test_a_token_carries_its_session_and_scope() -> None:
    from bangpae.services.auth import SCOPE_ENROL

    who = Principal(7, "op", "operator", None, sid=42, scope=SCOPE_ENROL)
    assert read_token(issue_token(who, KEY, NOW), KEY, NOW) == who
    odd = jwt.encode(
        {"sub": "1", "role": "admin", "exp": NOW + 60, "iat": NOW, "sid": 1, "scope": "root"}, KEY
    )
    assert read_token(odd, KEY, NOW) is None


# -- password policy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short-pw", "at least 12"),
        ("x" * 129, "at most 128"),
        ("operator-kim", "user name"),
        ("OPERATOR-KIM", "user name"),
        ("my-operator-kim-1", "user name"),
        ("password1234", "common"),
        ("qwertyuiop123", "common"),
        ("iloveyou12345", "common"),
        ("passwordpassword", "common"),
        ("aaaaaaaaaaaaaaaa", "common"),
        ("123456789012", "common"),
    ],
)
def test_the_password_policy_refuses_short_long_personal_and_common_passwords(
    password: str, why: str
) -> None:
    with pytest.raises(WeakPassword, match=why):
        check_password(password, "operator-kim")


def test_the_password_policy_accepts_long_unpredictable_passwords() -> None:
    for password in ("a-long-enough-password", "seoul-shield-e2e-2026", "밤하늘의 별을 세는 방패"):
        check_password(password, "operator-kim")
    assert new_password_hash("a-long-enough-password", "kim").startswith("$argon2id$")


# -- refresh tokens, TOTP, sealing -----------------------------------------------------


def test_refresh_tokens_are_256_bit_random_and_stored_as_sha256() -> None:
    a, b = new_refresh_token(), new_refresh_token()
    assert a != b and len(a) >= 43  # 32 bytes, URL-safe base64
    assert token_hash(a) == hashlib.sha256(a.encode()).hexdigest() != token_hash(b)


def test_a_totp_code_matches_its_step_within_one_step_of_drift() -> None:
    secret = new_totp_secret()
    totp = pyotp.TOTP(secret)
    step = int(NOW // 30)
    assert totp_step(secret, totp.at(NOW), NOW) == step
    assert totp_step(secret, totp.at(NOW - 30), NOW) == step - 1
    assert totp_step(secret, totp.at(NOW + 30), NOW) == step + 1
    assert totp_step(secret, totp.at(NOW - 90), NOW) is None
    assert totp_step(secret, "12345", NOW) is None and totp_step(secret, "abcdef", NOW) is None
    uri = totp_uri(secret, "op")
    assert uri.startswith("otpauth://totp/bangpae:op?") and f"secret={secret}" in uri


def test_totp_secrets_are_sealed_and_open_only_with_the_same_key() -> None:
    sealed = seal_secret(KEY, "JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed and sealed != seal_secret(KEY, "JBSWY3DPEHPK3PXP")
    assert open_secret(KEY, sealed) == "JBSWY3DPEHPK3PXP"
    assert open_secret(b"x" * 32, sealed) is None
    assert open_secret(KEY, sealed[:-4] + "AAAA") is None and open_secret(KEY, "v0:x") is None


def test_five_failures_within_the_window_lock_for_the_lockout_after_the_last() -> None:
    assert locked_until([40.0, 30.0, 20.0, 10.0], 5, 900, 900) is None
    assert locked_until([40.0, 30.0, 20.0, 10.0, 0.0], 5, 900, 900) == 940.0
    # spread over more than the window: no lock
    assert locked_until([1000.0, 30.0, 20.0, 10.0, 0.0], 5, 900, 900) is None
