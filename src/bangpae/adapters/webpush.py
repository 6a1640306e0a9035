"""Web Push (RFC 8030, payloads encrypted per RFC 8291, VAPID per RFC 8292) with pywebpush.

The VAPID key pair is made on first start and kept in the data directory (mode
0600); browsers subscribe with its public half (``applicationServerKey``).

The server POSTs to endpoints that browsers hand it, so an endpoint is accepted
only on an allowed host (the push services of the major browsers by default):
otherwise a subscription would make the server a proxy into its own network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02, b64urlencode
from pywebpush import WebPushException, webpush

from bangpae.domain.notices import Notice

log = logging.getLogger("bangpae.push")

PUSH_TTL_S = 3600  # a notice older than an hour is no news: the push service may drop it


def load_or_create_vapid(path: Path) -> Vapid02:
    """The VAPID key pair kept at ``path`` (PEM, mode 0600), made on first use."""
    if path.exists():
        return Vapid02.from_file(str(path))
    vapid = Vapid02()
    vapid.generate_keys()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(vapid.private_pem())
    return vapid


def application_server_key(vapid: Vapid02) -> str:
    """The public key as browsers take it: the uncompressed point, base64url."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return str(b64urlencode(raw))


def endpoint_allowed(endpoint: str, allowed_hosts: Iterable[str]) -> bool:
    """Whether the server may POST to ``endpoint``: https on an allowed host.

    A pattern ``*.example.com`` allows any subdomain; ``http`` is allowed only for
    a loopback host named in the list (a push service run for tests).
    """
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if not host or parts.username or parts.password:
        return False
    for pattern in allowed_hosts:
        p = pattern.lower()
        match = host.endswith(p[1:]) if p.startswith("*.") else host == p
        if not match:
            continue
        if parts.scheme == "https":
            return True
        return parts.scheme == "http" and host in ("127.0.0.1", "localhost", "::1")
    return False


def payload(notice: Notice, lang: str) -> str:
    """What the service worker receives: a title, the body in the browser's language, a tag.

    The tag is per order, so a newer notice replaces an older one on the lock screen.
    """
    body = notice.text.en if lang == "en" else notice.text.ko
    title = "bangpae" if lang == "en" else "방패"
    tag = f"bangpae-order-{notice.order_id}" if notice.order_id else f"bangpae-{notice.kind}"
    return json.dumps(
        {
            "title": title,
            "body": body,
            "tag": tag,
            "kind": notice.kind,
            "priority": notice.priority,
            "order_id": notice.order_id,
        },
        ensure_ascii=False,
    )


class PushChannel:
    """Delivers notices to every browser subscribed by the victim or the staff role."""

    name = "push"

    def __init__(
        self,
        store: Any,
        clock: Any,
        vapid: Vapid02,
        subject: str,
        allowed_hosts: Iterable[str],
        timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.vapid = vapid
        self.subject = subject
        self.allowed_hosts = tuple(allowed_hosts)
        self.timeout_s = timeout_s

    def _send(self, target: Any, data: str) -> tuple[bool, int | None, str]:
        try:
            webpush(
                {
                    "endpoint": target.endpoint,
                    "keys": {"p256dh": target.p256dh, "auth": target.auth},
                },
                data,
                vapid_private_key=self.vapid,
                vapid_claims={"sub": self.subject},
                timeout=self.timeout_s,
                ttl=PUSH_TTL_S,
                headers={"Urgency": "high"},
            )
        except WebPushException as exc:
            status = exc.response.status_code if exc.response is not None else None
            return False, status, str(exc).splitlines()[0][:200]
        except (
            OSError,
            ValueError,
        ) as exc:  # unreachable service (requests errors are OSError), bad key
            # the name alone: requests quotes the endpoint, whose path is the browser's
            # subscription, and this goes to the log
            return False, None, type(exc).__name__
        return True, None, ""

    async def deliver_all(self, batch: Sequence[Notice]) -> list[str]:
        """Push each notice to every subscribed browser (``sent k/n`` or ``no subscription``);
        the browsers of the whole round are read in one query."""
        targets = await asyncio.to_thread(
            self.store.push_targets_of,
            [n.person_id for n in batch if n.audience == "victim" and n.person_id is not None],
            [n.role for n in batch if n.audience != "victim" and n.role is not None],
        )
        out = []
        for notice in batch:
            key: tuple[str, int | str] = (
                ("person", notice.person_id or -1)
                if notice.audience == "victim"
                else ("role", notice.role or "")
            )
            out.append(await self._push(notice, targets.get(key, [])))
        return out

    async def _push(self, notice: Notice, targets: Sequence[Any]) -> str:
        if not targets:
            return "no subscription"
        sent = 0
        for t in targets:
            if not endpoint_allowed(t.endpoint, self.allowed_hosts):
                await asyncio.to_thread(self.store.drop_push_subscription, t.id)
                continue
            ok, status, error = await asyncio.to_thread(self._send, t, payload(notice, t.lang))
            now = self.clock.now()
            if ok:
                sent += 1
                await asyncio.to_thread(self.store.push_result, t.id, True, now)
            elif status in (404, 410):  # the browser unsubscribed: forget it
                log.info("push subscription %d is gone (%s)", t.id, status)
                await asyncio.to_thread(self.store.drop_push_subscription, t.id)
            else:
                log.warning("push to subscription %d failed: %s", t.id, error)
                await asyncio.to_thread(self.store.push_result, t.id, False, now)
        return f"sent {sent}/{len(targets)}"
