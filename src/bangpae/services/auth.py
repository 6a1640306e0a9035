"""Passwords (argon2id) and bearer tokens (short-lived signed JWTs)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bangpae.domain import disclosure

ROLES = frozenset(disclosure.ROLES)  # the roles of DESIGN §1
STAFF_ROLES = frozenset({"operator", "supervisor"})
_HASHER = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile
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


def issue_token(p: Principal, secret: bytes, now: float, ttl_s: int = 900) -> str:
    """A signed access token for a principal, valid for ``ttl_s`` seconds."""
    claims = {
        "sub": str(p.user_id),
        "name": p.username,
        "role": p.role,
        "pid": p.person_id,
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
    pid = claims.get("pid")
    return Principal(
        int(claims["sub"]),
        str(claims.get("name", "")),
        str(claims["role"]),
        None if pid is None else int(pid),
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
