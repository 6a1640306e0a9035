"""Routes of places of refuge: the control centre imports them, she finds the nearest.

The import (supervisor, admin) takes a GeoJSON FeatureCollection of Points, all or
none, with every fault located; it is audited. Her list is read with her position in
the query (she reads places, not people); his position enters it only as her status
shows it to her (``services/refuges.py``, ``docs/refuges.md``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bangpae.api import problems
from bangpae.api.context import RouteContext
from bangpae.api.deps import Ctx, RequestId, require
from bangpae.api.schemas import MAX_ID
from bangpae.domain import refuge
from bangpae.services import refuges as service
from bangpae.services.auth import Principal

router = APIRouter(prefix="/api/v1", tags=["refuges"])
Importer = Annotated[Principal, Depends(require("supervisor", "admin"))]
Staff = Annotated[Principal, Depends(require("operator", "supervisor", "admin"))]
Victim = Annotated[Principal, Depends(require("victim"))]
PAGE = 5000


class ImportCounts(BaseModel):
    """What an import changed, and how many refuges are kept now."""

    added: int
    updated: int
    removed: int
    total: int


class PointGeometry(BaseModel):
    """A GeoJSON Point: [longitude, latitude]."""

    type: Literal["Point"]
    coordinates: list[float]


class RefugeProperties(BaseModel):
    """A refuge's properties, as an import reads them (plus the store's id)."""

    refuge_id: int
    name_ko: str
    name_en: str
    kind: str
    hours: str | None
    phone: str | None


class RefugeFeature(BaseModel):
    """A refuge as a GeoJSON Feature; ``id`` identifies it to a later merge."""

    type: Literal["Feature"]
    id: str
    geometry: PointGeometry
    properties: RefugeProperties


class RefugeCollection(BaseModel):
    """Refuges as a GeoJSON FeatureCollection, in id order; ``next_after_id`` pages on."""

    type: Literal["FeatureCollection"]
    features: list[RefugeFeature]
    next_after_id: int | None


class RefugeName(BaseModel):
    """A refuge's name in Korean and English."""

    ko: str
    en: str


class NearRefuge(BaseModel):
    """A refuge as seen from her: how far, which way, and how to call it."""

    id: int
    name: RefugeName
    kind: str
    lat: float
    lon: float
    distance_m: int
    bearing_deg: float = Field(description="From her, degrees clockwise from north.")
    hours: str | None
    phone: str | None


class VictimRefuges(BaseModel):
    """The refuges nearest her; while his position is shown to her, those towards him or
    in his path left out (``avoided``) and a direction away from him (``away_deg``)."""

    refuges: list[NearRefuge]
    away_deg: float | None
    avoided: bool


def _import(
    ctx: RouteContext, who: Principal, data: Any, mode: str, rid: str
) -> ImportCounts | JSONResponse:
    try:
        places = refuge.parse_collection(data)
    except refuge.RefugeDataError as exc:
        errors = [{"loc": list(loc), "msg": msg} for loc, msg in exc.errors]
        return problems.problem(422, str(exc), errors=errors)
    counts = ctx.store.import_refuges(
        places,
        mode,
        actor=f"user:{who.user_id}:{who.username}",
        role=who.role,
        at=ctx.clock.now(),
        request_id=rid,
    )
    return ImportCounts(**counts.as_dict())


@router.post("/refuges/import", response_model=ImportCounts)
async def import_refuges(
    ctx: Ctx,
    who: Importer,
    rid: RequestId,
    data: Annotated[dict[str, Any], Body()],
    mode: Annotated[Literal["merge", "replace"], Query()] = "merge",
) -> Any:
    """Import places of refuge from a GeoJSON FeatureCollection of Points, all or none
    (every fault located); ``replace`` also removes those not in it (docs/refuges.md)."""
    return await asyncio.to_thread(_import, ctx, who, data, mode, rid)


@router.get("/refuges", response_model=RefugeCollection)
async def list_refuges(
    ctx: Ctx,
    who: Staff,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE)] = PAGE,
) -> dict[str, Any]:
    """The refuges kept, as GeoJSON, in id order (page on with ``after_id``)."""
    rows = await asyncio.to_thread(ctx.store.refuges, after_id, limit)
    return {
        "type": "FeatureCollection",
        "features": [refuge.feature(r) for r in rows],
        "next_after_id": rows[-1].id if len(rows) == limit else None,
    }


@router.get("/victim/refuges", response_model=VictimRefuges, tags=["victim"])
async def victim_refuges(
    ctx: Ctx,
    who: Victim,
    rid: RequestId,
    lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False)],
    lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False)],
    limit: Annotated[int, Query(ge=1, le=20)] = 5,
) -> dict[str, Any]:
    """Places of refuge nearest her position; while his position is shown to her, those
    towards him or in his predicted path are left out and a direction away is given."""
    return await asyncio.to_thread(
        service.victim_refuges, ctx.store, ctx.engine, who, lat, lon, limit, ctx.clock.now(), rid
    )
