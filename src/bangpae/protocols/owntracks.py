"""OwnTracks JSON (HTTP body or MQTT payload): ``_type: location`` messages, one or an array.

Identity, most specific first: the message's ``topic``, then the app's
``X-Limit-U``/``X-Limit-D`` headers (or an MQTT topic) as ``owntracks/user/device``,
then its two-letter ``tid``. Units: ``vel`` km/h, ``cog`` degrees, ``acc`` metres,
``batt`` percent, ``tst`` Unix seconds. Other message types (transition, lwt,
status, waypoint, card) carry no fix and are reported back as ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from bangpae.domain.retention import AHEAD, too_far_ahead
from bangpae.protocols.errors import FrameError
from bangpae.protocols.osmand import DecodedFix


@dataclass(frozen=True, slots=True)
class Decoded:
    """The fixes of one OwnTracks body, and the types it ignored."""

    fixes: list[DecodedFix]
    ignored: list[str]


def _num(msg: dict[str, Any], key: str, required: bool = False) -> float | None:
    value = msg.get(key)
    if value is None:
        if required:
            raise FrameError(f"{key}: missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FrameError(f"{key}: not a number")
    if not math.isfinite(value):
        raise FrameError(f"{key}: not finite")
    return float(value)


def _location(msg: dict[str, Any], identity: str | None, received_at: float) -> DecodedFix:
    ident = str(msg.get("topic") or identity or msg.get("tid") or "").strip()
    if not ident or len(ident) > 64:
        raise FrameError("no device identity (topic, X-Limit-U/D headers or tid)")
    lat, lon = _num(msg, "lat", True), _num(msg, "lon", True)
    assert lat is not None and lon is not None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise FrameError("lat/lon out of range")
    tst = _num(msg, "tst")
    t = received_at if tst is None else tst
    if too_far_ahead(t, received_at):
        raise FrameError(f"tst: {AHEAD}")
    vel, cog = _num(msg, "vel"), _num(msg, "cog")
    acc, batt = _num(msg, "acc"), _num(msg, "batt")
    if acc is not None and not 0 <= acc <= 100_000:
        raise FrameError("acc: not plausible")
    return DecodedFix(
        identifier=ident,
        fix_time=t,
        lat=lat,
        lon=lon,
        accuracy_m=acc,
        speed_mps=None if vel is None or vel < 0 else vel / 3.6,
        heading_deg=None if cog is None or cog < 0 else cog % 360.0,
        battery_pct=None if batt is None or batt < 0 else min(batt, 100.0),
    )


def decode(body: bytes, identity: str | None, received_at: float) -> Decoded:
    """Decode a body holding one message or an array of messages."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise FrameError("body: not JSON") from None
    messages = doc if isinstance(doc, list) else [doc]
    fixes, ignored = [], []
    for msg in messages[:100]:
        if not isinstance(msg, dict):
            raise FrameError("message: expected a JSON object")
        kind = str(msg.get("_type", ""))
        if kind == "location":
            fixes.append(_location(msg, identity, received_at))
        else:
            ignored.append(kind or "untyped")
    return Decoded(fixes, ignored)


def identity_from_headers(user: str | None, device: str | None) -> str | None:
    """``owntracks/user/device`` from the app's X-Limit-U and X-Limit-D headers."""
    if user and device:
        return f"owntracks/{user.strip()}/{device.strip()}"
    return None
