"""Accounts as the store keeps them: a user, a second factor, a signed-in session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# What exchanging a refresh token did (see the store's ``rotate_refresh_token``).
RefreshStatus = Literal["rotated", "reused", "inactive", "unknown"]


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A login account."""

    id: int
    username: str
    password_hash: str
    role: str
    person_id: int | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class TotpRecord:
    """A user's TOTP second factor: the sealed secret, and whether it is confirmed."""

    user_id: int
    sealed_secret: str
    enabled_at: float | None
    last_step: int | None

    @property
    def enabled(self) -> bool:
        """Whether sign-in asks for a code."""
        return self.enabled_at is not None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A signed-in session, as the admin view shows it."""

    id: int
    user_id: int
    username: str
    role: str
    person_id: int | None
    scope: str
    created_at: float
    last_used_at: float
    expires_at: float
    revoked_at: float | None
    revoked_reason: str | None
    ip: str | None
    user_agent: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON for the admin view (no token material: there is none to give)."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "username": self.username,
            "role": self.role,
            "scope": self.scope,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "revoked_reason": self.revoked_reason,
            "ip": self.ip,
            "user_agent": self.user_agent,
        }
