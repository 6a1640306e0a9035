"""What the routes use of the application context, typed.

The composition root builds the context (``bangpae.app.AppContext``) and imports the
API, so the API names the context by its shape rather than by that class: what is
handed to :func:`~bangpae.api.factory.create_app` must satisfy :class:`RouteContext`,
which mypy checks where it is passed in.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from prometheus_client import CollectorRegistry

from bangpae.adapters.listeners.budget import Budgeted
from bangpae.adapters.store import Store
from bangpae.config import Settings
from bangpae.domain.access import Policy
from bangpae.engine.engine import Engine
from bangpae.services.commands import CommandHub
from bangpae.services.devicekeys import DeviceKeys
from bangpae.services.devices import DeviceGate
from bangpae.services.handoffs import Handoffs
from bangpae.services.ingest import Ingest
from bangpae.services.notices import Notifier
from bangpae.services.passwords import PasswordPool
from bangpae.services.ports import Bus, Clock
from bangpae.services.ratelimit import RateLimiter
from bangpae.services.sos import SosWatch


class RouteContext(Protocol):
    """Everything a route may use, built once per process by the composition root."""

    settings: Settings
    store: Store
    ingest: Ingest
    clock: Clock
    secret: bytes  # signs access tokens
    metrics: CollectorRegistry
    access_policy: Policy
    commands: CommandHub  # her app's pursuit mode
    own_reports: RateLimiter  # her own reports from the app, per person
    passwords: PasswordPool  # people's argon2 checks
    device_keys: DeviceKeys
    device_gate: DeviceGate
    sos: SosWatch
    pin_failures: RateLimiter  # wrong PINs per person
    pin_locks: dict[int, asyncio.Lock]  # one PIN check at a time per user
    handoffs: Handoffs | None
    notifier: Notifier | None
    push_key: str  # the VAPID public key browsers subscribe with
    budgets: dict[str, Budgeted]  # each listener's connection budget, by listener name

    @property
    def bus(self) -> Bus:
        """Where stored events are published and followed."""
        ...

    @property
    def engine(self) -> Engine:
        """The live engine (the ingest worker may rebuild it)."""
        ...
