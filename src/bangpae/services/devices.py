"""The device gate: who a device is, answered in one place for every way in.

Every listener asks :meth:`DeviceGate.admit` with its protocol's name, the identifier
the device gave, the secret it presented (if its protocol carries one) and the peer's
address, and gets the registered device or a :class:`Refused` with its reason. Each
listener words the reason as its protocol does (device firmware depends on the status
codes). How each protocol identifies its devices is written once, in ``PROTOCOLS``.

Only unknown identifiers and wrong keys count against a source
(:class:`~bangpae.services.devicekeys.AuthGuard`); from a source refused for failures,
devices are found in the registry in memory alone, never by a lookup per identifier,
so the registered devices behind its address keep reporting (docs/robustness.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from bangpae.services.devicekeys import (
    BAD_KEY,
    LIMITED,
    NO_KEY,
    UNKNOWN,
    AuthGuard,
    DeviceKeys,
    Known,
)

__all__ = ["BAD_KEY", "LIMITED", "NO_KEY", "UNKNOWN", "DeviceGate", "Known", "Refused"]


class Key(Enum):
    """What a protocol's device must present besides its identifier."""

    NONE = "none"  # nothing: the channel authenticated it (MQTT), or nothing can (an IMEI)
    SETTING = "setting"  # its key if it has one; a keyless one as the operator allows
    ALWAYS = "always"  # its key, always


PROTOCOLS: dict[str, Key] = {
    "osmand": Key.SETTING,
    "owntracks": Key.SETTING,  # over HTTP: the key is the Basic password
    "owntracks_mqtt": Key.NONE,  # the broker authenticated the client
    "api": Key.ALWAYS,  # POST /api/v1/fixes
    "gt06": Key.NONE,
    "h02": Key.NONE,
}


@dataclass(frozen=True, slots=True)
class Refused:
    """A device not let in, and why (``UNKNOWN``, ``NO_KEY``, ``BAD_KEY``, ``LIMITED``)."""

    reason: str


_REFUSED = {r: Refused(r) for r in (UNKNOWN, NO_KEY, BAD_KEY, LIMITED)}


class Directory(Protocol):
    """Where the gate finds registered devices: this process's registry, or the main
    process's (for an intake worker)."""

    async def find(self, identifier: str) -> Known | None:
        """From memory, else by a lookup in the store."""
        ...

    async def registered(self, identifier: str) -> Known | None:
        """From the registry in memory alone (caught up at most once a second)."""
        ...


class DeviceGate:
    """Identifies and authenticates devices within the failure limits.

    ``keys`` checks presented keys (None where no protocol carries one: the TCP
    listeners); ``failure_delay`` is how long an HTTP refusal waits before it is sent.
    """

    def __init__(
        self,
        directory: Directory,
        guard: AuthGuard,
        keys: DeviceKeys | None = None,
        failure_delay: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.directory = directory
        self.guard = guard
        self.keys = keys
        self.failure_delay = failure_delay

    @classmethod
    def of(cls, keys: DeviceKeys, failure_delay: Callable[[], float]) -> DeviceGate:
        """The gate of the main process: its registry, its limits and its key checks."""
        return cls(keys, keys.guard, keys, failure_delay)

    async def admit(
        self, protocol: str, identifier: str, secret: str | None, source: str, now: float
    ) -> Known | Refused:
        """The device if it may report over ``protocol``; else why not (failures counted)."""
        rule = PROTOCOLS[protocol]
        found = await self._identify(identifier, source, now)
        if isinstance(found, Refused) or rule is Key.NONE:
            return found
        assert self.keys is not None, f"{protocol} devices present keys: the gate needs them"
        if rule is Key.ALWAYS and found.secret is None:
            return _REFUSED[self.keys.refuse(source, now, NO_KEY)]
        reason = await self.keys.check(found, secret, source, now)
        return found if reason is None else _REFUSED[reason]

    async def _identify(self, identifier: str, source: str, now: float) -> Known | Refused:
        if self.guard.blocked(source, now):
            # a device registered by another process since: caught up at most once a
            # second, so a blocked prober's unknown identifiers cost no lookup each
            hit = await self.directory.registered(identifier)
            if hit is not None:
                return hit
            self.guard.refused += 1
            return _REFUSED[LIMITED]
        found = await self.directory.find(identifier)
        if found is None:
            self.guard.failed(source, now)
            return _REFUSED[UNKNOWN]
        return found

    def failed(self, source: str, now: float) -> None:
        """Count a refusal the listener decided (a frame naming no device, or another one)."""
        self.guard.failed(source, now)

    async def delay_refusal(self) -> None:
        """Wait before answering a refusal: a prober that waits for its answers (as an HTTP
        client on one connection must) gets one guess per delay, and the server's loop
        spends its time on the devices and people it serves (docs/robustness.md)."""
        delay = self.failure_delay()
        if delay > 0:
            await asyncio.sleep(delay)
