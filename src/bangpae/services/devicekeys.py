"""Device credentials: long random keys, checked with a keyed fast hash (docs/robustness.md).

A device key is a machine secret, not a password a person remembers: it is random and
long (at least 128 bits), so a slow password hash buys nothing against guessing and
costs the server dearly under a flood of wrong keys. Keys are stored as
``hk1$<HMAC-SHA256(pepper, key)>``, the pepper derived from the server's secret, and
checked in microseconds on the event loop. Hashes from before (argon2id) are checked
once in the bounded password pool and then replaced by the keyed hash.

Every registered device is held in memory (:class:`DeviceKeys`), so a known device is
identified without the database and an unknown identifier costs a dictionary lookup.
:class:`AuthGuard` limits *failing* attempts per source and over all sources; a device
that presents its right key is never refused because its address is shared with a
prober (carrier-grade NAT puts thousands of trackers behind one address).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from bangpae.domain.model import DeviceCredential
from bangpae.services.passwords import PoolBusy
from bangpae.services.ratelimit import FailureLimiter, source_key

KEY_PREFIX = "hk1$"
# The same keyed hash of a key from before that is too short to be a machine secret (12
# characters were enough then): checked fast, but only within the failure limits.
WEAK_PREFIX = "hk1w$"
KEY_BYTES = 24  # a server-made key: 192 bits, 32 URL-safe characters
MIN_KEY_CHARS = 22  # a supplied key: at least 22 characters (128 bits as URL-safe base64)
MAX_KEY_CHARS = 128
CATCH_UP_S = 1.0  # how often a miss may read devices registered by another process


class DeviceCredentials(Protocol):
    """What the device keys read and upgrade in the store (``adapters.store.registry``)."""

    def device_credentials(self, after_id: int = 0) -> list[DeviceCredential]:
        """Every device's id, identifier, key hash, CRC leniency and registration time
        (the listeners' registry); ``after_id``: only devices registered after that one."""
        ...

    def device_credential(self, identifier: str) -> DeviceCredential | None:
        """One device's credentials by its exact identifier."""
        ...

    def set_device_secret_hash(self, device_id: int, secret_hash: str) -> None:
        """Replace a device's stored key hash (a legacy hash upgraded after a good check)."""
        ...


class WeakKey(ValueError):
    """A supplied device key too short to be a machine secret."""


def new_key() -> str:
    """A fresh random device key (shown once, at registration)."""
    return secrets.token_urlsafe(KEY_BYTES)


def check_key_strength(key: str) -> None:
    """Refuse a supplied key that is too short, or made of too few distinct characters."""
    if not MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS:
        raise WeakKey(
            f"a device key must be {MIN_KEY_CHARS} to {MAX_KEY_CHARS} characters "
            "(leave it out and the server makes a random one)"
        )
    if len(set(key)) < 10:
        raise WeakKey("a device key must be random: this one repeats too few characters")


def pepper_from(secret: bytes) -> bytes:
    """The keyed hash's key, derived from the server's secret (a leaked database alone
    does not let anyone test guesses offline)."""
    return hmac.new(secret, b"bangpae device keys v1", hashlib.sha256).digest()


def key_hash(pepper: bytes, key: str, prefix: str = KEY_PREFIX) -> str:
    """What is stored for a key."""
    return prefix + hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def is_strong(key: str) -> bool:
    """Whether a key would be accepted today (:func:`check_key_strength`)."""
    try:
        check_key_strength(key)
    except WeakKey:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Known:
    """A registered device as the listeners need it."""

    device_id: int
    identifier: str
    secret: str | None  # the stored key hash; None: identified by its identifier alone
    lenient_crc: bool = False
    registered_at: float | None = None  # fixes from before then are refused


# Why a device was refused (reason labels of the listeners' metrics).
UNKNOWN, NO_KEY, BAD_KEY, LIMITED = "unknown_device", "no_key", "bad_key", "rate_limited"


class AuthGuard:
    """Limits on failed device identification: per source, and over all sources.

    Only attempts that are about to cost something (a database lookup for an identifier
    not in memory, a legacy slow hash) or that failed are counted and refused; a device
    whose key checks out passes whatever its address did.
    """

    def __init__(
        self,
        per_source: int = 20,
        window_s: float = 60.0,
        global_failures: int = 2000,
    ) -> None:
        self.sources = FailureLimiter(per_source, window_s)
        self.everyone = FailureLimiter(global_failures, window_s, max_sources=1)
        self.refused = 0  # attempts refused by a limit (for metrics)

    def blocked(self, source: str, now: float) -> bool:
        """Whether a costly or failing attempt from this source is refused now (an IPv6
        source counted by its /64)."""
        key = source_key(source)
        return self.sources.blocked(key, now) or self.everyone.blocked("*", now)

    def failed(self, source: str, now: float) -> None:
        """Count one failure. A source counts towards the limit over all sources only up
        to its own limit: one address alone cannot refuse everyone."""
        key = source_key(source)
        if not self.sources.blocked(key, now):
            self.everyone.failed("*", now)
        self.sources.failed(key, now)


class DeviceKeys:
    """Every registered device in memory, and the check of a presented key.

    ``store`` gives ``device_credentials()``, ``get_device``, ``device_credential`` and
    ``set_device_secret_hash``; ``verify_slow`` runs a legacy password-hash check in the
    bounded password pool (it may raise when that pool is full); ``allow_keyless`` says
    whether a device registered without a key may report (the operator's setting, read
    at each check). Listeners do not call it: they ask the device gate
    (:mod:`bangpae.services.devices`), which reads the registry and checks keys here.
    """

    def __init__(
        self,
        store: DeviceCredentials,
        pepper: bytes,
        verify_slow: Callable[[str, str], Awaitable[bool]],
        allow_keyless: Callable[[], bool] = lambda: False,
        guard: AuthGuard | None = None,
    ) -> None:
        self.store = store
        self.pepper = pepper
        self.verify_slow = verify_slow
        self.allow_keyless = allow_keyless
        self.guard = guard or AuthGuard()
        self._by_identifier: dict[str, Known] = {}
        self._max_id = 0  # the newest device read from the store
        self._caught_up = float("-inf")  # when (monotonic) devices were last read anew

    def load(self) -> None:
        """Read every device (at start; blocking)."""
        self._by_identifier = {}
        self._add(self.store.device_credentials())

    async def catch_up(self) -> None:
        """Read devices registered since the last read, at most once per ``CATCH_UP_S``."""
        t = time.monotonic()
        if t - self._caught_up < CATCH_UP_S:
            return
        self._caught_up = t
        rows = await asyncio.to_thread(self.store.device_credentials, self._max_id)
        self._add(rows)

    def _add(self, rows: list[DeviceCredential]) -> None:
        for r in rows:
            self._by_identifier[r[1]] = Known(*r)
            self._max_id = max(self._max_id, r[0])

    def remember(self, known: Known) -> None:
        """A device registered or changed in this process."""
        self._by_identifier[known.identifier] = known

    def known(self, identifier: str) -> Known | None:
        """From memory only."""
        return self._by_identifier.get(identifier)

    def hash_new(self, key: str) -> str:
        """The stored form of a new key."""
        return key_hash(self.pepper, key)

    async def registered(self, identifier: str) -> Known | None:
        """From memory (caught up at most once a second): no lookup per identifier."""
        hit = self._by_identifier.get(identifier)
        if hit is None:
            await self.catch_up()
            hit = self._by_identifier.get(identifier)
        return hit

    async def find(self, identifier: str) -> Known | None:
        """From memory, else from the store (no limits: the caller applies its own)."""
        hit = self._by_identifier.get(identifier)
        if hit is not None:
            return hit
        row = await asyncio.to_thread(self.store.device_credential, identifier)
        if row is None:
            return None
        found = Known(*row)
        self._by_identifier[identifier] = found
        return found

    async def check(self, known: Known, key: str | None, source: str, now: float) -> str | None:
        """None when ``key`` opens ``known``; else the refusal reason (failures counted)."""
        secret = known.secret
        if secret is None:
            if self.allow_keyless():
                return None
            return self.refuse(source, now, NO_KEY)
        if key and secret.startswith(WEAK_PREFIX):
            # a short key from before: guessing it is not hopeless, so it is checked only
            # within the failure limits (a refused source's right guess is not tried)
            if self.guard.blocked(source, now):
                self.guard.refused += 1
                return LIMITED
            if hmac.compare_digest(secret, key_hash(self.pepper, key, WEAK_PREFIX)):
                return None
        elif key and secret.startswith(KEY_PREFIX):
            if hmac.compare_digest(secret, key_hash(self.pepper, key)):
                return None
        elif key:  # a hash from before keyed hashing: slow, so only within the limits
            if self.guard.blocked(source, now):
                self.guard.refused += 1
                return LIMITED
            try:
                ok = await self.verify_slow(secret, key)
            except PoolBusy:
                self.guard.refused += 1
                return LIMITED
            if ok:
                prefix = KEY_PREFIX if is_strong(key) else WEAK_PREFIX
                upgraded_hash = key_hash(self.pepper, key, prefix)
                upgraded = replace(known, secret=upgraded_hash)
                await asyncio.to_thread(
                    self.store.set_device_secret_hash, known.device_id, upgraded_hash
                )
                self._by_identifier[known.identifier] = upgraded
                return None
        return self.refuse(source, now, BAD_KEY)

    def refuse(self, source: str, now: float, reason: str) -> str:
        """A registered device refused: the failure counted, or, from a source already
        refused, the answer an unknown identifier gets there (a refused source cannot tell
        registered identifiers from unknown ones)."""
        if self.guard.blocked(source, now):
            self.guard.refused += 1
            return LIMITED
        self.guard.failed(source, now)
        return reason
