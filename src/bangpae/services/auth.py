"""Passwords (argon2id and a strength policy), bearer tokens (short-lived signed JWTs bound
to a session), refresh tokens, TOTP second factors and sign-in throttling rules.

Nothing here reads a clock or a database: times and stored values are passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import jwt
import pyotp
from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bangpae.domain import disclosure

ROLES = frozenset(disclosure.ROLES)  # the roles of docs/tiers.md
STAFF_ROLES = frozenset({"operator", "supervisor"})
# Roles that must sign in with a TOTP code (when ``require_totp_for_staff`` is on): everyone
# but the parties to an order and field officers. Victims and offenders have no second-factor
# step in their apps; field officers may enrol, and are then asked for a code too.
TOTP_REQUIRED_ROLES = ROLES - {"victim", "offender", "field_officer"}
TOTP_ROLES = ROLES - {"victim", "offender"}  # roles that may enrol at all
# Roles whose sessions are short (one shift): the rest are on phones for weeks.
SHORT_SESSION_ROLES = TOTP_REQUIRED_ROLES
SCOPE_FULL = "full"
SCOPE_ENROL = "totp_enrol"  # a staff member without a second factor may only enrol one
PASSWORD_MIN = 12
PASSWORD_MAX = 128
# argon2id with RFC 9106's low-memory profile (64 MiB, 3 passes, 4 lanes): about 0.15 s
# a hash on the 2-core reference machine. A hash carries its parameters, so one made
# with other parameters still verifies, at its own cost.
PROFILE = profiles.RFC_9106_LOW_MEMORY
_HASHER = PasswordHasher.from_parameters(PROFILE)
# A hash to verify against when the user does not exist, so timing does not tell.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash of a password."""
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether the password matches; spends the same time when there is no hash."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user with a role (and a person, for victims and offenders)."""

    user_id: int
    username: str
    role: str
    person_id: int | None
    sid: int | None = None  # the session the token was issued in
    scope: str = SCOPE_FULL


def issue_token(p: Principal, secret: bytes, now: float, ttl_s: int = 900) -> str:
    """A signed access token for a principal, valid for ``ttl_s`` seconds."""
    claims = {
        "sub": str(p.user_id),
        "name": p.username,
        "role": p.role,
        "pid": p.person_id,
        "sid": p.sid,
        "scope": p.scope,
        "iat": int(now),
        "exp": int(now + ttl_s),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def read_token(token: str, secret: bytes, now: float) -> Principal | None:
    """The principal of a valid, unexpired token; None for anything else."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={
                "require": ["exp", "iat", "sub", "role"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError:
        return None
    # Times are checked against the injected clock, not the library's wall clock.
    if int(claims["exp"]) <= now or int(claims["iat"]) > now + 60 or claims["role"] not in ROLES:
        return None
    pid, sid = claims.get("pid"), claims.get("sid")
    scope = str(claims.get("scope", SCOPE_FULL))
    if scope not in (SCOPE_FULL, SCOPE_ENROL):
        return None
    return Principal(
        int(claims["sub"]),
        str(claims.get("name", "")),
        str(claims["role"]),
        None if pid is None else int(pid),
        None if sid is None else int(sid),
        scope,
    )


def load_or_create_secret(path: Path) -> bytes:
    """The signing key kept at ``path`` (mode 0600), made on first use."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


# -- password policy (OWASP ASVS 4.0 V2.1) ------------------------------------------------


class WeakPassword(ValueError):
    """A password the policy refuses; the message says why, in plain words."""


def check_password(password: str, username: str) -> None:
    """Refuse a password that is too short or long, is the user name, or is easy to guess.

    Guessability is judged offline by zxcvbn: its dictionaries hold the 30,000 most
    common passwords of public breach corpora (with l33t, reversed and repeated forms),
    common words and names. Anything it estimates below 10^8 guesses is refused.
    """
    if len(password) < PASSWORD_MIN:
        raise WeakPassword(f"a password needs at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise WeakPassword(f"a password may have at most {PASSWORD_MAX} characters")
    folded, name = password.casefold(), username.casefold()
    if name and (folded == name or (len(name) >= 4 and name in folded)):
        raise WeakPassword("a password may not contain the user name")
    from zxcvbn import zxcvbn  # its word lists take a moment to load: only when needed

    # zxcvbn's matching grows quadratically; 100 characters are plenty to judge.
    verdict = zxcvbn(password[:100], user_inputs=[username, "bangpae", "방패"])
    if int(verdict["score"]) < 3:
        raise WeakPassword(
            "this password is common or easy to guess (found in breached-password lists "
            "or built from common words): choose a longer, less predictable one"
        )


def new_password_hash(password: str, username: str) -> str:
    """The argon2id hash of a password the policy accepts (:class:`WeakPassword` otherwise)."""
    check_password(password, username)
    return hash_password(password)


# -- refresh tokens ------------------------------------------------------------------------


def new_refresh_token() -> str:
    """A random refresh token (256 bits); only its hash is ever stored."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The SHA-256 of a token, as stored."""
    return hashlib.sha256(token.encode()).hexdigest()


# -- TOTP (RFC 6238: 30 s steps, 6 digits, SHA-1, as authenticator apps expect) ------------

TOTP_STEP_S = 30


def new_totp_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32()


def totp_uri(secret: str, username: str, issuer: str = "bangpae") -> str:
    """The otpauth:// URI an authenticator app reads (usually from a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def totp_step(secret: str, code: str, now: float, drift_steps: int = 1) -> int | None:
    """The time step whose code this is, within ±``drift_steps`` of now; None if none matches.

    The caller accepts a step only if it is newer than the last one accepted, so a code
    can never be used twice.
    """
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now // TOTP_STEP_S)
    for step in range(current + drift_steps, current - drift_steps - 1, -1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _sealing_key(secret: bytes) -> bytes:
    return hmac.new(secret, b"bangpae/totp-secret/v1", hashlib.sha256).digest()


def seal_secret(key: bytes, plaintext: str) -> str:
    """Encrypt a TOTP secret for storage (AES-256-GCM under a key derived from ``key``)."""
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_sealing_key(key)).encrypt(nonce, plaintext.encode(), b"totp")
    return "v1:" + base64.urlsafe_b64encode(nonce + sealed).decode()


def open_secret(key: bytes, stored: str) -> str | None:
    """The TOTP secret sealed by :func:`seal_secret`; None if it cannot be opened."""
    version, _, body = stored.partition(":")
    if version != "v1":
        return None
    try:
        raw = base64.urlsafe_b64decode(body.encode())
        return AESGCM(_sealing_key(key)).decrypt(raw[:12], raw[12:], b"totp").decode()
    except (ValueError, InvalidTag):
        return None


# -- sign-in throttling --------------------------------------------------------------------


def locked_until(
    failures: list[float], max_failures: int, window_s: float, lockout_s: float
) -> float | None:
    """When a lock set by recent failures ends; None if they set none.

    ``failures`` are the times of the latest failures, newest first. ``max_failures`` of
    them within ``window_s`` lock for ``lockout_s`` after the last of them. Attempts refused
    during a lock are not failures, so a lock never extends itself.
    """
    if len(failures) < max_failures:
        return None
    newest, oldest = failures[0], failures[max_failures - 1]
    if newest - oldest > window_s:
        return None
    return newest + lockout_s
