"""Connection budgets: how many connections each listener may hold, in all and per address.

Every connection holds a file descriptor from accept to close, and a process has a
fixed number of them: connections that never finish a request would otherwise take
them all, and with them the database, the other listeners and the logs. Each
listener (api, osmand, gt06, h02) has a budget of its own, so a flood against one
leaves the others serving; within it one address (an IPv6 /64) may hold only so
many, so one source cannot take the whole budget. A connection over either cap is
closed as soon as it is accepted, and counted (docs/robustness.md). Deadlines
(here the TCP listeners' :class:`IdleWatch`; the HTTP listeners' in http_guard)
bound how long an admitted connection may hold its place while saying too little.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import resource
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bangpae.services.ratelimit import source_key

log = logging.getLogger(__name__)

LISTENERS = ("api", "osmand", "gt06", "h02")
HTTP_LISTENERS = ("api", "osmand")  # the ones a reverse proxy may stand in front of
REFUSED = ("total", "per_address")  # why a connection was closed as soon as it came
TIMED_OUT = ("header", "body", "idle", "login")  # which deadline closed a connection
LOG_EVERY_S = 60.0  # refusals are logged at most this often per listener, as a count
# Descriptors kept out of every budget, for the database (a file, its journal and its
# shared memory per pooled connection), logs, keys, intake workers' channels and
# outgoing calls to push services and webhooks: a quarter of the limit, at least 256.
RESERVE_MIN = 256
RESERVE_SHARE = 4

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_key(host: str) -> str:
    """What a per-address cap counts by: an IPv4 address (also when IPv4-mapped), or
    an IPv6 address's /64, the least a subscriber is given (one host may use them all)."""
    return source_key(host)


@dataclass(frozen=True)
class Snapshot:
    """A listener's budget as /metrics and /healthz show it."""

    open: int
    max_connections: int
    max_per_address: int
    refused: Mapping[str, int] = field(default_factory=dict)
    timed_out: Mapping[str, int] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """As JSON."""
        return {
            "open": self.open,
            "max": self.max_connections,
            "max_per_address": self.max_per_address,
            "refused": dict(self.refused),
            "timed_out": dict(self.timed_out),
        }


class Budgeted(Protocol):
    """Anything that can report a listener's budget: here, or summed over workers."""

    def snapshot(self) -> Snapshot:
        """The budget now."""
        ...


class ConnectionBudget:
    """One listener's budget in this process: admits, releases and counts connections.

    Time is an argument (``now``, the loop's clock): it only paces the log.
    """

    def __init__(
        self,
        listener: str,
        max_connections: int,
        max_per_address: int,
        exempt: Iterable[Network] = (),
    ) -> None:
        self.listener = listener
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        # reverse proxies (trusted_proxies): every client comes through them, so only the
        # listener's cap applies to them; the proxy must hold each client to its own
        self.exempt = tuple(exempt)
        self.open = 0
        self.by_address: dict[str, int] = {}
        self.refused = dict.fromkeys(REFUSED, 0)
        self.timed_out = dict.fromkeys(TIMED_OUT, 0)
        self._unlogged = 0
        self._log_after = float("-inf")

    def admit(self, host: str, now: float) -> str | None:
        """Take a connection from ``host``: the key to release it with, or None when it is
        over a cap (the caller closes it at once; counted and logged here)."""
        key = address_key(host)
        if self.open >= self.max_connections:
            self._refuse("total", now)
            return None
        held = self.by_address.get(key, 0)
        if held >= self.max_per_address and not self._exempt(host):
            self._refuse("per_address", now)
            return None
        self.by_address[key] = held + 1
        self.open += 1
        return key

    def release(self, key: str) -> None:
        """A connection admitted under ``key`` is closed."""
        self.open -= 1
        held = self.by_address.get(key, 0) - 1
        if held > 0:
            self.by_address[key] = held
        else:
            self.by_address.pop(key, None)

    def expired(self, reason: str) -> None:
        """A connection was closed by one of its deadlines (``TIMED_OUT``)."""
        self.timed_out[reason] = self.timed_out.get(reason, 0) + 1

    def snapshot(self) -> Snapshot:
        """The budget now."""
        return Snapshot(
            self.open,
            self.max_connections,
            self.max_per_address,
            dict(self.refused),
            dict(self.timed_out),
        )

    def _exempt(self, host: str) -> bool:
        if not self.exempt:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.exempt)

    def _refuse(self, reason: str, now: float) -> None:
        self.refused[reason] += 1
        self._unlogged += 1
        if now < self._log_after:
            return
        # no addresses: an attacker's are on the firewall's side, and a victim's phone's
        # address is nothing to keep in a log; the counts are on /metrics
        caps = f"{self.max_connections} in all, {self.max_per_address} per address"
        so_far = ", ".join(f"{k} {v}" for k, v in self.refused.items())
        if self._log_after == float("-inf"):
            log.warning(
                "%s listener: a connection over its caps (%s) refused; further refusals are"
                " reported at most once a minute (refused so far: %s)",
                self.listener,
                caps,
                so_far,
            )
        else:
            log.warning(
                "%s listener: %d more connection(s) over its caps (%s) refused (so far: %s)",
                self.listener,
                self._unlogged,
                caps,
                so_far,
            )
        self._unlogged = 0
        self._log_after = now + LOG_EVERY_S


def budget_for(ctx: Any, listener: str) -> ConnectionBudget:
    """The listener's budget in this process, made from the settings on first use
    (``serve`` makes them first, fitted to the open-files limit)."""
    budgets: dict[str, Budgeted] = ctx.budgets
    budget = budgets.get(listener)
    if budget is None:
        total, per_address = caps(ctx.settings, listener)
        exempt = exempt_networks(ctx.settings) if listener in HTTP_LISTENERS else []
        budget = ConnectionBudget(listener, total, per_address, exempt)
        budgets[listener] = budget
    if not isinstance(budget, ConnectionBudget):
        raise TypeError(f"the {listener} listener is served by other processes")
    return budget


def caps(settings: Any, listener: str) -> tuple[int, int]:
    """A listener's caps as set: (in all, per address)."""
    return (
        int(getattr(settings, f"{listener}_max_connections")),
        int(getattr(settings, f"{listener}_max_per_address")),
    )


def exempt_networks(settings: Any) -> list[Network]:
    """The addresses no per-address cap applies to: the trusted reverse proxies."""
    proxies = getattr(settings, "trusted_proxy_networks", None)
    return proxies() if proxies is not None else []


# -- deadlines ---------------------------------------------------------------------------


class IdleWatch:
    """Drops a connection that has said nothing for ``timeout_s``, or has not logged in
    (``logged_in()``) within ``login_timeout_s`` of connecting; ``expired(reason)`` is
    told which (``idle``, ``login``).

    One timer per connection, re-armed only when it fires: far cheaper than a timeout
    around every read.
    """

    def __init__(
        self,
        transport: asyncio.BaseTransport,
        timeout_s: float,
        login_timeout_s: float | None = None,
        logged_in: Callable[[], bool] | None = None,
        expired: Callable[[str], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._timeout_s = timeout_s
        self._last = self._loop.time()
        self._logged_in = logged_in
        self._login_at = (
            self._last + login_timeout_s
            if login_timeout_s is not None and logged_in is not None
            else None
        )
        self._expired = expired
        first = timeout_s
        if self._login_at is not None:
            first = min(first, self._login_at - self._last)
        self._timer = self._loop.call_later(first, self._check)

    def touch(self) -> None:
        """Something was heard."""
        self._last = self._loop.time()

    def cancel(self) -> None:
        """The connection is over."""
        self._timer.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        if self._login_at is not None and self._logged_in is not None:
            if self._logged_in():
                self._login_at = None
            elif now >= self._login_at:
                self._close("login")
                return
        quiet = now - self._last
        if quiet >= self._timeout_s:
            self._close("idle")
            return
        due = self._timeout_s - quiet
        if self._login_at is not None:
            due = min(due, self._login_at - now)
        self._timer = self._loop.call_later(due, self._check)

    def _close(self, reason: str) -> None:
        if not self._transport.is_closing():
            if self._expired is not None:
                self._expired(reason)
            self._transport.close()


# -- fitting the budgets to the open-files limit -----------------------------------------


class BudgetError(ValueError):
    """Caps that were set explicitly do not fit the open-files limit."""


def room(limit: int) -> int:
    """Descriptors the listeners' budgets may share under an open-files ``limit``."""
    return max(0, limit - max(RESERVE_MIN, limit // RESERVE_SHARE))


def fit(wanted: Mapping[str, int], explicit: Iterable[str], space: int) -> dict[str, int]:
    """Listeners' caps (in all) that together fit in ``space`` descriptors.

    Caps set explicitly are kept as they are (BudgetError when they alone do not fit:
    the operator asked for something the process cannot hold); defaults shrink in
    proportion to fit what is left, each to at least 1.
    """
    fixed = {k: v for k, v in wanted.items() if k in set(explicit)}
    if sum(fixed.values()) > space:
        named = ", ".join(f"{k} {v}" for k, v in fixed.items())
        raise BudgetError(
            f"the caps set ({named}) need {sum(fixed.values())} descriptors, "
            f"and only {space} are left for connections"
        )
    flexible = {k: v for k, v in wanted.items() if k not in fixed}
    left = space - sum(fixed.values())
    if sum(flexible.values()) <= left:
        return dict(wanted)
    scale = left / sum(flexible.values())
    return {**fixed, **{k: max(1, int(v * scale)) for k, v in flexible.items()}}


# -- open files --------------------------------------------------------------------------


def raise_open_files_limit() -> int:
    """Raise this process's soft open-files limit to its hard limit; the limit now.

    Processes it starts afterwards (the intake workers) inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # Linux refuses more than fs.nr_open
        target = _nr_open()
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning(
                "open files: could not raise the limit from %d to %d: %s", soft, target, exc
            )
            return soft
        log.info("open files: limit raised from %d to %d", soft, target)
        return target
    return soft if soft != resource.RLIM_INFINITY else target


def _nr_open() -> int:
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/fs/nr_open") as fh:
        return int(fh.read())
    return 1 << 20


def open_files_limit() -> int:
    """This process's soft open-files limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft)


def open_files() -> int | None:
    """Descriptors this process has open (None where /proc/self/fd is not there)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listing them
    except OSError:
        return None


# -- metrics -----------------------------------------------------------------------------


class BudgetCollector(Collector):
    """Every listener's budget, and the process's open files, on /metrics."""

    def __init__(self, budgets: Mapping[str, Budgeted]) -> None:
        self.budgets = budgets

    def collect(self) -> Iterator[Any]:
        """The families, one sample per listener (and reason)."""
        opened = GaugeMetricFamily(
            "bangpae_connections_open", "Connections a listener holds", labels=["listener"]
        )
        cap = GaugeMetricFamily(
            "bangpae_connections_max", "A listener's cap on its connections", labels=["listener"]
        )
        per_address = GaugeMetricFamily(
            "bangpae_connections_max_per_address",
            "A listener's cap on the connections of one address (IPv6: one /64)",
            labels=["listener"],
        )
        refused = CounterMetricFamily(
            "bangpae_connections_refused",
            "Connections closed as soon as accepted: over a listener's cap in all (total) "
            "or from one address (per_address)",
            labels=["listener", "reason"],
        )
        timed_out = CounterMetricFamily(
            "bangpae_connections_timed_out",
            "Connections closed by a deadline: request head (header) or body not received "
            "in time, idle, or a tracker not logged in (login)",
            labels=["listener", "reason"],
        )
        for name, budget in sorted(self.budgets.items()):
            s = budget.snapshot()
            opened.add_metric([name], s.open)
            cap.add_metric([name], s.max_connections)
            per_address.add_metric([name], s.max_per_address)
            for reason, n in s.refused.items():
                refused.add_metric([name, reason], n)
            for reason, n in s.timed_out.items():
                timed_out.add_metric([name, reason], n)
        yield from (opened, cap, per_address, refused, timed_out)
        files = open_files()
        if files is not None:
            yield GaugeMetricFamily("bangpae_open_files", "Descriptors the server has open", files)
        yield GaugeMetricFamily(
            "bangpae_open_files_limit", "The server's open-files limit", open_files_limit()
        )


def report(budgets: Mapping[str, Budgeted]) -> dict[str, Any]:
    """Open files and every listener's budget, for /healthz."""
    return {
        "open_files": {"open": open_files(), "limit": open_files_limit()},
        "connections": {name: b.snapshot().public() for name, b in sorted(budgets.items())},
    }
