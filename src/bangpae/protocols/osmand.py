"""OsmAnd / Traccar Client over HTTP: query or form parameters, and the JSON body.

Units as Traccar reads them: ``speed`` in the query form is in knots, the JSON
form's ``coords.speed`` in m/s; ``heading`` −1 and ``speed`` −1 mean unknown;
JSON battery ``level`` is a fraction (−1 unknown). A timestamp is Unix seconds,
Unix milliseconds, or ISO 8601 (a time without a zone is read as UTC). A message
with no coordinates is a report without a GPS fix (``valid`` false).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bangpae.domain.model import Fix
from bangpae.domain.retention import AHEAD, too_far_ahead
from bangpae.protocols.errors import FrameError

KNOT_MPS = 0.514444
MAX_SPEED_MPS = 350.0
MAX_ACCURACY_M = 100_000.0
ALARMS = {
    "sos": "sos",
    "tampering": "tamper",
    "tamper": "tamper",
    "removing": "tamper",
    "powercut": "power_cut",
    "lowbattery": "low_battery",
    "vibration": "vibration",
}


@dataclass(frozen=True, slots=True)
class DecodedFix:
    """One OsmAnd report: the device's identifier and the fix it describes."""

    identifier: str
    fix_time: float
    lat: float
    lon: float
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    battery_pct: float | None = None
    valid: bool = True
    alarms: frozenset[str] = field(default_factory=frozenset)
    key: str | None = None
    mock: bool = False

    def fix(self, device_id: int, received_at: float) -> Fix:
        """The fix it describes, as the device's."""
        return Fix(
            device_id=device_id,
            fix_time=self.fix_time,
            lat=self.lat,
            lon=self.lon,
            accuracy_m=self.accuracy_m,
            speed_mps=self.speed_mps,
            heading_deg=self.heading_deg,
            battery_pct=self.battery_pct,
            valid=self.valid,
            alarms=self.alarms,
            received_at=received_at,
        )


def _float(value: Any, name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise FrameError(f"{name}: not a number") from None  # a near-position, not quoted
    if not math.isfinite(x):
        raise FrameError(f"{name}: not finite")
    return x


def _opt(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    return _float(value, name)


def parse_time(value: Any, received_at: float) -> float:
    """A timestamp as Unix seconds, Unix milliseconds or ISO 8601; missing: received time."""
    if value is None or value == "":
        return received_at
    text = str(value).strip()
    try:
        x = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise FrameError(f"timestamp: unreadable {text[:40]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    if not math.isfinite(x):
        raise FrameError("timestamp: not finite")
    return x / 1000.0 if x > 1e11 else x  # milliseconds since 1973 exceed 1e11


def _validate(fix: DecodedFix, received_at: float) -> DecodedFix:
    if not fix.identifier or len(fix.identifier) > 64:
        raise FrameError("id: missing or longer than 64 characters")
    if fix.valid:
        if not -90.0 <= fix.lat <= 90.0:
            # not quoted: the reason is logged, and a lat out of range is often a lon
            raise FrameError("lat: out of range")
        if not -180.0 <= fix.lon <= 180.0:
            raise FrameError("lon: out of range")
    if too_far_ahead(fix.fix_time, received_at):
        raise FrameError(f"timestamp: {AHEAD}")
    if fix.fix_time < 946684800.0:
        raise FrameError("timestamp: before the year 2000")
    if fix.speed_mps is not None and not 0 <= fix.speed_mps <= MAX_SPEED_MPS:
        raise FrameError(f"speed: {fix.speed_mps:.1f} m/s is not plausible")
    if fix.accuracy_m is not None and not 0 <= fix.accuracy_m <= MAX_ACCURACY_M:
        raise FrameError(f"accuracy: {fix.accuracy_m} m is not plausible")
    return fix


def _alarms(value: Any) -> frozenset[str]:
    if not value:
        return frozenset()
    out = set()
    for part in str(value).split(","):
        name = ALARMS.get(part.strip().replace("_", "").lower())
        if name:
            out.add(name)
    return frozenset(out)


def decode_query(params: Mapping[str, str], received_at: float) -> DecodedFix:
    """Decode OsmAnd query or form parameters."""
    ident = params.get("id") or params.get("deviceid") or ""
    if not ident:
        raise FrameError("id: missing")
    lat_s, lon_s = params.get("lat"), params.get("lon")
    if (lat_s is None or lon_s is None) and params.get("location"):
        parts = params["location"].split(",")
        if len(parts) != 2:
            raise FrameError("location: expected 'lat,lon'")
        lat_s, lon_s = parts
    valid = lat_s is not None and lon_s is not None
    if "valid" in params and valid:
        valid = params["valid"].strip().lower() in ("1", "true")
    lat = _float(lat_s, "lat") if lat_s is not None else 0.0
    lon = _float(lon_s, "lon") if lon_s is not None else 0.0
    speed = _opt(params.get("speed"), "speed")
    heading = _opt(params.get("bearing", params.get("heading")), "bearing")
    accuracy = _opt(params.get("accuracy"), "accuracy")
    batt = _opt(params.get("batt"), "batt")
    fix = DecodedFix(
        identifier=ident.strip(),
        fix_time=parse_time(params.get("timestamp"), received_at),
        lat=lat,
        lon=lon,
        accuracy_m=accuracy,
        speed_mps=None if speed is None or speed < 0 else speed * KNOT_MPS,
        heading_deg=None if heading is None or heading < 0 else heading % 360.0,
        battery_pct=None if batt is None or batt < 0 else min(batt, 100.0),
        valid=valid,
        alarms=_alarms(params.get("alarm")),
        key=params.get("key") or None,
    )
    return _validate(fix, received_at)


def decode_json(body: bytes, received_at: float) -> DecodedFix:
    """Decode the JSON body Traccar Client 9 and later sends."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise FrameError("body: not JSON") from None
    if not isinstance(doc, dict):
        raise FrameError("body: expected a JSON object")
    loc = doc.get("location")
    if isinstance(loc, list):  # a batch of one is what the client sends; take each in turn
        raise FrameError("location: arrays are not supported, send one location per request")
    if not isinstance(loc, dict):
        raise FrameError("location: missing")
    coords = loc.get("coords")
    if not isinstance(coords, dict):
        raise FrameError("location.coords: missing")
    ident = str(doc.get("device_id") or "").strip()
    if not ident:
        raise FrameError("device_id: missing")
    speed = _opt(coords.get("speed"), "speed")
    heading = _opt(coords.get("heading"), "heading")
    battery = loc.get("battery") if isinstance(loc.get("battery"), dict) else {}
    level = _opt(battery.get("level"), "battery.level")
    alarms = _alarms(loc.get("alarm") or (loc.get("extras") or {}).get("alarm"))
    if loc.get("event") == "sos":
        alarms = alarms | {"sos"}
    fix = DecodedFix(
        identifier=ident,
        fix_time=parse_time(loc.get("timestamp"), received_at),
        lat=_float(coords.get("latitude"), "latitude"),
        lon=_float(coords.get("longitude"), "longitude"),
        accuracy_m=_opt(coords.get("accuracy"), "accuracy"),
        speed_mps=None if speed is None or speed < 0 else speed,
        heading_deg=None if heading is None or heading < 0 else heading % 360.0,
        battery_pct=None if level is None or level < 0 else min(level * 100.0, 100.0),
        valid=True,
        alarms=alarms,
        key=str(doc["key"]) if doc.get("key") else None,
        mock=bool(loc.get("mock")),
    )
    return _validate(fix, received_at)
