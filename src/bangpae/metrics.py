"""What ``/metrics`` says of the running service (Prometheus text format)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bangpae.adapters.sms import SmppGateway
from bangpae.engine.engine import Engine
from bangpae.services.devicekeys import DeviceKeys
from bangpae.services.ingest import Ingest
from bangpae.services.notices import Notifier
from bangpae.services.passwords import PasswordPool


class Observed(Protocol):
    """The parts of the app context the metrics read (``bangpae.app.AppContext``)."""

    @property
    def ingest(self) -> Ingest:
        """The single writer, whose counters these are."""
        ...

    @property
    def engine(self) -> Engine:
        """The live engine."""
        ...

    device_keys: DeviceKeys
    passwords: PasswordPool
    notifier: Notifier | None
    sms: SmppGateway | None


class ServiceCollector(Collector):
    """Counters and gauges of the running service, read when Prometheus scrapes."""

    def __init__(self, ctx: Observed) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        """Each metric's value now."""
        s = self.ctx.ingest.stats
        yield CounterMetricFamily("bangpae_fixes_stored", "Fixes durably stored", value=s.fixes)
        yield CounterMetricFamily("bangpae_late_fixes", "Fixes applied as late data", value=s.late)
        yield CounterMetricFamily("bangpae_events", "Events decided and stored", value=s.events)
        yield CounterMetricFamily("bangpae_ingest_batches", "Group commits", value=s.batches)
        yield CounterMetricFamily(
            "bangpae_ingest_failures", "Batches whose transaction failed", value=s.failures
        )
        yield CounterMetricFamily(
            "bangpae_device_auth_limited",
            "Device identifications refused by a failure limit (docs/robustness.md)",
            value=self.ctx.device_keys.guard.refused,
        )
        yield CounterMetricFamily(
            "bangpae_password_pool_busy",
            "Sign-ins and password changes refused because the password pool was full",
            value=self.ctx.passwords.refused,
        )
        e = self.ctx.engine
        yield GaugeMetricFamily("bangpae_orders", "Orders known to the engine", value=e.orders.n)
        yield GaugeMetricFamily("bangpae_devices", "Devices known to the engine", value=e.devices.n)
        if self.ctx.notifier is not None:
            n = self.ctx.notifier.stats
            yield CounterMetricFamily("bangpae_notices_sent", "Notices sent", value=n.sent)
            yield CounterMetricFamily(
                "bangpae_notices_suppressed", "Notices suppressed as duplicates", value=n.suppressed
            )
        if self.ctx.sms is not None:  # texts over SMPP (docs/sms.md)
            m = self.ctx.sms.stats
            for name, value, what in (
                ("queued", m.queued, "Texts handed to the SMPP session"),
                ("submitted", m.submitted, "Texts the SMSC accepted"),
                ("retried", m.retried, "Text attempts tried again"),
                ("failed", m.failed, "Texts given up after their attempts"),
                ("receipts", m.receipts, "Final delivery receipts received"),
                ("binds", m.binds, "Successful binds to the SMSC"),
            ):
                yield CounterMetricFamily(f"bangpae_sms_{name}", what, value=value)
            yield GaugeMetricFamily(
                "bangpae_sms_bound", "Whether the SMPP bind is up", value=int(self.ctx.sms.bound)
            )
