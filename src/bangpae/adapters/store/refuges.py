"""Store methods for places of refuge: imported by the control centre, found near her.

A mixin of :class:`~bangpae.adapters.store.store.Store`; every method runs in its own
transaction and has committed when it returns. The places are public (police boxes,
stations), so they are kept in clear; an import is audited in its own transaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update

from bangpae.adapters.store import schema as s
from bangpae.adapters.store.audit import AuditStore
from bangpae.domain import geodesy
from bangpae.domain.audit import AuditEntry
from bangpae.domain.errors import Invalid
from bangpae.domain.refuge import Refuge, parse_collection

MAX_REFUGES = 50_000  # in all: the nearest are found by a bounding box, then exactly
CANDIDATES = 500  # refuges near her read at most, nearest first by a flat estimate
MODES = ("merge", "replace")
# Sample data for the demo: public places around Seoul City Hall, positions approximate.
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "refuges-seoul.geojson"


def sample_refuges() -> list[Refuge]:
    """The refuges of the sample file shipped for the demo (not for real use)."""
    return parse_collection(json.loads(SAMPLE.read_text(encoding="utf-8")))


@dataclass(frozen=True, slots=True)
class ImportCounts:
    """What an import changed."""

    added: int
    updated: int
    removed: int
    total: int

    def as_dict(self) -> dict[str, int]:
        """JSON for the API and the command line."""
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "total": self.total,
        }


def _refuge(r: Any) -> Refuge:
    return Refuge(
        r.ref, r.name_ko, r.name_en, r.kind, float(r.lat), float(r.lon), r.hours, r.phone, int(r.id)
    )


def bounding_box(lat: float, lon: float, radius_m: float) -> ColumnElement[bool]:
    """Rows within a box that holds every point ``radius_m`` of (lat, lon) (1 % to spare),
    across the antimeridian and over a pole too."""
    t = s.refuges
    dlat = math.degrees(radius_m / float(geodesy.meridional_radius(lat))) * 1.01
    lo_lat, hi_lat = max(lat - dlat, -90.0), min(lat + dlat, 90.0)
    rows = and_(t.c.lat >= lo_lat, t.c.lat <= hi_lat)
    widest = max(abs(lo_lat), abs(hi_lat))
    if widest >= 89.0:
        return rows  # near a pole every longitude is near
    n = float(geodesy.prime_vertical_radius(widest)) * math.cos(math.radians(widest))
    dlon = math.degrees(radius_m / n) * 1.01
    if dlon >= 180.0:
        return rows
    west, east = lon - dlon, lon + dlon
    if west < -180.0:
        return and_(rows, or_(t.c.lon >= west + 360.0, t.c.lon <= east))
    if east > 180.0:
        return and_(rows, or_(t.c.lon >= west, t.c.lon <= east - 360.0))
    return and_(rows, t.c.lon >= west, t.c.lon <= east)


class RefugeStore(AuditStore):
    """Places of refuge."""

    def import_refuges(
        self,
        refuges: Sequence[Refuge],
        mode: str,
        *,
        actor: str,
        role: str,
        at: float,
        request_id: str | None = None,
    ) -> ImportCounts:
        """Keep these refuges, all or none, with the audit record of the import.

        ``merge``: a refuge whose ``ref`` is kept already is updated, others are added;
        ``replace``: as merge, and every refuge not in this import is removed.
        """
        if mode not in MODES:
            raise Invalid(f"an import merges or replaces, not {mode!r}")
        t = s.refuges
        with self._audit_lock, self._write() as c:
            known = {r.ref: int(r.id) for r in c.execute(select(t.c.ref, t.c.id))}
            incoming = {r.ref for r in refuges}
            gone = [ref for ref in known if ref not in incoming] if mode == "replace" else []
            fresh = [r for r in refuges if r.ref not in known]
            total = len(known) - len(gone) + len(fresh)
            if total > MAX_REFUGES:
                raise Invalid(f"{total} refuges in all: at most {MAX_REFUGES} are kept")
            for k in range(0, len(gone), 500):  # under any driver's limit of parameters
                c.execute(delete(t).where(t.c.ref.in_(gone[k : k + 500])))
            rows = [
                {
                    "ref": r.ref,
                    "name_ko": r.name_ko,
                    "name_en": r.name_en,
                    "kind": r.kind,
                    "lat": r.lat,
                    "lon": r.lon,
                    "hours": r.hours,
                    "phone": r.phone,
                    "imported_at": at,
                }
                for r in refuges
            ]
            updated = [row for row in rows if row["ref"] in known]
            for row in updated:
                c.execute(update(t).where(t.c.id == known[row["ref"]]).values(**row))
            self._insert_rows(c, t, [row for row in rows if row["ref"] not in known], ids=False)
            counts = ImportCounts(len(fresh), len(updated), len(gone), total)
            fields = [f"mode={mode}", *(f"{k}={v}" for k, v in counts.as_dict().items())]
            self._audit_insert(
                c,
                AuditEntry(
                    actor,
                    role,
                    "import_refuges",
                    "refuges",
                    "administration",
                    fields,
                    at=at,
                    request_id=request_id,
                ),
            )
        return counts

    def refuges_near(self, lat: float, lon: float, radius_m: float) -> list[Refuge]:
        """The refuges in a box around (lat, lon) holding every point within ``radius_m``,
        at most :data:`CANDIDATES`, nearest first by a flat estimate (the caller measures
        each exactly)."""
        t = s.refuges
        k = math.cos(math.radians(lat)) ** 2
        flat = (t.c.lat - lat) * (t.c.lat - lat) + (t.c.lon - lon) * (t.c.lon - lon) * k
        q = (
            select(t)
            .where(bounding_box(lat, lon, radius_m))
            .order_by(flat, t.c.id)
            .limit(CANDIDATES)
        )
        with self._read() as c:
            return [_refuge(r) for r in c.execute(q)]

    def refuges(self, after_id: int = 0, limit: int = MAX_REFUGES) -> list[Refuge]:
        """Every refuge, in id order, after ``after_id``."""
        t = s.refuges
        q = select(t).where(t.c.id > after_id).order_by(t.c.id).limit(limit)
        with self._read() as c:
            return [_refuge(r) for r in c.execute(q)]

    def refuge_count(self) -> int:
        """How many refuges are kept."""
        with self._read() as c:
            return int(c.execute(select(func.count()).select_from(s.refuges)).scalar_one())
