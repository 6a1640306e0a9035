"""The main process's side of the intake workers: start, serve, supervise.

The listening sockets are made here, one per worker and protocol, bound to the same
port with SO_REUSEPORT so that the kernel spreads new connections over the workers;
each worker inherits its own. A worker that exits is started again on the same
sockets, so connections waiting in their queues are not lost with it.

Each worker holds an equal share of every listener's connection budget (the caps
divided by the workers, rounded up): the kernel spreads one address's connections
over the workers too, so the per-address cap holds nearly as it does in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from bangpae.adapters.listeners import intake_worker
from bangpae.adapters.listeners.budget import Snapshot, caps
from bangpae.adapters.listeners.intake_worker import ChannelError, MessageReader, message
from bangpae.adapters.listeners.tcp import BACKLOG

log = logging.getLogger(__name__)
RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
STOP_WAIT_S = 5.0
MAX_ADDRESS = 64  # "[IPv6 address]:port" is at most 47 characters
# What a worker may see of the environment: nothing that opens the database or signs.
_WORKER_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "HOME", "BANGPAE_LOG_LEVEL")


def listening_sockets(host: str, port: int, n: int) -> list[socket.socket]:
    """``n`` listening sockets on one address (port 0: a free port chosen for all)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            out.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            port = s.getsockname()[1]
            s.listen(BACKLOG)
            s.setblocking(False)
    except OSError:
        for s in out:
            s.close()
        raise
    return out


class _Worker:
    """One worker process, its channel, and what it was told."""

    def __init__(self, pool: WorkerPool, index: int, sockets: list[tuple[str, socket.socket]]):
        self.pool = pool
        self.index = index
        self.sockets = sockets
        self.proc: asyncio.subprocess.Process | None = None
        self.channel: MessageReader | None = None
        self.lost = asyncio.Event()
        self.devices: set[int] = set()  # confirmed to this worker: the only fixes it may send
        self.proxies: dict[int, tuple[int, _RemoteLink]] = {}  # token -> (device id, link)
        self.counters: list[dict[str, Any]] = []
        self.budgets: dict[str, Snapshot] = {}  # as it last reported them
        self.started_at = 0.0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        fds = [theirs.fileno()] + [s.fileno() for _, s in self.sockets]
        args = [
            sys.executable,
            "-m",
            "bangpae.adapters.listeners.intake_worker",
            "--channel",
            str(theirs.fileno()),
            "--device-networks",
            self.pool.device_networks,
            "--ack-delay",
            str(self.pool.ack_delay_s),
            "--retention-days",
            str(self.pool.retention_days),
            "--index",
            str(self.index),
            "--login-timeout",
            str(self.pool.login_timeout_s),
        ]
        for name, s in self.sockets:
            args += ["--listen", f"{name}={s.fileno()}"]
            total, per_address = self.pool.shares[name]
            args += ["--budget", f"{name}={total},{per_address}"]
        env = {k: v for k, v in os.environ.items() if k in _WORKER_ENV}
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *args, pass_fds=fds, env=env, stdin=asyncio.subprocess.DEVNULL
            )
        finally:
            theirs.close()
        self.lost = asyncio.Event()
        self.started_at = time.monotonic()
        _, self.channel = await loop.connect_accepted_socket(
            lambda: MessageReader(self.on_message, self.lost.set), sock=ours
        )

    def on_message(self, kind: int, payload: bytes) -> None:
        try:
            self._handle(kind, payload)
        except (ChannelError, ValueError, UnicodeDecodeError) as exc:
            # A worker parses what strangers send: one that breaks the rules is ended.
            log.error("intake worker %d broke the channel's rules (%s): ending it", self.index, exc)
            self.kill()
        except Exception:
            log.exception("intake worker %d: message not handled", self.index)
            self.kill()

    def _handle(self, kind: int, payload: bytes) -> None:
        ctx = self.pool.ctx
        if kind == ord("F"):
            (req,) = intake_worker.U32.unpack_from(payload)
            fixes = intake_worker.unpack_fixes(memoryview(payload)[4:], self.devices.__contains__)
            stored = ctx.ingest.enqueue(fixes)
            stored.add_done_callback(lambda f: self._stored(req, f))
        elif kind in (ord("D"), ord("K")):
            (req,) = intake_worker.U32.unpack_from(payload)
            identifier = payload[4:].decode()
            task = asyncio.get_running_loop().create_task(
                self._lookup(req, identifier, registered_only=kind == ord("K"))
            )
            self.pool.tasks.add(task)
            task.add_done_callback(self.pool.tasks.discard)
        elif kind == ord("B"):
            token, device_id = intake_worker.BOUND.unpack_from(payload)
            if device_id not in self.devices:
                raise ChannelError(f"bound to device {device_id} never confirmed")
            if token in self.proxies:
                raise ChannelError(f"connection token {token} bound twice")
            address = payload[intake_worker.BOUND.size :].decode()
            if len(address) > MAX_ADDRESS:  # evidence in an incident: a peer's address, no more
                raise ChannelError("a peer address longer than any address")
            link = _RemoteLink(self, token, address)
            self.proxies[token] = (device_id, link)
            ctx.trackers.bind(device_id, link)
        elif kind == ord("U"):
            (token,) = intake_worker.U32.unpack(payload)
            entry = self.proxies.pop(token, None)
            if entry is not None:
                ctx.trackers.unbind(*entry)
        elif kind == ord("H"):
            (token,) = intake_worker.U32.unpack(payload)
            entry = self.proxies.get(token)
            if entry is not None:
                ctx.trackers.heard(*entry)
        elif kind == ord("M"):
            counters = json.loads(payload)
            if not isinstance(counters, list):
                raise ChannelError("metrics are not a list")
            self.counters = counters
        elif kind == ord("N"):
            self.budgets = intake_worker.unpack_budgets(payload, (name for name, _ in self.sockets))
        else:
            raise ChannelError(f"unknown message kind {kind}")

    def _stored(self, req: int, fut: asyncio.Future[Any]) -> None:
        ok = not fut.cancelled() and fut.exception() is None
        if self.channel is not None:
            self.channel.send(message(b"A", intake_worker.ACK.pack(req, 1 if ok else 0)))

    async def _lookup(self, req: int, identifier: str, registered_only: bool = False) -> None:
        found = None
        keys = self.pool.ctx.device_keys
        try:
            known = await (keys.registered if registered_only else keys.find)(identifier)
            if known is not None:
                at = known.registered_at
                found = (known.device_id, known.lenient_crc, math.nan if at is None else at)
        except Exception:
            log.exception("intake worker %d: looking up a device failed", self.index)
        if found is not None:
            self.devices.add(found[0])
        reply = intake_worker.DEVICE_REPLY.pack(req, *(found or (-1, False, math.nan)))
        if self.channel is not None:
            self.channel.send(message(b"R", reply))

    def send(self, data: bytes) -> None:
        """A message to the worker, if it is still there."""
        if self.channel is not None and not self.lost.is_set():
            self.channel.send(data)

    def forget(self) -> None:
        """The worker is gone: its connections, commands and confirmations with it."""
        for device_id, link in self.proxies.values():
            self.pool.ctx.trackers.unbind(device_id, link)
        self.proxies.clear()
        self.devices.clear()
        self.pool.retire(self.counters)
        self.counters = []
        self.pool.retire_budgets(self.budgets)
        self.budgets = {}
        self.channel = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class _RemoteLink:
    """A tracker connection held by a worker, as the tracker sessions see it."""

    def __init__(self, worker: _Worker, token: int, address: str) -> None:
        self.worker = worker
        self.token = token
        self.address = address

    def command(self, seconds: int) -> None:
        self.worker.send(message(b"C", intake_worker.COMMAND.pack(self.token, seconds)))

    def watch(self) -> None:
        self.worker.send(message(b"W", intake_worker.U32.pack(self.token)))

    def drop(self) -> None:
        self.worker.send(message(b"X", intake_worker.U32.pack(self.token)))


class _PoolBudget:
    """A listener's connection budget as the workers serving it report it, summed."""

    def __init__(self, pool: WorkerPool, listener: str, total: int, per_address: int) -> None:
        self.pool = pool
        self.listener = listener
        self.total = total
        self.per_address = per_address
        self.retired_refused: dict[str, int] = {}  # of workers gone: counters never go down
        self.retired_timed_out: dict[str, int] = {}

    def snapshot(self) -> Snapshot:
        """The listener's caps; connections held by the live workers; every worker's counts."""
        held = 0
        refused = dict(self.retired_refused)
        timed_out = dict(self.retired_timed_out)
        for w in self.pool.workers:
            s = w.budgets.get(self.listener)
            if s is None:
                continue
            held += s.open
            _add(refused, s.refused)
            _add(timed_out, s.timed_out)
        return Snapshot(held, self.total, self.per_address, refused, timed_out)


def _add(into: dict[str, int], counts: Any) -> None:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v


class WorkerPool:
    """N intake workers serving the TCP listeners for this process's ingest.

    ``budgets``: each listener's caps, (in all, per address); default the settings'.
    """

    def __init__(
        self,
        ctx: Any,
        n: int,
        listeners: list[tuple[str, str, int]],
        budgets: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.n = n
        self.listeners = listeners
        self.device_networks = ctx.settings.device_networks
        self.ack_delay_s = float(ctx.settings.tracker_ack_delay_s)
        self.retention_days = int(ctx.settings.retention_days)
        self.login_timeout_s = float(ctx.settings.tracker_login_timeout_s)
        self.shares: dict[str, tuple[int, int]] = {}  # each worker's part of the caps
        self.budgets: dict[str, _PoolBudget] = {}
        for name, _, _ in listeners:
            total, per_address = (budgets or {}).get(name) or caps(ctx.settings, name)
            self.shares[name] = (math.ceil(total / n), math.ceil(per_address / n))
            self.budgets[name] = _PoolBudget(self, name, total, per_address)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.workers: list[_Worker] = []
        self.ports: dict[str, int] = {}
        self.restarts = 0
        self._retired: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._docs: dict[str, str] = {}
        self._supervisors: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        """Open the sockets, start every worker."""
        per_worker: list[list[tuple[str, socket.socket]]] = [[] for _ in range(self.n)]
        for name, host, port in self.listeners:
            socks = listening_sockets(host, port, self.n)
            self.ports[name] = socks[0].getsockname()[1]
            for i, s in enumerate(socks):
                per_worker[i].append((name, s))
        self.workers = [_Worker(self, i, socks) for i, socks in enumerate(per_worker)]
        for w in self.workers:
            await w.start()
        self._supervisors = [
            asyncio.create_task(self._supervise(w), name=f"intake-{w.index}") for w in self.workers
        ]
        self.ctx.metrics.register(_WorkerMetrics(self))
        self.ctx.budgets.update(self.budgets)  # on /metrics and /healthz with the others

    async def _supervise(self, w: _Worker) -> None:
        delay = RESTART_MIN_S
        while True:
            await w.lost.wait()
            proc = w.proc
            code = None
            if proc is not None:
                if not self._stopping:
                    w.kill()  # without its channel a worker is of no use
                code = await proc.wait()
            w.forget()
            if self._stopping:
                return
            self.restarts += 1
            ran = time.monotonic() - w.started_at
            delay = RESTART_MIN_S if ran > RESTART_MAX_S else min(delay * 2, RESTART_MAX_S)
            log.error(
                "intake worker %d exited (code %s) after %.1f s; its devices reconnect."
                " Starting it again in %.1f s",
                w.index,
                code,
                ran,
                delay,
            )
            await asyncio.sleep(delay)
            await w.start()

    def retire(self, counters: list[dict[str, Any]]) -> None:
        """Keep a gone worker's counts: counters never go down."""
        for key, value, doc in _samples(counters):
            self._retired[key] = self._retired.get(key, 0.0) + value
            self._docs[key[0]] = doc

    def retire_budgets(self, budgets: dict[str, Snapshot]) -> None:
        """Keep a gone worker's refusals and timeouts; its connections went with it."""
        for name, s in budgets.items():
            b = self.budgets.get(name)
            if b is not None:
                _add(b.retired_refused, s.refused)
                _add(b.retired_timed_out, s.timed_out)

    def totals(self) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], dict[str, str]]:
        """Every worker's counters summed, with those of workers gone."""
        total = dict(self._retired)
        docs = dict(self._docs)
        for w in self.workers:
            for key, value, doc in _samples(w.counters):
                total[key] = total.get(key, 0.0) + value
                docs[key[0]] = doc
        return total, docs

    async def stop(self) -> None:
        """Close the channels; the workers close their connections and exit."""
        self._stopping = True
        for w in self.workers:
            if w.channel is not None and w.channel.transport is not None:
                w.channel.transport.close()
        deadline = time.monotonic() + STOP_WAIT_S
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                await asyncio.wait_for(w.proc.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("intake worker %d did not stop; killing it", w.index)
                w.kill()
                await w.proc.wait()
        for task in self._supervisors:
            task.cancel()
        for w in self.workers:
            for _, s in w.sockets:
                s.close()


def _samples(
    counters: list[dict[str, Any]],
) -> Iterator[tuple[tuple[str, tuple[tuple[str, str], ...]], float, str]]:
    for c in counters:
        name, doc = str(c.get("name", "")), str(c.get("doc", ""))
        for labels, value in c.get("samples", []):
            key = (name, tuple(sorted((str(k), str(v)) for k, v in dict(labels).items())))
            yield key, float(value), doc


class _WorkerMetrics(Collector):
    """The workers' counters on the main process's /metrics."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Any]:
        total, docs = self.pool.totals()
        families: dict[str, CounterMetricFamily] = {}
        for (name, labels), value in sorted(total.items()):
            fam = families.get(name)
            if fam is None:
                fam = families[name] = CounterMetricFamily(
                    name, docs.get(name, ""), labels=[k for k, _ in labels]
                )
            fam.add_metric([v for _, v in labels], value)
        yield from families.values()
        yield CounterMetricFamily(
            "bangpae_intake_restarts",
            "Intake workers started again after exiting",
            value=self.pool.restarts,
        )
