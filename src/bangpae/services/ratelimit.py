"""Per-source limits on failed device identification (unknown ids, wrong keys).

A source that fails more than ``max_failures`` times within ``window_s`` is
refused outright until its failures age out: probing for valid identifiers
costs the prober, not the store. Time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from typing import Any


class FailureLimiter:
    """Sliding-window count of failures per source address."""

    def __init__(self, max_failures: int = 20, window_s: float = 60.0, max_sources: int = 100_000):
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_sources = max_sources
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, source: str, now: float) -> deque[float] | None:
        q = self._failures.get(source)
        if q is None:
            return None
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._failures[source]
            return None
        return q

    def blocked(self, source: str, now: float) -> bool:
        """Whether this source has failed too often lately."""
        q = self._recent(source, now)
        return q is not None and len(q) >= self.max_failures

    def failed(self, source: str, now: float) -> None:
        """Record one failed identification from this source."""
        if len(self._failures) >= self.max_sources and source not in self._failures:
            # Bounded memory under a spray of sources: forget the oldest entry.
            self._failures.pop(next(iter(self._failures)))
        q = self._recent(source, now) or self._failures.setdefault(source, deque())
        self._failures[source] = q
        q.append(now)


class RateLimiter(FailureLimiter):
    """Sliding-window count of requests per key: at most ``max_failures`` per ``window_s``."""

    def allow(self, key: str, now: float) -> bool:
        """Count one request for ``key``; False (and not counted) when over the limit."""
        if self.blocked(key, now):
            return False
        self.failed(key, now)
        return True

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may send again (0 when it may now)."""
        q = self._recent(key, now)
        if q is None or len(q) < self.max_failures:
            return 0.0
        return max(q[0] + self.window_s - now, 0.0)


def source_key(host: str) -> str:
    """What a per-address limit counts by: an IPv4 address (also when IPv4-mapped), or an
    IPv6 address's /64, the least a subscriber is given (one host may use them all)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.IPv6Network((int(ip) >> 64 << 64, 64))}"
    return str(ip)


def source_allowed(source: str, networks: list[Any]) -> bool:
    """Whether a device may connect from this address (no networks: any address)."""
    if not networks:
        return True
    try:
        addr = ipaddress.ip_address(source)
    except ValueError:
        return False
    return any(addr in net for net in networks)
