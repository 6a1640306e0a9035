"""People's passwords are checked in a pool of their own (docs/robustness.md).

An argon2id check takes about 0.4 s of both cores and 64 MiB by design. Run in the
thread pool every store call uses, a handful of sign-in attempts would keep the
victims' status reads waiting. Here they run in one small pool with a short queue:
when it is full, the attempt is refused at once ("busy, retry") instead of queueing
without end, and nothing else in the process waits on it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bangpae.services.auth import verify_password

T = TypeVar("T")


class PoolBusy(Exception):
    """The password pool's queue is full: refuse and let the caller retry."""


class PasswordPool:
    """``workers`` threads and at most ``queue`` waiting calls, of which at most
    ``device_slots`` are checks of old-style device keys."""

    def __init__(self, workers: int = 1, queue: int = 8, device_slots: int = 1) -> None:
        self.workers = workers
        self.slots = workers + queue
        self.device_slots = device_slots
        self.in_flight = 0
        self.devices_in_flight = 0
        self.refused = 0  # calls refused because the pool was full (for metrics)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bangpae-pw")

    def full(self) -> bool:
        """Whether a call now would be refused."""
        return self.in_flight >= self.slots

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in the pool; raises :class:`PoolBusy` when it is full."""
        if self.full():
            self.refused += 1
            raise PoolBusy("too many sign-ins at once: retry in a moment")
        self.in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        finally:
            self.in_flight -= 1

    async def verify(self, password_hash: str, password: str) -> bool:
        """An argon2id check in the pool."""
        return await self.run(verify_password, password_hash, password)

    async def verify_device(self, key_hash: str, key: str) -> bool:
        """An old-style (argon2id) device key check, at most ``device_slots`` at once:
        anyone may present a key for a device's identifier, and those checks must not
        fill the pool people sign in through."""
        if self.devices_in_flight >= self.device_slots:
            self.refused += 1
            raise PoolBusy("an old device key is being checked: retry in a moment")
        self.devices_in_flight += 1
        try:
            return await self.verify(key_hash, key)
        finally:
            self.devices_in_flight -= 1

    def close(self) -> None:
        """Stop the threads (waiting calls finish first). The pool stays usable: a context
        stopped and started again (the API's fuzz tests do) gets new threads on demand."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        # an executor starts its threads at its first call: this one holds none until then
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="bangpae-pw"
        )
