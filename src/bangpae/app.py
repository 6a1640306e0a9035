"""The composition root: chooses the store and the bus, wires everything, runs the listeners."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import logging
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import CollectorRegistry

from bangpae.adapters.auditkey import AuditKeyError, open_audit_key
from bangpae.adapters.bus import InProcessBus
from bangpae.adapters.clock import SystemClock
from bangpae.adapters.crypto import DataKeyError, FieldCipher, open_data_keys
from bangpae.adapters.datadir import make_private_dir, private_umask
from bangpae.adapters.housekeeping import run_housekeeping
from bangpae.adapters.listeners.budget import (
    HTTP_LISTENERS,
    BudgetCollector,
    Budgeted,
    BudgetError,
    ConnectionBudget,
    budget_for,
    caps,
    exempt_networks,
    fit,
    raise_open_files_limit,
    room,
)
from bangpae.adapters.logsafe import install as redact_logs
from bangpae.adapters.notify import LogChannel, LogGateway, WebhookChannel
from bangpae.adapters.policyfile import PolicyFileError, load_policy
from bangpae.adapters.sms import SmppGateway, SmsUrlError, parse_sms_url
from bangpae.adapters.store import AuditKeyMissing, Store
from bangpae.config import Settings, parse_listen
from bangpae.domain.access import Policy
from bangpae.domain.model import EventKind
from bangpae.domain.notices import NOTICE_KINDS
from bangpae.engine.engine import Engine
from bangpae.metrics import ServiceCollector
from bangpae.services.auth import load_or_create_secret
from bangpae.services.commands import CommandHub, pursuit
from bangpae.services.devicekeys import DeviceKeys, pepper_from
from bangpae.services.devices import DeviceGate
from bangpae.services.handoffs import Channel, Handoffs
from bangpae.services.ingest import Ingest
from bangpae.services.notices import (
    Gateway,
    NoticeChannel,
    Notifier,
    SmsChannel,
    StreamHub,
    run_service_health,
)
from bangpae.services.passwords import PasswordPool
from bangpae.services.ports import Clock
from bangpae.services.ratelimit import RateLimiter
from bangpae.services.reactions import Reactions
from bangpae.services.response import Escalation, run_escalation
from bangpae.services.sos import PIN_FAILURES, PIN_WINDOW_S, SosWatch
from bangpae.services.trackers import TrackerSessions

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bangpae.adapters.listeners.intake_pool import WorkerPool

log = logging.getLogger("bangpae")
THREADS = 32  # for blocking store calls from the event loop
SWITCH_INTERVAL_S = 0.001  # how long a thread may hold the interpreter while another waits


# Her app reports every 15 s while he is near, every 60 s otherwise; this leaves room
# for retries and a second device, and caps what a prober holding her phone can send.
OWN_REPORTS_PER_MINUTE = 12


@dataclass
class AppContext:
    """Everything a route or listener may use, built once per process."""

    settings: Settings
    store: Store
    ingest: Ingest
    clock: Clock
    bus: InProcessBus
    secret: bytes
    metrics: CollectorRegistry
    access_policy: Policy = field(default_factory=lambda: access_policy(None))
    commands: CommandHub = field(default_factory=CommandHub)  # her app's pursuit mode
    trackers: TrackerSessions = field(init=False)  # tracker connections, clones among them
    # Her own reports from the app, per person (docs/disclosure.md): a prober's budget.
    own_reports: RateLimiter = field(
        default_factory=lambda: RateLimiter(OWN_REPORTS_PER_MINUTE, 60.0)
    )
    passwords: PasswordPool = field(default_factory=PasswordPool)  # people's argon2 checks
    device_keys: DeviceKeys = field(init=False)  # every device's credentials, in memory
    device_gate: DeviceGate = field(init=False)  # who a device is, for every listener
    sos: SosWatch = field(init=False)  # wakes her stream when her SOS moves (docs/sos.md)
    # wrong PINs per person (docs/sos.md): 5 within 5 minutes, then refused for a while
    pin_failures: RateLimiter = field(
        default_factory=lambda: RateLimiter(PIN_FAILURES, PIN_WINDOW_S)
    )
    # one PIN check at a time per user, so guesses sent at once are each counted first
    pin_locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    # what is done about stored events, per kind, never dropped (docs/architecture.md)
    reactions: Reactions = field(init=False)
    escalation: Escalation | None = None
    handoffs: Handoffs | None = None
    notifier: Notifier | None = None
    push_key: str = ""  # the VAPID public key browsers subscribe with
    sms: SmppGateway | None = None  # the SMPP session, when BANGPAE_SMS_URL names an SMSC
    # each listener's connection budget (docs/robustness.md), by listener name
    budgets: dict[str, Budgeted] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.trackers = TrackerSessions(self)
        self.sos = SosWatch(self.store)
        self.device_keys = DeviceKeys(
            self.store,
            pepper_from(self.secret),
            self.passwords.verify_device,
            lambda: self.settings.allow_keyless_devices,
        )
        self.device_keys.load()
        self.device_gate = DeviceGate.of(
            self.device_keys, lambda: self.settings.device_failure_delay_s
        )
        self.reactions = Reactions(self.store, self.bus, self.clock)
        self.reactions.on([EventKind.SHOWN_TIER_CHANGED], "pursuit", pursuit(self, self.commands))

    @property
    def engine(self) -> Engine:
        """The live engine (the ingest worker may rebuild it)."""
        return self.ingest.engine

    async def start(self) -> None:
        """Start the ingest worker, timers, housekeeping and pending hand-off deliveries."""
        self.sos.bind(asyncio.get_running_loop())
        await self.ingest.start(tick_s=self.settings.tick_s)
        self._tasks.append(asyncio.create_task(self.reactions.run(), name="reactions"))
        self._tasks.append(
            asyncio.create_task(
                run_housekeeping(self.store, self.settings, self.clock), name="housekeeping"
            )
        )
        if self.escalation is not None:
            self._tasks.append(
                asyncio.create_task(
                    run_escalation(self.escalation, self.clock, self.settings.tick_s),
                    name="escalation",
                )
            )
        if self.sms is not None:
            await self.sms.start()
        if self.notifier is not None:
            self._tasks.append(
                asyncio.create_task(
                    run_service_health(self.notifier, self.ingest, self.settings.tick_s),
                    name="service-health",
                )
            )
        if self.handoffs is not None:
            await self.handoffs.resume()

    async def stop(self) -> None:
        """Drain and stop, then release the store."""
        for task in self._tasks:
            task.cancel()
        if self.handoffs is not None:
            await self.handoffs.stop()
        if self.sms is not None:
            await self.sms.stop()
        await self.ingest.stop()
        self.passwords.close()
        self.store.close()


def build(settings: Settings, clock: Clock | None = None) -> AppContext:
    """Make the store, engine, bus and ingest for these settings (nothing started)."""
    redact_logs()  # the second line: what libraries log of links and tokens is blanked
    # Whatever this process writes from here on (SQLite's files, an export) is its user's
    # alone, even if it was started with a loose umask; the files bangpae makes itself
    # are made 0600 explicitly as well.
    private_umask()
    policy = access_policy(settings)  # a broken policy file stops everything at once
    make_private_dir(settings.data_dir)
    with contextlib.suppress(OSError):
        os.chmod(settings.data_dir, 0o700)
    if settings.bus_url and not settings.bus_url.startswith("memory"):
        raise SystemExit(f"bus {settings.bus_url!r}: only the in-process bus is available yet")
    store = open_store(settings, create=True)
    clock = clock or SystemClock()
    bus = InProcessBus()
    secret = (
        settings.secret_key.encode()
        if settings.secret_key
        else load_or_create_secret(settings.data_dir / "secret.key")
    )
    # The told grid's secret offsets (docs/disclosure.md) come from the server's secret:
    # the same across restarts, since a new grid each time would let her intersect them.
    grid_key = hmac.new(secret, b"bangpae told grid", hashlib.sha256).digest()
    ingest = Ingest(store, Engine(grid_key), clock, bus)
    ctx = AppContext(
        settings, store, ingest, clock, bus, secret, CollectorRegistry(), access_policy=policy
    )
    ctx.escalation = Escalation(store, bus, settings.escalate_after_s, settings.escalate_every_s)
    ctx.handoffs = Handoffs(
        store,
        clock,
        handoff_channels(settings),
        settings.base_url(),
        settings.handoff_retry_base_s,
        settings.handoff_max_attempts,
        policy=policy,
    )
    ctx.notifier, ctx.push_key = notifier(settings, store, clock)
    ctx.reactions.on(NOTICE_KINDS, "notices", ctx.notifier.on_events)
    ctx.sms = next(
        (
            ch.gateway
            for ch in ctx.notifier.channels
            if isinstance(ch, SmsChannel) and isinstance(ch.gateway, SmppGateway)
        ),
        None,
    )
    ctx.metrics.register(ServiceCollector(ctx))
    ctx.metrics.register(BudgetCollector(ctx.budgets))
    return ctx


def access_policy(settings: Settings | None) -> Policy:
    """The access policy of ``BANGPAE_ACCESS_POLICY`` (default: the shipped one); a file that
    cannot be used stops the process with a message naming the file and the key."""
    try:
        return load_policy(settings.access_policy if settings is not None else None)
    except PolicyFileError as exc:
        raise SystemExit(str(exc)) from None


def data_cipher(settings: Settings, *, create: bool) -> FieldCipher | None:
    """The data keys: ``BANGPAE_DATA_KEYS``, else the data dir's key file (``create``: made)."""
    env = settings.data_keys.get_secret_value() if settings.data_keys else None
    try:
        return open_data_keys(settings.data_dir, env, create=create)
    except DataKeyError as exc:
        raise SystemExit(f"data keys: {exc}") from None


def audit_key(settings: Settings, *, create: bool) -> bytes | None:
    """The audit key: ``BANGPAE_AUDIT_KEY``, else the data dir's key file (``create``: made)."""
    env = settings.audit_key.get_secret_value() if settings.audit_key else None
    try:
        return open_audit_key(settings.data_dir, env, create=create)
    except AuditKeyError as exc:
        raise SystemExit(f"audit key: {exc}") from None


def open_store(settings: Settings, *, create: bool, check_audit_key: bool = True) -> Store:
    """The migrated store with the data keys, once they are known to open its sealed values.

    ``create``: make the key file when there are no keys and nothing is sealed yet (a
    first start). Without it, a command run where no keys are found gets a store without
    a cipher, which writes plaintext and refuses (DataKeyError) any sealed value it reads.
    Likewise the audit key (docs/audit-log.md): made only while the chain has no keyed
    record, and with ``check_audit_key`` a key that does not confirm the newest keyed
    record stops here (``audit verify`` reports that itself, record by record).
    """
    store = Store(
        settings.resolved_database_url(),
        cipher=data_cipher(settings, create=False),
        audit_key=audit_key(settings, create=False),
    )
    try:
        store.migrate()  # with keys: checks them, then seals plaintext positions left
        store.check_keys()  # without keys: refused if anything is sealed (keys lost)
        # a keyed chain and no key: never make a new one (records nobody could verify)
        if check_audit_key and (store.audit_key is not None or create):
            store.check_audit_key()
    except (DataKeyError, AuditKeyMissing) as exc:
        store.close()
        kind = "data keys" if isinstance(exc, DataKeyError) else "audit key"
        raise SystemExit(f"{kind}: {exc}") from None
    if store.cipher is None and create:
        store.cipher = data_cipher(settings, create=True)
        store.seal_positions()  # written by tools run before the first start
    if store.audit_key is None and create:
        store.audit_key = audit_key(settings, create=True)
    return store


def notifier(settings: Settings, store: Store, clock: Clock) -> tuple[Notifier, str]:
    """Notices to victims and staff: the open apps, Web Push (keys made on first start), SMS."""
    from bangpae.adapters.webpush import PushChannel, application_server_key, load_or_create_vapid

    vapid = load_or_create_vapid(settings.data_dir / "vapid-private.pem")
    channels: list[NoticeChannel] = [
        PushChannel(store, clock, vapid, settings.push_subject, settings.push_hosts())
    ]
    gateway = sms_gateway(settings, store, clock)
    if gateway is not None:
        channels.append(SmsChannel(store, gateway))
    return Notifier(store, clock, StreamHub(), channels), application_server_key(vapid)


def sms_gateway(settings: Settings, store: Store, clock: Clock) -> Gateway | None:
    """SMPP to the SMSC of ``BANGPAE_SMS_URL``; without one the log sink (or nothing)."""
    if settings.sms_url is None:
        return LogGateway("sms") if settings.sms_gateway == "log" else None
    try:
        config = parse_sms_url(settings.sms_url.get_secret_value())
    except SmsUrlError as exc:
        raise SystemExit(f"BANGPAE_SMS_URL: {exc}") from None
    return SmppGateway(
        config,
        store,
        clock,
        max_attempts=settings.sms_max_attempts,
        retry_base_s=settings.sms_retry_base_s,
        submit_timeout_s=settings.sms_submit_timeout_s,
        enquire_link_s=settings.sms_enquire_link_s,
        reconnect_min_s=settings.sms_reconnect_min_s,
    )


def handoff_channels(settings: Settings) -> dict[str, Channel]:
    """The police hand-off channels: the webhook when configured, and the log sinks."""
    channels: dict[str, Channel] = {"email": LogChannel("email"), "sms": LogChannel("sms")}
    if settings.handoff_webhook_url and settings.handoff_secret:
        channels["webhook"] = WebhookChannel(settings.handoff_webhook_url, settings.handoff_secret)
    return channels


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us (several run in one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_app(ctx: AppContext) -> FastAPI:
    """What the API listener serves: the API and its documents, and the OwnTracks endpoint,
    a device listener that shares the API's port."""
    from bangpae.adapters.listeners.owntracks_http import owntracks_router
    from bangpae.api.factory import create_app

    app = create_app(ctx)
    app.include_router(owntracks_router(ctx))
    return app


def servers_for(ctx: AppContext) -> list[tuple[str, _Server]]:
    """The listeners these settings enable, as uvicorn servers sharing one loop.

    Each holds its connections within its budget and deadlines (http_guard). Forwarded
    client addresses are believed only from ``trusted_proxies``: uvicorn would otherwise
    believe any local client's X-Forwarded-For, letting it choose its address.
    """
    from bangpae.adapters.listeners.http_guard import guarded_protocols
    from bangpae.adapters.listeners.osmand_http import create_osmand_app

    settings = ctx.settings
    proxies = [str(net) for net in settings.trusted_proxy_networks()]

    def server(app: Any, addr: tuple[str, int], listener: str, websockets: bool) -> _Server:
        http, ws = guarded_protocols(
            budget_for(ctx, listener), settings.http_header_timeout_s, settings.http_body_timeout_s
        )
        return _Server(
            uvicorn.Config(
                app,
                host=addr[0],
                port=addr[1],
                http=http,
                ws=ws if websockets else "none",
                timeout_keep_alive=settings.http_idle_timeout_s,
                proxy_headers=bool(proxies),
                forwarded_allow_ips=proxies or None,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=3,
                access_log=False,
            )
        )

    out: list[tuple[str, _Server]] = []
    http = parse_listen(ctx.settings.http, "127.0.0.1")
    if http:
        out.append((f"http://{http[0]}:{http[1]}", server(http_app(ctx), http, "api", True)))
    osm = parse_listen(ctx.settings.osmand)
    if osm:
        osmand = server(create_osmand_app(ctx), osm, "osmand", False)
        out.append((f"osmand http://{osm[0]}:{osm[1]}", osmand))
    return out


def fit_budgets(
    settings: Settings, listeners: list[str], limit: int, processes: int = 1
) -> dict[str, tuple[int, int]]:
    """Listeners' caps, (in all, per address), fitted to the open-files limit of the
    ``processes`` sharing them equally (intake workers; each has that limit).

    Default caps that together leave too little room shrink in proportion, and say so;
    caps set explicitly that cannot fit stop the start rather than fail under attack.
    """
    wanted = {name: caps(settings, name)[0] for name in listeners}
    explicit = [n for n in listeners if f"{n}_max_connections" in settings.model_fields_set]
    space = room(limit) * processes
    try:
        fitted = fit(wanted, explicit, space)
    except BudgetError as exc:
        raise SystemExit(
            f"connection caps: {exc} under the open-files limit of {limit}: lower them, "
            "or raise the hard limit (LimitNOFILE, ulimit -Hn)"
        ) from None
    if fitted != wanted:
        log.warning(
            "open files: the limit of %d leaves %d descriptors for connections; default caps"
            " lowered to %s (raise the hard limit, e.g. LimitNOFILE, to keep the defaults)",
            limit,
            space,
            ", ".join(f"{n} {fitted[n]}" for n in listeners),
        )
    return {n: (fitted[n], caps(settings, n)[1]) for n in listeners}


def open_budgets(ctx: AppContext, limit: int, tcp: list[str]) -> dict[str, tuple[int, int]]:
    """Give each enabled listener of this process its budget; the caps of the ``tcp``
    listeners when intake workers serve them (the pool shares those out)."""
    settings = ctx.settings
    http = [
        name
        for name, value in (("api", settings.http), ("osmand", settings.osmand))
        if parse_listen(value) is not None
    ]
    workers = settings.tcp_workers
    here = http + ([] if workers > 0 else tcp)
    for name, (total, per_address) in fit_budgets(settings, here, limit).items():
        exempt = exempt_networks(settings) if name in HTTP_LISTENERS else []
        ctx.budgets[name] = ConnectionBudget(name, total, per_address, exempt)
    return fit_budgets(settings, tcp, limit, workers) if workers > 0 else {}


async def serve(ctx: AppContext, ready: asyncio.Event | None = None) -> None:
    """Run every enabled listener until SIGINT or SIGTERM."""
    from bangpae.adapters.listeners.tcp import start_tcp
    from bangpae.protocols.registry import TCP_PROTOCOLS

    # Every connection holds a descriptor: as many as the hard limit allows, and each
    # listener's budget fitted in them with a reserve (docs/robustness.md).
    limit = raise_open_files_limit()
    # Store reads and writes run in threads. The default pool (six threads on two
    # cores) lets a storm of notices and their records, each waiting its turn at the
    # one writer, keep the victims' open apps waiting behind them.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="bangpae")
    )
    wanted = [
        (name, addr)
        for name in TCP_PROTOCOLS
        if (addr := parse_listen(getattr(ctx.settings, name))) is not None
    ]
    worker_caps = open_budgets(ctx, limit, [name for name, _ in wanted])
    await ctx.start()
    servers = servers_for(ctx)
    tcp: list[asyncio.Server] = []
    pool: WorkerPool | None = None
    if wanted and ctx.settings.tcp_workers > 0:
        from bangpae.adapters.listeners.intake_pool import WorkerPool

        pool = WorkerPool(
            ctx,
            ctx.settings.tcp_workers,
            [(n, a[0], a[1]) for n, a in wanted],
            worker_caps,
        )
        await pool.start()
        for name, addr in wanted:
            log.info(
                "listening: %s tcp://%s:%d in %d workers",
                name,
                addr[0],
                pool.ports[name],
                pool.n,
            )
    else:
        for name, addr in wanted:
            tcp.append(await start_tcp(ctx, TCP_PROTOCOLS[name], addr[0], addr[1]))
            log.info("listening: %s tcp://%s:%d", name, addr[0], addr[1])
    mqtt: asyncio.Task[None] | None = None
    if ctx.settings.mqtt_url:
        from bangpae.adapters.listeners.owntracks_mqtt import run_owntracks_mqtt

        mqtt = asyncio.create_task(run_owntracks_mqtt(ctx, ctx.settings.mqtt_url))
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for _, srv in servers:
            srv.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(srv.serve()) for _, srv in servers]
    try:
        while not all(srv.started for _, srv in servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.02)
        for name, _ in servers:
            log.info("listening: %s", name)
        # What start-up built (registry, engine, app) lives as long as the process: kept
        # out of the collector's sight, a full collection under load took 12-23 ms
        # instead of 65-130 ms, a stall every fix in flight waited through.
        gc.collect()
        gc.freeze()
        if ready is not None:
            ready.set()
        await asyncio.gather(*tasks)
    finally:
        for srv in tcp:
            srv.close()
        if pool is not None:
            await pool.stop()
        if mqtt is not None:
            mqtt.cancel()
        await ctx.stop()


def run_serve(ctx: AppContext) -> None:
    """Serve until SIGINT or SIGTERM (on uvloop where it is installed)."""
    from bangpae.adapters.loop import run as run_loop

    # The single writer and the pool threads make many short calls into SQLite, each
    # handing the interpreter over and waiting to get it back; with the event loop busy,
    # every wait lasted the switch interval (5 ms by default), so a storm of fixes took
    # several times its work to commit. 1 ms bounds those waits.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    run_loop(serve(ctx))
