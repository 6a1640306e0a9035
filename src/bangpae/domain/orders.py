"""A protective order as entered, checked before it is kept: radii in order, a known time
zone, a validity that ends after it begins, zones that compile."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from bangpae.domain.model import Order, WeeklyWindow, Zone
from bangpae.domain.zones import MAX_ZONE_EXTENT_M, compile_zone


class OrderError(ValueError):
    """An order as entered that cannot be kept; the message says why, for whoever entered it."""


class WindowEntry(Protocol):
    """A weekly window as entered, in the order's time zone."""

    @property
    def day(self) -> int:
        """0 is Monday, 6 Sunday."""

    @property
    def start(self) -> str:
        """``HH:MM`` from local midnight."""

    @property
    def end(self) -> str:
        """``HH:MM``, exclusive; not after ``start``: the window runs past midnight."""


class ZoneEntry(Protocol):
    """A zone or curfew as entered."""

    @property
    def geometry(self) -> Mapping[str, Any]:
        """A GeoJSON Polygon, or a Point."""

    @property
    def properties(self) -> Mapping[str, Any]:
        """``radius_m`` (a Point's), and optionally ``id`` and ``name``."""

    @property
    def schedule(self) -> Sequence[WindowEntry]:
        """When it is in force; empty: always."""


class OrderEntry(Protocol):
    """A protective order as entered."""

    @property
    def offender_id(self) -> int:
        """Whom the order keeps away."""

    @property
    def victim_id(self) -> int:
        """Whom it protects."""

    @property
    def notify_radius_m(self) -> float:
        """Within this, she is told he is near."""

    @property
    def reveal_radius_m(self) -> float:
        """Within this, she may be shown where he is."""

    @property
    def keep_away_m(self) -> float:
        """Within this, the order is breached."""

    @property
    def hysteresis_m(self) -> float:
        """How far beyond a radius he must be to leave its tier."""

    @property
    def zones(self) -> Sequence[ZoneEntry]:
        """Where he must not be."""

    @property
    def curfews(self) -> Sequence[ZoneEntry]:
        """Where he must be, when their schedules say."""

    @property
    def stale_after_s(self) -> float:
        """How old either one's newest fix may be for a distance to be shown to her."""

    @property
    def valid_from(self) -> datetime | None:
        """In force from (with its zone); None: from now."""

    @property
    def valid_until(self) -> datetime | None:
        """In force until (with its zone); None: until lifted."""

    @property
    def profile(self) -> str:
        """The country profile of its response playbooks (``kr``, ``fr``, ``es``)."""

    @property
    def timezone(self) -> str:
        """The IANA time zone its schedules are read in."""


def order_from(entry: OrderEntry, now: float) -> Order:
    """The order entered (id 0, in force from ``now`` unless it says when), or OrderError
    naming the first rule it breaks."""
    if not entry.keep_away_m < entry.reveal_radius_m < entry.notify_radius_m:
        raise OrderError("radii must satisfy keep_away_m < reveal_radius_m < notify_radius_m")
    try:
        ZoneInfo(entry.timezone)
    except (KeyError, ValueError, OSError):  # "Asia" is a directory of the zone database
        raise OrderError(f"unknown time zone {entry.timezone!r}") from None
    valid_from = epoch(entry.valid_from) or now
    valid_until = epoch(entry.valid_until)
    if valid_until is not None and valid_until <= valid_from:
        raise OrderError("valid_until must come after valid_from")
    return Order(
        id=0,
        offender_id=entry.offender_id,
        victim_id=entry.victim_id,
        notify_radius_m=entry.notify_radius_m,
        reveal_radius_m=entry.reveal_radius_m,
        keep_away_m=entry.keep_away_m,
        hysteresis_m=entry.hysteresis_m,
        zones=tuple(zone_from(i, z) for i, z in enumerate(entry.zones)),
        curfews=tuple(zone_from(i, z) for i, z in enumerate(entry.curfews)),
        stale_after_s=entry.stale_after_s,
        valid_from=valid_from,
        valid_until=valid_until,
        profile=entry.profile,
        timezone=entry.timezone,
    )


def zone_from(i: int, entry: ZoneEntry) -> Zone:
    """The ``i``-th zone (or curfew) entered, compiled once to prove it can be, or
    OrderError."""
    gtype = entry.geometry.get("type")
    radius = entry.properties.get("radius_m")
    if gtype == "Point" and not (
        isinstance(radius, int | float) and 0 < radius <= MAX_ZONE_EXTENT_M
    ):
        raise OrderError("a Point zone needs properties.radius_m between 0 and 50,000 m")
    if gtype not in ("Point", "Polygon"):
        raise OrderError("a zone is a GeoJSON Polygon, or a Point with radius_m")
    zone = Zone(
        id=str(entry.properties.get("id", i)),
        name=str(entry.properties.get("name", "")),
        geometry=entry.geometry,
        radius_m=float(radius) if radius else None,
        schedule=tuple(
            WeeklyWindow(w.day, _minutes(w.start), _minutes(w.end)) for w in entry.schedule
        ),
    )
    try:
        compile_zone(zone)
    except (ValueError, TypeError, IndexError) as exc:
        raise OrderError(f"zone {i}: {exc}") from None
    return zone


def epoch(t: datetime | None) -> float | None:
    """POSIX seconds of a time that names its zone (None stays None), or OrderError."""
    if t is None:
        return None
    if t.tzinfo is None:
        raise OrderError("times need a zone, e.g. 2026-11-23T09:00:00+09:00")
    return t.timestamp()


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)
