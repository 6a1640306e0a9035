"""An outsider's ranges on the street map archive (docs/maps.md, "The route's rules")."""

from __future__ import annotations

import httpx
import pytest

from tests.integration import test_basemap_routes

client = test_basemap_routes.client  # the real app with a real PMTiles archive


@pytest.mark.parametrize(
    "asked",
    [
        b"bytes=\xb2-",  # '²' in Latin-1: str.isdigit() says yes, int() refuses it
        b"bytes=-\xb9",  # '¹'
        b"bytes=0-\xb3",  # '³'
    ],
)
async def test_a_range_of_digits_int_cannot_read_is_416_not_a_server_error(
    client: tuple[httpx.AsyncClient, object], asked: bytes
) -> None:
    c, archive = client
    r = await c.get("/basemap/streets.pmtiles", headers={"Range": asked})
    assert r.status_code == 416, (asked, r.status_code)
    assert len(r.content) < 200
