"""Places of refuge near her, and a direction away from him (``docs/refuges.md``).

- :func:`parse_collection`: a GeoJSON FeatureCollection of Points (RFC 7946) checked
  feature by feature, every fault named with where it is.
- :func:`advise`: the refuges nearest her position, and, for each position of his that
  is *disclosed to her* (never any other), the ones that lie towards him or in his
  predicted path left out, and a direction away from him and out of that path.

With no position of his the answer is the refuges by distance alone: callers pass his
position only where the disclosure policy shows it to her, so that what she is told of
places never depends on where he is while that is withheld.

Geometry: each decision works in her local azimuthal equidistant frame (metres east
and north of her, exact distances and bearings from her by GeographicLib); distances
between other points are exact geodesics where a rule compares them, and the frame's
error over the few kilometres searched is far below the metres of the margins.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bangpae.domain import geodesy
from bangpae.domain.model import ACCURACY_UNKNOWN_M

KINDS = ("police_box", "police_station", "store_24h", "station", "hospital", "shelter", "other")

# -- the rules' numbers (docs/refuges.md says why each) --------------------------------------

SEARCH_RADIUS_M = 5000.0  # places farther than this are not offered
MARGIN_M = 100.0  # beyond his accuracy: the default keep-away distance of an order
ACCURACY_MAX_M = 1000.0  # a worse accuracy counts as this (the disc covers the search area)
HORIZON_S = 300.0  # his predicted path covers the next five minutes
MOVING_MPS = 0.5  # slower than this his heading is noise: no path is predicted
SPEED_MAX_MPS = 40.0  # a faster reported speed counts as this (144 km/h)
SPREAD_DEG = 20.0  # his path widens this much each side of his heading (he may turn)
WALK_MPS = 1.4  # her walking pace: the away direction is judged over her next five minutes
AGE_MAX_S = 600.0  # his fix's age counts up to this (a last fix after a lost signal)
AWAY_MIN_DEG = 61.0  # the away direction is never within this of the bearing to him
MIN_APART_M = 1.0  # closer than this, no direction is "away" from him

# -- import limits ---------------------------------------------------------------------------

MAX_FEATURES = 50_000
MAX_NAME = 200
MAX_HOURS = 64
MAX_REF = 100
MAX_ERRORS = 50  # faults reported per import (all are counted)
PHONE = re.compile(r"^\+?[0-9](?:[0-9 -]{0,22}[0-9])?$")


@dataclass(frozen=True, slots=True)
class Refuge:
    """A place she can go: a police box or station, a 24-hour store, a station, ...

    ``ref`` identifies it across imports (the feature's ``id``, else its kind and
    position); ``id`` is the store's (0 before it is stored).
    """

    ref: str
    name_ko: str
    name_en: str
    kind: str
    lat: float
    lon: float
    hours: str | None = None
    phone: str | None = None
    id: int = 0


@dataclass(frozen=True, slots=True)
class Him:
    """His position as shown to her (a disclosed position, never a withheld one)."""

    lat: float
    lon: float
    accuracy_m: float | None = None
    heading_deg: float | None = None
    speed_mps: float | None = None
    age_s: float = 0.0

    @classmethod
    def shown(cls, offender: Mapping[str, Any]) -> Him:
        """From the ``offender`` object of her status (``disclosure.victim_view``)."""
        return cls(
            float(offender["lat"]),
            float(offender["lon"]),
            offender.get("accuracy_m"),
            offender.get("heading_deg"),
            offender.get("speed_mps"),
            float(offender.get("age_s") or 0.0),
        )


@dataclass(frozen=True, slots=True)
class Nearby:
    """A refuge as seen from her: how far, and in which direction."""

    refuge: Refuge
    distance_m: float
    bearing_deg: float
    east_m: float
    north_m: float


@dataclass(frozen=True, slots=True)
class Advice:
    """What she is told: refuges nearest first, a direction away, whether any was left out."""

    refuges: tuple[Nearby, ...]
    away_deg: float | None
    avoided: bool


# -- reading a FeatureCollection -------------------------------------------------------------


class RefugeDataError(ValueError):
    """A FeatureCollection that cannot be imported; ``errors`` says where and why."""

    def __init__(self, errors: list[tuple[tuple[str | int, ...], str]], total: int) -> None:
        self.errors = errors
        self.total = total
        super().__init__(f"{total} fault(s) in the refuges; nothing was imported")


def _text(v: Any, limit: int) -> str | None:
    """A clean one-line text, or None if it is not one."""
    if not isinstance(v, str):
        return None
    text = v.strip()
    if not text or len(text) > limit:
        return None
    # control, format (bidi overrides) and line-separator characters could disguise a name
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        return None
    return text


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def _feature(f: Any, faults: list[tuple[str, str]]) -> Refuge | None:
    """One feature as a refuge, or None with its faults (field, message) appended."""
    if not isinstance(f, Mapping) or f.get("type") != "Feature":
        faults.append(("type", 'a feature is an object with "type": "Feature"'))
        return None
    geom = f.get("geometry")
    lat = lon = None
    if not isinstance(geom, Mapping) or geom.get("type") != "Point":
        faults.append(("geometry", 'a refuge is a "Point" geometry'))
    else:
        c = geom.get("coordinates")
        if not isinstance(c, list) or len(c) not in (2, 3):
            faults.append(("geometry", "coordinates are [longitude, latitude]"))
        else:
            lon, lat = _number(c[0]), _number(c[1])
            if lon is None or lat is None or not (-180 <= lon <= 180 and -90 <= lat <= 90):
                faults.append(("geometry", "coordinates are [longitude, latitude] on Earth"))
                lat = lon = None
    props = f.get("properties")
    if not isinstance(props, Mapping):
        faults.append(("properties", "properties must be an object with a name and a kind"))
        return None
    names = {}
    for key in ("name", "name_ko", "name_en"):
        if props.get(key) is not None:
            names[key] = _text(props[key], MAX_NAME)
            if names[key] is None:
                faults.append((key, f"a name is one line of 1 to {MAX_NAME} characters"))
    ko = names.get("name_ko") or names.get("name") or names.get("name_en")
    en = names.get("name_en") or names.get("name") or names.get("name_ko")
    if not names:
        faults.append(("name", "a refuge needs name, or name_ko and/or name_en"))
    kind = props.get("kind")
    if kind not in KINDS:
        faults.append(("kind", f"kind is one of {', '.join(KINDS)}"))
    hours = phone = None
    if props.get("hours") is not None and (hours := _text(props["hours"], MAX_HOURS)) is None:
        faults.append(("hours", f"hours is one line of at most {MAX_HOURS} characters"))
    if props.get("phone") is not None:
        phone = _text(props["phone"], 24)
        if phone is None or not PHONE.match(phone):
            faults.append(("phone", "phone is digits, spaces and dashes, with an optional +"))
            phone = None
    fid = f.get("id")
    ref = None
    if fid is not None:
        if isinstance(fid, bool) or not isinstance(fid, str | int):
            faults.append(("id", "a feature's id is a string or a number"))
        elif (ref := _text(str(fid), MAX_REF)) is None:
            faults.append(("id", f"a feature's id is 1 to {MAX_REF} characters"))
    if faults or lat is None or lon is None or ko is None or en is None:
        return None
    ref = ref or f"{kind}:{lat:.6f},{lon:.6f}"
    return Refuge(ref, ko, en, str(kind), lat, lon, hours, phone)


def parse_collection(data: Any, max_features: int = MAX_FEATURES) -> list[Refuge]:
    """The refuges of a GeoJSON FeatureCollection of Points, all or none.

    Raises :class:`RefugeDataError` with every fault (the first :data:`MAX_ERRORS`
    described, each located as ``("features", index, field)``).
    """
    if not isinstance(data, Mapping) or data.get("type") != "FeatureCollection":
        raise RefugeDataError([(("type",), 'the file is a GeoJSON "FeatureCollection"')], 1)
    features = data.get("features")
    if not isinstance(features, list):
        raise RefugeDataError([(("features",), "features must be a list")], 1)
    if len(features) > max_features:
        msg = f"{len(features)} features: at most {max_features} in one import"
        raise RefugeDataError([(("features",), msg)], 1)
    out: list[Refuge] = []
    errors: list[tuple[tuple[str | int, ...], str]] = []
    total = 0
    seen: dict[str, int] = {}
    for i, f in enumerate(features):
        faults: list[tuple[str, str]] = []
        refuge = _feature(f, faults)
        if refuge is not None and refuge.ref in seen:
            faults.append(("id", f"the same place as feature {seen[refuge.ref]}"))
        total += len(faults)
        errors += [(("features", i, field), msg) for field, msg in faults][
            : max(0, MAX_ERRORS - len(errors))
        ]
        if refuge is not None and not faults:
            seen[refuge.ref] = i
            out.append(refuge)
    if total:
        raise RefugeDataError(errors, total)
    return out


def feature(r: Refuge) -> dict[str, Any]:
    """A refuge as a GeoJSON Feature (what :func:`parse_collection` reads back)."""
    return {
        "type": "Feature",
        "id": r.ref,
        "geometry": {"type": "Point", "coordinates": [r.lon, r.lat]},
        "properties": {
            "refuge_id": r.id,
            "name_ko": r.name_ko,
            "name_en": r.name_en,
            "kind": r.kind,
            "hours": r.hours,
            "phone": r.phone,
        },
    }


# -- geometry in her local frame -------------------------------------------------------------

Point = tuple[float, float]  # metres east, north of her


def _local(lat0: float, lon0: float, lat: float, lon: float) -> tuple[float, float, Point]:
    """Distance and bearing from her, and the point in her azimuthal equidistant frame."""
    s, azi = geodesy.geodesic_inverse(lat0, lon0, lat, lon)
    a = math.radians(azi)
    return s, azi, (s * math.sin(a), s * math.cos(a))


def angle_between(a: float, b: float) -> float:
    """The smaller angle between two bearings, degrees in [0, 180]."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _segment_distance(b: Point, p: Point) -> float:
    """The distance from ``p`` to the segment from her (the origin) to ``b``."""
    bb = b[0] * b[0] + b[1] * b[1]
    t = 0.0 if bb == 0 else min(1.0, max(0.0, (p[0] * b[0] + p[1] * b[1]) / bb))
    return math.hypot(p[0] - t * b[0], p[1] - t * b[1])


def _clip(poly: Sequence[Point], a: Point, b: Point) -> tuple[float, float] | None:
    """The part ``[t0, t1]`` of the segment a→b inside a convex polygon given
    counter-clockwise (Cyrus-Beck), boundary included; None when it misses it."""
    t0, t1 = 0.0, 1.0
    dx, dy = b[0] - a[0], b[1] - a[1]
    for i, (x1, y1) in enumerate(poly):
        x2, y2 = poly[(i + 1) % len(poly)]
        nx, ny = -(y2 - y1), x2 - x1  # inward for a counter-clockwise polygon
        num = (a[0] - x1) * nx + (a[1] - y1) * ny
        den = dx * nx + dy * ny
        if den == 0:
            if num < 0:
                return None
        elif den > 0:
            t0 = max(t0, -num / den)
        else:
            t1 = min(t1, -num / den)
        if t0 > t1:
            return None
    return t0, t1


def _inside(poly: Sequence[Point], p: Point) -> bool:
    return _clip(poly, p, p) is not None


@dataclass(frozen=True, slots=True)
class Danger:
    """One disclosed position of his in her frame: the disc around him and his path."""

    lat: float
    lon: float
    at: Point
    distance_m: float
    bearing_deg: float
    clearance_m: float  # the disc's radius: his accuracy + margin (+ his fix's age)
    corridor: tuple[Point, ...] | None  # his predicted path, counter-clockwise
    across: Point  # unit vector across his heading (his path's width)


def _speed(him: Him) -> float | None:
    v = him.speed_mps
    if v is None or not math.isfinite(v) or v < MOVING_MPS or him.heading_deg is None:
        return None
    if not math.isfinite(him.heading_deg):
        return None
    return min(float(v), SPEED_MAX_MPS)


def clearance_m(him: Him) -> float:
    """The radius of the disc a walk must keep out of: his accuracy (unknown: 25 m; at
    most 1 km) plus :data:`MARGIN_M`, plus how far he may have gone since his fix."""
    acc = him.accuracy_m
    acc = ACCURACY_UNKNOWN_M if acc is None or not math.isfinite(acc) else max(acc, 0.0)
    age = min(max(him.age_s, 0.0), AGE_MAX_S)
    return min(acc, ACCURACY_MAX_M) + MARGIN_M + age * max(_speed(him) or 0.0, WALK_MPS)


def danger(lat: float, lon: float, him: Him) -> Danger:
    """His disc and predicted path as seen from her position.

    The path (only while he moves at :data:`MOVING_MPS` or more with a heading) runs from
    him along his heading for as far as his speed takes him in :data:`HORIZON_S` (and the
    age of his fix), starting as wide as his disc and widening by :data:`SPREAD_DEG`
    each side.
    """
    d, b, p = _local(lat, lon, him.lat, him.lon)
    x = clearance_m(him)
    h = math.radians(him.heading_deg or 0.0)
    u = (math.sin(h), math.cos(h))
    n = (math.cos(h), -math.sin(h))
    v = _speed(him)
    corridor = None
    if v is not None:
        length = min(v * (HORIZON_S + min(max(him.age_s, 0.0), AGE_MAX_S)), SEARCH_RADIUS_M * 2)
        far = x + length * math.tan(math.radians(SPREAD_DEG))
        end = (p[0] + length * u[0], p[1] + length * u[1])
        corridor = (
            (p[0] - x * n[0], p[1] - x * n[1]),
            (end[0] - far * n[0], end[1] - far * n[1]),
            (end[0] + far * n[0], end[1] + far * n[1]),
            (p[0] + x * n[0], p[1] + x * n[1]),
        )
        area = sum(
            a[0] * c[1] - c[0] * a[1]
            for a, c in zip(corridor, corridor[1:] + corridor[:1], strict=True)
        )
        if area < 0:
            corridor = corridor[::-1]
    return Danger(him.lat, him.lon, p, d, b, x, corridor, n)


def kept(dn: Danger, r: Nearby) -> bool:
    """Whether the walk to a refuge stays clear of him (``docs/refuges.md``, the rules):

    1. the refuge is no nearer him than she is now (it does not lie towards him);
    2. it is nearer her than him (she gets there first);
    3. the straight walk there never comes within his disc, or, when she is inside the
       disc already, never brings her any nearer him;
    4. the walk does not enter his predicted path, or, when she is in it already, leaves
       it sideways, away from its middle, and ends outside it.
    """
    to_him = geodesy.geodesic_distance_m(r.refuge.lat, r.refuge.lon, dn.lat, dn.lon)
    if to_him < dn.distance_m or to_him <= r.distance_m:
        return False
    b = (r.east_m, r.north_m)
    if dn.distance_m < dn.clearance_m:
        if b[0] * dn.at[0] + b[1] * dn.at[1] > 0:
            return False
    elif _segment_distance(b, dn.at) < dn.clearance_m:
        return False
    if dn.corridor is None:
        return True
    if not _inside(dn.corridor, (0.0, 0.0)):
        return _clip(dn.corridor, (0.0, 0.0), b) is None
    if _inside(dn.corridor, b):
        return False
    here = -dn.at[0] * dn.across[0] - dn.at[1] * dn.across[1]
    there = (b[0] - dn.at[0]) * dn.across[0] + (b[1] - dn.at[1]) * dn.across[1]
    return here * there >= 0 and abs(there) > abs(here)


def exposure_m(dn: Danger, bearing: float, length: float) -> float:
    """Metres of a straight walk from her on ``bearing`` that lie in his disc or path."""
    a = math.radians(bearing)
    v = (math.sin(a), math.cos(a))
    along = v[0] * dn.at[0] + v[1] * dn.at[1]
    disc = along * along - dn.distance_m * dn.distance_m + dn.clearance_m * dn.clearance_m
    total = 0.0
    if disc >= 0:
        lo, hi = max(along - math.sqrt(disc), 0.0), min(along + math.sqrt(disc), length)
        total += max(hi - lo, 0.0)
    if dn.corridor is not None:
        part = _clip(dn.corridor, (0.0, 0.0), (v[0] * length, v[1] * length))
        if part is not None:
            total += (part[1] - part[0]) * length
    return total


def away_deg(dangers: Sequence[Danger]) -> float | None:
    """A direction for her to move, away from him and out of his path (None: none is).

    Among the whole degrees at least :data:`AWAY_MIN_DEG` from the bearing to each of
    them, the one whose next five minutes' walk lies least in his discs and paths;
    then one that never closes on him (90° or more off); then the nearest to straight
    away (weighted by nearness, for several of them). Without a path of his it is
    straight away from him.
    """
    if not dangers or any(d.distance_m < MIN_APART_M for d in dangers):
        return None
    ex = -sum(d.at[0] / d.distance_m**2 for d in dangers)
    ny = -sum(d.at[1] / d.distance_m**2 for d in dangers)
    preferred = math.degrees(math.atan2(ex, ny)) % 360.0
    if len(dangers) == 1:
        preferred = (dangers[0].bearing_deg + 180.0) % 360.0
    walk = WALK_MPS * HORIZON_S
    best: tuple[tuple[float, bool, int, int], float] | None = None
    for k in range(-180, 180):
        theta = (preferred + k) % 360.0
        off = min(angle_between(theta, d.bearing_deg) for d in dangers)
        if off < AWAY_MIN_DEG:
            continue
        exposure = round(sum(exposure_m(d, theta, walk) for d in dangers), 1)
        key = (exposure, off < 90.0, abs(k), k)
        if best is None or key < best[0]:
            best = (key, theta)
    return None if best is None else round(best[1], 1) % 360.0


def rank(lat: float, lon: float, refuges: Sequence[Refuge]) -> list[Nearby]:
    """The refuges within :data:`SEARCH_RADIUS_M` of her, nearest first (then by id)."""
    out = []
    for r in refuges:
        d, b, p = _local(lat, lon, r.lat, r.lon)
        if d <= SEARCH_RADIUS_M:
            out.append(Nearby(r, d, b, p[0], p[1]))
    out.sort(key=lambda n: (n.distance_m, n.refuge.id, n.refuge.ref))
    return out


def advise(
    lat: float, lon: float, refuges: Sequence[Refuge], him: Sequence[Him], limit: int
) -> Advice:
    """The ``limit`` refuges nearest her, and a direction away.

    ``him``: his positions *disclosed to her* (one per order of hers that shows one),
    else empty: then the answer is a function of her position and the places alone,
    nearest first, no direction, nothing avoided. With positions of his, refuges that
    fail :func:`kept` for any of them are left out, ``away_deg`` is :func:`away_deg`,
    and ``avoided`` says the list differs from the nearest-first one.
    """
    near = rank(lat, lon, refuges)
    plain = near[:limit]
    if not him:
        return Advice(tuple(plain), None, False)
    dangers = [danger(lat, lon, h) for h in him]
    safe = [n for n in near if all(kept(d, n) for d in dangers)][:limit]
    avoided = [n.refuge.ref for n in safe] != [n.refuge.ref for n in plain]
    return Advice(tuple(safe), away_deg(dangers), avoided)
