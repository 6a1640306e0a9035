"""Operations: liveness with the engine's size and connections, and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bangpae.adapters.listeners.budget import report as connection_report
from bangpae.api.deps import Ctx

router = APIRouter()


@router.get("/healthz", tags=["ops"])
async def healthz(ctx: Ctx) -> dict[str, Any]:
    """Liveness, the engine's size, open files and each listener's connections."""
    return {
        "status": "ok",
        "orders": ctx.engine.orders.n,
        "devices": ctx.engine.devices.n,
        **connection_report(ctx.budgets),
    }


@router.get("/metrics", tags=["ops"])
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics (with open files and each listener's connection budget)."""
    return Response(generate_latest(ctx.metrics), media_type=CONTENT_TYPE_LATEST)
