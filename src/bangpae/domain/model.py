"""Values of the pure core: fixes, people, devices, orders, zones, tiers and events.

Times are POSIX seconds (UTC) as floats: the core never reads a clock, callers
pass ``now``. Distances are metres, angles degrees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Any

# An accuracy worse than this counts as this and flags the fix `poor_accuracy`.
ACCURACY_CAP_M = 100.0
# A fix that carries no accuracy counts as this.
ACCURACY_UNKNOWN_M = 25.0


class Tier(IntEnum):
    """Proximity tier of an order, ordered by severity (uncertain stands apart)."""

    CLEAR = 0
    NOTIFY = 1
    REVEAL = 2
    BREACH = 3
    UNCERTAIN = 4

    @property
    def label(self) -> str:
        """The contract's lower-case name of the tier."""
        return self.name.lower()


class Alarm(StrEnum):
    """Alarms a device may report with a message."""

    SOS = "sos"
    SOS_SILENT = "sos_silent"  # an SOS the sender cannot be called back on
    TAMPER = "tamper"
    CASE_OPEN = "case_open"
    POWER_CUT = "power_cut"
    LOW_BATTERY = "low_battery"
    VIBRATION = "vibration"


class PersonKind(StrEnum):
    """Who a person is in the service."""

    OFFENDER = "offender"
    VICTIM = "victim"
    OFFICER = "officer"


class DeviceKind(StrEnum):
    """What a device is."""

    ANKLE_MONITOR = "ankle_monitor"
    PHONE = "phone"
    WATCH = "watch"


class EventKind(StrEnum):
    """Every event the core can raise (past-tense facts)."""

    TIER_CHANGED = "tier_changed"
    # what the protected person is shown changed (docs/disclosure.md): her notices follow it
    SHOWN_TIER_CHANGED = "shown_tier_changed"
    # a fix of hers did not fit her trusted track: kept as evidence, never used to disclose
    POSITION_IMPLAUSIBLE = "position_implausible"
    # a device's fixes failed on their own, after a failed batch was taken apart: refused,
    # while the healthy devices' fixes of that batch were stored
    FIX_REFUSED = "fix_refused"
    RETRO_BREACH = "retro_breach"
    APPROACH_FAST = "approach_fast"
    DISCLOSURE_MISUSE = "disclosure_misuse"
    # an operator kept or lifted the pause of an order's disclosure, with a reason
    DISCLOSURE_DECIDED = "disclosure_decided"
    VICTIM_LOCATION_STALE = "victim_location_stale"
    ZONE_ENTER = "zone_enter"
    ZONE_EXIT = "zone_exit"
    CURFEW_VIOLATION = "curfew_violation"
    TAMPER = "tamper"
    CASE_OPEN = "case_open"
    POWER_CUT = "power_cut"
    LOW_BATTERY = "low_battery"
    OFFLINE = "offline"
    NO_FIX = "no_fix"
    POSITION_JUMP = "position_jump"
    SOS = "sos"
    # two live connections log in as one tracker: someone runs a copy of it (raised by the
    # tracker sessions, not by fixes; docs/devices-and-commands.md)
    DEVICE_CLONED = "device_cloned"
    # raised by the control centre's timers, not by fixes: a critical incident nobody
    # acknowledged was escalated to the supervisor (published on the ops stream)
    INCIDENT_ESCALATED = "incident_escalated"


@dataclass(frozen=True, slots=True)
class Fix:
    """One position report of one device, as decoded and validated."""

    device_id: int
    fix_time: float
    lat: float
    lon: float
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    battery_pct: float | None = None
    valid: bool = True
    alarms: frozenset[str] = frozenset()
    received_at: float | None = None


@dataclass(frozen=True, slots=True)
class Person:
    """An offender, a victim or an officer."""

    id: int
    kind: PersonKind
    name: str


@dataclass(frozen=True, slots=True)
class Device:
    """A tracker bound to one person."""

    id: int
    identifier: str
    kind: DeviceKind
    protocol: str
    person_id: int


# A device's credential as the store keeps it: id, identifier, secret hash (None: keyless),
# lenient CRC, registered at.
DeviceCredential = tuple[int, str, str | None, bool, float]


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """A recurring window: ``day`` 0 = Monday; minutes from local midnight, end exclusive.

    A window whose end is not after its start runs past midnight into the next day.
    """

    day: int
    start_min: int
    end_min: int


@dataclass(frozen=True, slots=True)
class Zone:
    """An exclusion zone (offender must stay out) or a curfew's inclusion zone.

    ``geometry`` is a GeoJSON geometry: a Polygon, or a Point with ``radius_m``.
    ``schedule`` empty means always in force.
    """

    id: str
    name: str
    geometry: Mapping[str, Any]
    radius_m: float | None = None
    schedule: tuple[WeeklyWindow, ...] = ()


@dataclass(frozen=True, slots=True)
class Order:
    """A protective order linking one offender to one victim, with the defaults of docs/tiers.md."""

    id: int
    offender_id: int
    victim_id: int
    notify_radius_m: float = 2000.0
    reveal_radius_m: float = 600.0
    keep_away_m: float = 100.0
    hysteresis_m: float = 50.0
    zones: tuple[Zone, ...] = ()
    curfews: tuple[Zone, ...] = ()
    stale_after_s: float = 120.0
    offline_after_s: float = 300.0
    no_fix_after_s: float = 300.0
    valid_from: float | None = None
    valid_until: float | None = None
    profile: str = "kr"
    timezone: str = "Asia/Seoul"

    def active(self, now: float) -> bool:
        """Whether the order is in force at ``now``."""
        if self.valid_from is not None and now < self.valid_from:
            return False
        return self.valid_until is None or now < self.valid_until

    def radius(self, tier: Tier) -> float:
        """The entry radius of ``tier`` (clear has none: infinity)."""
        if tier == Tier.BREACH:
            return self.keep_away_m
        if tier == Tier.REVEAL:
            return self.reveal_radius_m
        if tier == Tier.NOTIFY:
            return self.notify_radius_m
        return float("inf")


def _frozen(data: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True, slots=True)
class Event:
    """A fact the core decided: what happened, to which order or person, caused by what.

    ``at`` is the time of the cause (a fix time or a timer deadline); ``late`` marks
    events decided from store-and-forward data after the fact.
    """

    id: str
    kind: EventKind
    at: float
    order_id: int | None = None
    person_id: int | None = None
    device_id: int | None = None
    tier_from: Tier | None = None
    tier_to: Tier | None = None
    distance_m: float | None = None
    late: bool = False
    data: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))


def event_id(kind: str, *cause: object) -> str:
    """A deterministic id: the same kind and cause always give the same id."""
    text = "\x1f".join([kind, *(repr(c) for c in cause)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def make_event(kind: EventKind, at: float, *cause: object, **fields: Any) -> Event:
    """Build an event whose id is the hash of its kind, time and cause."""
    data = fields.pop("data", None)
    return Event(
        id=event_id(kind.value, at, *cause), kind=kind, at=at, data=_frozen(data), **fields
    )


@dataclass(frozen=True, slots=True)
class StoredFix:
    """A fix as stored, with its row id and whether it arrived late."""

    id: int
    fix: Fix
    late: bool
