"""Places of refuge for her, and their import by the control centre (``docs/refuges.md``).

His position reaches the refuge advice only one way: her status as the disclosure
policy shapes it (:func:`bangpae.services.queries.victim_view`), with the same audit
record of each read as her status. Where it withholds his position, the advice is a
function of her position and the places alone.
"""

from __future__ import annotations

from typing import Any, Protocol

from bangpae.domain import refuge
from bangpae.domain.refuge import Refuge
from bangpae.engine.engine import Engine
from bangpae.services import queries
from bangpae.services.auth import Principal
from bangpae.services.ports import AuditLog, Registry


class RefugeReads(AuditLog, Registry, Protocol):
    """What her refuge advice reads and records in the store (``adapters.store.refuges``)."""

    def refuges_near(self, lat: float, lon: float, radius_m: float) -> list[Refuge]:
        """The refuges in a box around (lat, lon) holding every point within ``radius_m``,
        at most :data:`CANDIDATES`, nearest first by a flat estimate (the caller measures
        each exactly)."""
        ...


def disclosed_positions(
    store: RefugeReads, engine: Engine, who: Principal, now: float, request_id: str | None
) -> list[refuge.Him]:
    """His positions her status shows her now (one per order of hers that shows one),
    each read audited as her status's are; none while the policy withholds them."""
    if who.person_id is None:
        return []
    orders = store.orders_for_person(who.person_id)
    status, reads = queries.victim_view(engine, who, now, orders)
    for record in queries.victim_reads(who, reads, now, request_id):
        store.audit_append(record)
    return [refuge.Him.shown(o["offender"]) for o in status["orders"] if o["offender"]]


def victim_refuges(
    store: RefugeReads,
    engine: Engine,
    who: Principal,
    lat: float,
    lon: float,
    limit: int,
    now: float,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The refuges nearest her position, those towards him or in his path left out while
    his position is disclosed to her, and a direction away from him then."""
    places = store.refuges_near(lat, lon, refuge.SEARCH_RADIUS_M)
    him = disclosed_positions(store, engine, who, now, request_id)
    advice = refuge.advise(lat, lon, places, him, limit)
    return {
        "refuges": [
            {
                "id": n.refuge.id,
                "name": {"ko": n.refuge.name_ko, "en": n.refuge.name_en},
                "kind": n.refuge.kind,
                "lat": round(n.refuge.lat, 6),
                "lon": round(n.refuge.lon, 6),
                "distance_m": int(round(n.distance_m)),
                "bearing_deg": round(n.bearing_deg, 1) % 360.0,
                "hours": n.refuge.hours,
                "phone": n.refuge.phone,
            }
            for n in advice.refuges
        ],
        "away_deg": advice.away_deg,
        "avoided": advice.avoided,
    }
