"""Counters the device listeners share, one per application registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter


def counter(ctx: Any, name: str, doc: str, labels: list[str]) -> Counter:
    """The counter ``name`` of this application, created on first use."""
    existing: dict[str, Counter] | None = getattr(ctx, "_counters", None)
    if existing is None:
        existing = {}
        ctx._counters = existing
    if name not in existing:
        existing[name] = Counter(name, doc, labels, registry=ctx.metrics)
    return existing[name]
