"""Outbound channels: a signed webhook, and log sinks standing in for e-mail, SMS and voice.

Texts to her phone go over SMPP when ``BANGPAE_SMS_URL`` names an SMSC
(:mod:`bangpae.adapters.sms`); without one, :class:`LogGateway` stays the SMS gateway.

A log sink records that a message was due and how long it was, never what it said:
a case summary holds both parties' names and exact positions and the live link, and
the log is read by many more people than the police (docs/robustness.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import httpx

from bangpae.domain.notices import Notice
from bangpae.services.handoffs import Delivery

log = logging.getLogger("bangpae.handoff")
SIGNATURE_HEADER = "X-Bangpae-Signature"


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the raw body under the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """Whether a signature header matches the body (constant-time)."""
    return hmac.compare_digest(sign(secret, body), header)


class WebhookChannel:
    """POSTs the case summary as JSON, signed; any 2xx reply is a delivery."""

    def __init__(self, url: str, secret: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s

    async def send(self, handoff_id: int, attempt: int, body: bytes) -> Delivery:
        """One signed POST of ``body``."""
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body),
            "X-Bangpae-Handoff": str(handoff_id),
            "X-Bangpae-Attempt": str(attempt),
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                r = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Delivery("failed", None, f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= r.status_code < 300:
            return Delivery("delivered", r.status_code)
        return Delivery("failed", r.status_code, r.text[:500])


class LogChannel:
    """Records in the log that a hand-off was due on this channel (no gateway yet)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def send(self, handoff_id: int, attempt: int, body: bytes) -> Delivery:
        """Log the hand-off id, the attempt and the summary's size; always ``logged``."""
        log.warning(
            "hand-off %d via %s (attempt %d): %d bytes, not sent: no %s gateway",
            handoff_id,
            self.name,
            attempt,
            len(body),
            self.name,
        )
        return Delivery("logged")


def mask_phone(phone: str) -> str:
    """A phone number with all but its last 4 digits hidden (logs are read by many)."""
    return "*" * max(len(phone) - 4, 0) + phone[-4:]


class LogGateway:
    """The SMS/voice gateway when no SMSC is configured: records in the log that a
    message was due (``BANGPAE_SMS_URL`` unset, docs/sms.md)."""

    def __init__(self, kind: str = "sms") -> None:
        self.kind = kind

    async def send(self, phone: str, text: str, notice: Notice | None = None) -> str:
        """Log the number masked and the message's length; always ``logged``."""
        log.warning(
            "%s to %s: %d characters, not sent: no gateway", self.kind, mask_phone(phone), len(text)
        )
        return "logged"
