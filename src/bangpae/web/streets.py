"""Street maps served by bangpae itself: a PMTiles archive read by HTTP byte ranges.

A PMTiles archive is one file holding every vector tile of an area; the browser
(``protomaps-leaflet``) reads its header, directories and tiles with ``Range``
requests, so no tile server, and no third party, learns where she looks. The
archive is checked once (magic, version 3, vector tiles) with the ``pmtiles``
package; an archive that fails the check is not served. See docs/maps.md.

The rules of the route, each pinned by tests/integration/test_basemap_routes.py:
one range per request (``bytes=a-b``, ``bytes=a-`` or ``bytes=-n``), at most
``MAX_RANGE`` bytes; a request without a range, with several, or past the end
is answered 416 with ``Content-Range: bytes */SIZE``. ``If-Match`` with another
entity tag is 412 (the archive was replaced under the reader).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pmtiles.tile import TileType, deserialize_header
from starlette.requests import Request
from starlette.responses import Response

# A tile is at most a few hundred KB and a leaf directory a few MB; the first read is
# 16 KiB (header and root directory). Nothing a reader needs is larger than this.
MAX_RANGE = 16 * 1024 * 1024
HEADER_BYTES = 127
CACHE = "private, max-age=3600"


class ArchiveError(ValueError):
    """The file is not a PMTiles v3 archive of vector tiles."""


@dataclass(frozen=True)
class Archive:
    """A checked archive: where it is, how long, its entity tag and what it covers."""

    path: Path
    stamp: tuple[int, int, int]
    size: int
    etag: str
    min_zoom: int
    max_zoom: int
    bounds: tuple[float, float, float, float]  # west, south, east, north

    def describe(self) -> dict[str, Any]:
        """What the page needs to draw it."""
        return {
            "url": "/basemap/streets.pmtiles",
            "min_zoom": self.min_zoom,
            "max_zoom": self.max_zoom,
            "bounds": list(self.bounds),
        }


def stamp(stat: os.stat_result) -> tuple[int, int, int]:
    """What changes when the file is replaced or rewritten: size, time, inode."""
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


def open_archive(path: Path) -> Archive | None:
    """The archive at ``path`` checked, or None when there is no file there."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    with path.open("rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES:
        raise ArchiveError(f"{path}: too short for a PMTiles header")
    try:
        header = deserialize_header(head)
    except Exception as e:  # noqa: BLE001 - any failure to parse means "not an archive"
        raise ArchiveError(f"{path}: not a PMTiles v3 archive ({type(e).__name__})") from e
    if header["tile_type"] is not TileType.MVT:
        raise ArchiveError(f"{path}: tiles are {header['tile_type'].name}, expected MVT")
    tag = "-".join(map(str, stamp(stat))).encode()
    return Archive(
        path=path,
        stamp=stamp(stat),
        size=stat.st_size,
        etag='"' + hashlib.sha256(tag).hexdigest()[:24] + '"',
        min_zoom=header["min_zoom"],
        max_zoom=header["max_zoom"],
        bounds=(
            header["min_lon_e7"] / 1e7,
            header["min_lat_e7"] / 1e7,
            header["max_lon_e7"] / 1e7,
            header["max_lat_e7"] / 1e7,
        ),
    )


def _digits(s: str) -> bool:
    """ASCII digits only: str.isdigit() also says yes to '²', which int() refuses."""
    return s.isascii() and s.isdigit()


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """The one byte range ``value`` asks of a file of ``size`` bytes (first, last), or None."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash or not (_digits(first_s) or _digits(last_s)):
        return None
    if len(first_s) > 19 or len(last_s) > 19:
        return None
    if not first_s:  # the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            return None
        first, last = max(0, size - n), size - 1
    else:
        if not _digits(first_s) or (last_s and not _digits(last_s)):
            return None
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
        if last < first or first >= size:
            return None
        last = min(last, size - 1)
    if last - first + 1 > MAX_RANGE:
        return None
    return first, last


def _refuse(archive: Archive, status: int, reason: str) -> Response:
    return Response(
        reason,
        status_code=status,
        media_type="text/plain",
        headers={"Content-Range": f"bytes */{archive.size}", "Accept-Ranges": "bytes"},
    )


def serve(archive: Archive, request: Request) -> Response:
    """Answer a HEAD or a ranged GET of the archive."""
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": archive.etag,
        "Cache-Control": CACHE,
    }
    wanted = request.headers.get("if-match")
    if wanted and wanted.strip() not in ("*", archive.etag):
        return Response(status_code=412, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(archive.size)
        return Response(status_code=200, headers=headers, media_type="application/octet-stream")
    value = request.headers.get("range")
    if not value:
        return _refuse(archive, 416, "the archive is read by byte ranges (one Range per request)")
    span = parse_range(value, archive.size)
    if span is None:
        return _refuse(archive, 416, f"one range of at most {MAX_RANGE} bytes within the file")
    first, last = span
    with archive.path.open("rb") as f:
        os.lseek(f.fileno(), first, os.SEEK_SET)
        body = f.read(last - first + 1)
    headers["Content-Range"] = f"bytes {first}-{first + len(body) - 1}/{archive.size}"
    return Response(body, status_code=206, headers=headers, media_type="application/octet-stream")
