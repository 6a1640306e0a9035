"""Places of refuge and the away direction (``docs/refuges.md``): the import's checks, and
the promises of the avoidance rules, checked on random cases with independent geodesics."""

from __future__ import annotations

import math

import pytest
from geographiclib.geodesic import Geodesic
from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.domain import refuge as R
from bangpae.domain.refuge import Him, Refuge, RefugeDataError, advise, parse_collection

G = Geodesic.WGS84
HER = (37.5663, 126.9779)


def at(origin: tuple[float, float], bearing: float, d: float) -> tuple[float, float]:
    g = G.Direct(origin[0], origin[1], bearing, d)
    return g["lat2"], g["lon2"]


def dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return G.Inverse(a[0], a[1], b[0], b[1])["s12"]


def bearing(a: tuple[float, float], b: tuple[float, float]) -> float:
    return G.Inverse(a[0], a[1], b[0], b[1])["azi1"] % 360.0


def place(i: int, pos: tuple[float, float], kind: str = "police_box") -> Refuge:
    return Refuge(f"r{i}", f"파출소 {i}", f"Police box {i}", kind, pos[0], pos[1], id=i + 1)


def point(lon: float, lat: float, **props) -> dict:
    names = {} if {"name_ko", "name_en"} & set(props) else {"name": "Box"}
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {**names, "kind": "police_box", **props},
    }


def collection(*features) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


# -- reading the data ------------------------------------------------------------------------


def test_a_feature_collection_reads_longitude_first_with_both_names_and_its_id() -> None:
    data = collection(
        {
            **point(126.97, 37.56, name_ko="태평로파출소", name_en="Taepyeong-ro", phone="02-1 2"),
            "id": 7,
        },
        point(126.98, 37.57, name_en="City Hall Station", kind="station", hours="05:30-24:00"),
    )
    a, b = parse_collection(data)
    assert (a.lat, a.lon, a.ref) == (37.56, 126.97, "7")
    assert (a.name_ko, a.name_en, a.phone) == ("태평로파출소", "Taepyeong-ro", "02-1 2")
    # one name given: it serves both languages; no id: the place is its kind and position
    assert (b.name_ko, b.name_en, b.hours) == ("City Hall Station",) * 2 + ("05:30-24:00",)
    assert b.ref == "station:37.570000,126.980000"


def test_every_fault_is_named_by_feature_and_field_and_nothing_is_taken() -> None:
    data = collection(
        point(126.97, 37.56),
        point(200.0, 37.56),  # not on Earth
        point(126.97, True),  # a boolean is no number
        point(126.97, 37.56, kind="bar"),
        point(126.97, 37.56, name="\u202eevil"),  # a bidi override disguises a name
        point(126.97, 37.56, phone="javascript:alert(1)"),
        {"type": "Feature", "geometry": {"type": "LineString"}, "properties": None},
        point(126.97, 37.56),  # the same place as the first
    )
    with pytest.raises(RefugeDataError) as e:
        parse_collection(data)
    where = [(loc[1], loc[2]) for loc, _ in e.value.errors]
    assert where == [
        (1, "geometry"),
        (2, "geometry"),
        (3, "kind"),
        (4, "name"),
        (5, "phone"),
        (6, "geometry"),
        (6, "properties"),
        (7, "id"),
    ]
    assert e.value.total == 8 and "kind is one of police_box" in e.value.errors[2][1]


def test_the_collection_itself_and_its_size_are_checked() -> None:
    for bad in ({"type": "Feature"}, [], {"type": "FeatureCollection", "features": {}}):
        with pytest.raises(RefugeDataError):
            parse_collection(bad)
    with pytest.raises(RefugeDataError, match="1 fault"):
        parse_collection(collection(*[point(126.97, 37.5 + i / 1e4) for i in range(11)]), 10)
    many = collection(*[point(126.97, 37.56, kind="nope") for _ in range(80)])
    with pytest.raises(RefugeDataError) as e:
        parse_collection(many)
    assert len(e.value.errors) == R.MAX_ERRORS and e.value.total == 80


def test_a_refuge_reads_back_from_its_own_feature() -> None:
    r = Refuge("x", "가", "A", "hospital", 37.5, 127.0, "24h", "119", id=3)
    assert parse_collection(collection(R.feature(r))) == [
        Refuge("x", "가", "A", "hospital", 37.5, 127.0, "24h", "119")
    ]


# -- without his position: distance alone ----------------------------------------------------


def test_without_his_position_refuges_come_nearest_first_with_nothing_avoided() -> None:
    places = [place(i, at(HER, 45 * i, 100 + 50 * i)) for i in range(8)]
    places.append(place(9, at(HER, 0, 5500)))  # beyond the search radius
    a = advise(*HER, places, (), 3)
    assert [n.refuge.id for n in a.refuges] == [1, 2, 3]
    assert (a.away_deg, a.avoided) == (None, False)
    assert [round(n.distance_m) for n in a.refuges] == [100, 150, 200]
    assert len(advise(*HER, places, (), 50).refuges) == 8


def test_he_standing_still_east_leaves_the_places_east_out_and_sends_her_west() -> None:
    places = [place(i, at(HER, 45 * i, 300)) for i in range(8)]
    him = Him(*at(HER, 90, 400), accuracy_m=10)
    a = advise(*HER, places, [him], 8)
    assert a.avoided and a.away_deg == pytest.approx(270.0, abs=0.1)
    kept = sorted(round(n.bearing_deg) for n in a.refuges)
    assert kept == [0, 180, 225, 270, 315]  # north-east, east and south-east are towards him


def test_a_walk_that_grazes_his_disc_is_left_out_even_ending_on_her_side() -> None:
    """He stands 150 m north (disc 140 m): a place just on her side of the midline, to the
    north-east, is nearer her than him and no nearer him than she is, but the walk there
    passes 135 m from him; one farther east passes outside the disc."""
    him = Him(*at(HER, 0, 150), accuracy_m=40)
    grazing = place(0, at(HER, math.degrees(math.atan2(150, 74)), math.hypot(150, 74)))
    clear = place(1, at(HER, math.degrees(math.atan2(300, 70)), math.hypot(300, 70)))
    a = advise(*HER, [grazing, clear], [him], 5)
    assert [n.refuge.id for n in a.refuges] == [2] and a.avoided


def test_he_walking_at_her_sends_her_out_of_his_path_not_along_it() -> None:
    """He drives towards her from the east: straight on west she stays in his path for
    minutes; sideways she is out of it sooner."""
    him = Him(*at(HER, 90, 500), accuracy_m=10, heading_deg=270, speed_mps=10)
    a = advise(*HER, [], [him], 5)
    off = R.angle_between(a.away_deg, 90.0)
    assert 61 <= off < 120, a.away_deg


def test_on_top_of_him_no_direction_is_away() -> None:
    assert advise(*HER, [], [Him(*HER)], 5).away_deg is None


# -- the promises, on random cases -----------------------------------------------------------


@st.composite
def cases(draw):
    her = (draw(st.floats(33.0, 39.0)), draw(st.floats(124.0, 131.0)))
    hims = []
    for _ in range(draw(st.integers(1, 2))):
        pos = at(her, draw(st.floats(0, 360)), draw(st.floats(0.5, 700)))
        moving = draw(st.booleans())
        hims.append(
            Him(
                *pos,
                accuracy_m=draw(st.none() | st.floats(0, 300)),
                heading_deg=draw(st.floats(0, 360)) if moving else None,
                speed_mps=draw(st.floats(0, 30)) if moving else None,
                age_s=draw(st.floats(0, 200)),
            )
        )
    places = [
        place(i, at(her, draw(st.floats(0, 360)), draw(st.floats(5, 5200))))
        for i in range(draw(st.integers(0, 12)))
    ]
    return her, hims, places, draw(st.integers(1, 20))


def in_path(him: Him, q: tuple[float, float], slack: float) -> bool:
    """Whether q lies in his predicted path, computed in his own geodesic frame (``slack``
    metres inside its edges)."""
    v = R._speed(him)
    if v is None:
        return False
    length = v * (R.HORIZON_S + min(him.age_s, R.AGE_MAX_S))
    g = G.Inverse(him.lat, him.lon, q[0], q[1])
    a = math.radians(g["azi1"] - him.heading_deg)
    along, across = g["s12"] * math.cos(a), g["s12"] * math.sin(a)
    width = R.clearance_m(him) + along * math.tan(math.radians(R.SPREAD_DEG))
    return slack <= along <= length - slack and abs(across) <= width - slack


def walk(her: tuple[float, float], to: tuple[float, float], n: int = 80):
    d, b = dist(her, to), bearing(her, to)
    return [at(her, b, d * k / n) for k in range(n + 1)]


@settings(max_examples=300, deadline=None)
@given(cases())
def test_the_away_direction_never_points_within_60_degrees_of_him(case) -> None:
    her, hims, places, limit = case
    a = advise(*her, places, hims, limit)
    if a.away_deg is None:
        assert any(dist(her, (h.lat, h.lon)) < R.MIN_APART_M + 0.01 for h in hims)
        return
    for h in hims:
        assert R.angle_between(a.away_deg, bearing(her, (h.lat, h.lon))) >= 60.0
    if len(hims) == 1 and R._speed(hims[0]) is None:  # no path: straight away from him
        straight = (bearing(her, (hims[0].lat, hims[0].lon)) + 180) % 360
        assert R.angle_between(a.away_deg, straight) <= 0.06


@settings(max_examples=300, deadline=None)
@given(cases())
def test_the_away_direction_is_never_more_in_his_path_than_straight_away(case) -> None:
    her, hims, _, _ = case
    [him] = hims[:1]
    dn = R.danger(*her, him)
    a = advise(*her, [], [him], 1)
    if a.away_deg is None:
        return
    walk_m = R.WALK_MPS * R.HORIZON_S
    straight = (dn.bearing_deg + 180) % 360
    assert R.exposure_m(dn, a.away_deg, walk_m) <= R.exposure_m(dn, straight, walk_m) + 0.2


@settings(max_examples=150, deadline=None)
@given(cases())
def test_a_refuge_kept_is_reached_without_nearing_him_or_crossing_his_path(case) -> None:
    """For every refuge kept and every position of his: she is nearer it than he is; it is
    no nearer him than she is now; her straight walk there stays out of his disc (or, from
    inside it, never nears him); and it stays out of his predicted path (or, from inside,
    ends out of it)."""
    her, hims, places, limit = case
    a = advise(*her, places, hims, limit)
    plain = advise(*her, places, (), limit)
    for n in a.refuges:
        to = (n.refuge.lat, n.refuge.lon)
        for h in hims:
            him = (h.lat, h.lon)
            d_her_him = dist(her, him)
            assert dist(to, him) > dist(to, her) - 1e-6
            assert dist(to, him) >= d_her_him - 1e-6
            clearance = min(R.clearance_m(h), d_her_him)
            assert min(dist(p, him) for p in walk(her, to)) >= clearance - 1.0
            assert not in_path(h, to, slack=1.0)
            if not in_path(h, her, slack=-1.0):
                assert not any(in_path(h, p, slack=1.0) for p in walk(her, to))
    # nearest first, at most the limit, only places within the search radius
    ds = [n.distance_m for n in a.refuges]
    assert ds == sorted(ds) and len(ds) <= limit and all(d <= R.SEARCH_RADIUS_M for d in ds)
    assert {n.refuge.ref for n in a.refuges} <= {
        n.refuge.ref for n in advise(*her, places, (), 100).refuges
    }
    assert a.avoided == ([n.refuge.ref for n in a.refuges] != [n.refuge.ref for n in plain.refuges])
