"""Shared helpers: tests that need a server skip locally, and fail in CI, when it is absent."""

from __future__ import annotations

import os

import pytest


def services_required() -> bool:
    """CI sets BANGPAE_REQUIRE_SERVICES=1: a missing server is then a failure, not a skip."""
    return os.environ.get("BANGPAE_REQUIRE_SERVICES") == "1"


def need_service(reason: str) -> None:
    """Skip (locally) or fail (in CI) when a server the test needs is absent."""
    if services_required():
        pytest.fail(f"required service unavailable: {reason}", pytrace=False)
    pytest.skip(reason)
