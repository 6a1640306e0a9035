"""Places of refuge over the real API and SQLite: the control centre's import (checked,
limited, audited), the staff list, the command line, and her list, which avoids him only
while his position is disclosed to her and never depends on it otherwise
(docs/refuges.md, docs/disclosure.md)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from geographiclib.geodesic import Geodesic

from bangpae.adapters.clock import ManualClock
from bangpae.adapters.store.refuges import sample_refuges
from bangpae.api.factory import create_app
from bangpae.app import build
from bangpae.cli import main
from bangpae.config import Settings
from bangpae.domain.model import Fix, Order
from bangpae.domain.refuge import Refuge
from tests.integration.conftest import signed_in
from tests.scenario import T0

HER = (37.5663, 126.9779)


def at(bearing: float, d: float) -> tuple[float, float]:
    g = Geodesic.WGS84.Direct(HER[0], HER[1], bearing, d)
    return g["lat2"], g["lon2"]


def feature(n: int, pos: tuple[float, float], kind: str = "police_box", **props) -> dict:
    return {
        "type": "Feature",
        "id": f"box-{n}",
        "geometry": {"type": "Point", "coordinates": [pos[1], pos[0]]},
        "properties": {"name_ko": f"파출소 {n}", "name_en": f"Police box {n}", "kind": kind}
        | props,
    }


# eight places 300 m around her, one every 45 degrees (box-0 north, box-2 east, ...)
RING = {"type": "FeatureCollection", "features": [feature(i, at(45 * i, 300)) for i in range(8)]}


@pytest.fixture
async def env(tmp_path: Path):
    clock = ManualClock(T0)
    ctx = build(Settings(data_dir=tmp_path), clock=clock)
    s = ctx.store
    off, vic = s.add_person("offender", "O"), s.add_person("victim", "V")
    ankle = s.add_device("ANKLE", "ankle_monitor", "api", off)
    watch = s.add_device("WATCH", "watch", "api", vic)
    order = s.add_order(Order(0, off, vic))
    users = signed_in(
        s,
        ctx.secret,
        [
            ("her", "victim", vic),
            ("op", "operator", None),
            ("sup", "supervisor", None),
            ("admin", "admin", None),
        ],
        T0,
    )
    await ctx.start()
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://test"
    )
    yield ctx, api, users, order, (ankle, watch), clock
    await api.aclose()
    await ctx.stop()


async def place(
    ctx, devices, clock, him: tuple[float, float], accuracy: float = 10.0, **fix
) -> None:
    """Her watch at her place and his monitor at ``him``, three times 15 s apart."""
    ankle, watch = devices
    for _ in range(3):
        clock.advance(15)
        now = clock.now()
        await ctx.ingest.submit([Fix(watch, now, *HER, 5.0, received_at=now)])
        await ctx.ingest.submit([Fix(ankle, now, *him, accuracy, received_at=now, **fix)])


def near(api, her, limit: int = 8):
    return api.get(f"/api/v1/victim/refuges?lat={HER[0]}&lon={HER[1]}&limit={limit}", headers=her)


def position_reads(ctx) -> list[dict]:
    return [r for r in ctx.store.audit_records(limit=1000) if r["action"] == "read_position"]


# -- the import ------------------------------------------------------------------------------


async def test_a_supervisor_imports_merges_and_replaces_and_each_import_is_audited(env) -> None:
    ctx, api, users, *_ = env
    r = await api.post("/api/v1/refuges/import", json=RING, headers=users["sup"])
    assert r.status_code == 200, r.text
    assert r.json() == {"added": 8, "updated": 0, "removed": 0, "total": 8}
    renamed = feature(0, at(0, 300), phone="112", hours="24h") | {}
    renamed["properties"]["name_en"] = "North box"
    extra = feature(9, at(200, 900), kind="store_24h")
    body = {"type": "FeatureCollection", "features": [renamed, extra]}
    r = await api.post("/api/v1/refuges/import?mode=merge", json=body, headers=users["admin"])
    assert r.json() == {"added": 1, "updated": 1, "removed": 0, "total": 9}
    listed = (await api.get("/api/v1/refuges", headers=users["op"])).json()
    assert listed["type"] == "FeatureCollection" and len(listed["features"]) == 9
    north = next(f for f in listed["features"] if f["id"] == "box-0")
    assert north["properties"]["name_en"] == "North box" and north["properties"]["phone"] == "112"
    assert north["geometry"]["coordinates"] == pytest.approx([at(0, 300)[1], at(0, 300)[0]])
    # the staff list reads back as an import: replacing with it changes nothing but names
    r = await api.post("/api/v1/refuges/import?mode=replace", json=body, headers=users["sup"])
    assert r.json() == {"added": 0, "updated": 2, "removed": 7, "total": 2}
    records = [a for a in ctx.store.audit_records(limit=100) if a["action"] == "import_refuges"]
    assert [(a["role"], a["fields"][0]) for a in records] == [
        ("supervisor", "mode=merge"),
        ("admin", "mode=merge"),
        ("supervisor", "mode=replace"),
    ]
    assert records[-1]["fields"][1:] == ["added=0", "updated=2", "removed=7", "total=2"]


async def test_a_faulty_file_is_refused_whole_with_each_fault_located(env) -> None:
    ctx, api, users, *_ = env
    bad = {
        "type": "FeatureCollection",
        "features": [
            feature(0, at(0, 300)),
            feature(1, at(0, 300), kind="bar"),
            feature(2, (37.5, 226.9)),
            feature(3, at(0, 300), phone="javascript:alert(1)"),
        ],
    }
    r = await api.post("/api/v1/refuges/import", json=bad, headers=users["sup"])
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert [e["loc"] for e in r.json()["errors"]] == [
        ["features", 1, "kind"],
        ["features", 2, "geometry"],
        ["features", 3, "phone"],
    ]
    assert "3 fault(s)" in r.json()["detail"]
    assert ctx.store.refuge_count() == 0
    # who may import: the control centre's supervisors and the administrators
    for who in ("op", "her"):
        r = await api.post("/api/v1/refuges/import", json=RING, headers=users[who])
        assert r.status_code == 403
    assert (await api.get("/api/v1/refuges", headers=users["her"])).status_code == 403
    huge = {"type": "FeatureCollection", "features": [feature(i, HER) for i in range(8000)]}
    r = await api.post("/api/v1/refuges/import", json=huge, headers=users["sup"])
    assert r.status_code == 413  # the API takes a megabyte; larger lists go by the CLI


def test_the_command_line_imports_a_file_and_refuses_a_faulty_one(tmp_path: Path, capsys) -> None:
    data_dir = tmp_path / "data"
    good, bad = tmp_path / "good.geojson", tmp_path / "bad.geojson"
    good.write_text(json.dumps(RING), encoding="utf-8")
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "x"}]}))
    assert main(["import-refuges", str(bad), "--data-dir", str(data_dir)]) == 1
    assert "features/0/type" in capsys.readouterr().err
    assert main(["import-refuges", str(good), "--data-dir", str(data_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 8
    argv = ["import-refuges", str(good), "--data-dir", str(data_dir), "--mode", "replace"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {
        "mode": "replace",
        "added": 0,
        "updated": 8,
        "removed": 0,
        "total": 8,
    }


def test_the_demos_sample_file_is_valid_and_marked_as_sample_data() -> None:
    places = sample_refuges()
    assert len(places) >= 8 and {p.kind for p in places} >= {"police_station", "station"}
    assert all(p.ref.startswith("sample-") for p in places)
    text = (Path(__file__).parents[2] / "src/bangpae/samples/refuges-seoul.geojson").read_text()
    assert "SAMPLE DATA" in text


# -- her list --------------------------------------------------------------------------------


async def test_while_his_position_is_withheld_her_list_does_not_depend_on_it(env) -> None:
    """Positions of his 1.3 km east and 1.3 km west (notify), 700 m south with a poor fix
    (reveal, but beyond what may be disclosed) and 4 km north (clear): byte-identical
    answers, nearest first, and no read of his position."""
    ctx, api, users, order, devices, clock = env
    await api.post("/api/v1/refuges/import", json=RING, headers=users["sup"])
    answers = []
    tiers = []
    for him, acc in (
        (at(90, 1300), 10),
        (at(270, 1300), 10),
        (at(180, 700), 100),
        (at(0, 4000), 10),
    ):
        clock.advance(600)
        await place(ctx, devices, clock, him, acc, speed_mps=1.4, heading_deg=270.0)
        [status] = (await api.get("/api/v1/victim/status", headers=users["her"])).json()["orders"]
        assert status["offender"] is None
        tiers.append(status["tier"])
        r = await near(api, users["her"])
        assert r.status_code == 200
        answers.append(r.content)
    # what she is told at 1.3 km comes from his cell on a secret grid: notify or reveal
    assert set(tiers[:2]) <= {"notify", "reveal"} and tiers[2:] == ["reveal", "clear"]
    assert len(set(answers)) == 1
    body = json.loads(answers[0])
    assert (body["away_deg"], body["avoided"]) == (None, False)
    assert [p["distance_m"] for p in body["refuges"]] == [300] * 8
    assert position_reads(ctx) == []


async def test_while_she_sees_him_places_towards_him_are_left_out_and_she_is_sent_away(
    env,
) -> None:
    ctx, api, users, order, devices, clock = env
    await api.post("/api/v1/refuges/import", json=RING, headers=users["sup"])
    # he is 400 m east of her, walking towards her: shown to her (reveal)
    await place(ctx, devices, clock, at(90, 400), speed_mps=1.4, heading_deg=270.0)
    [status] = (await api.get("/api/v1/victim/status", headers=users["her"])).json()["orders"]
    assert status["tier"] == "reveal" and status["offender"] is not None
    before = len(position_reads(ctx))
    r = await near(api, users["her"])
    body = r.json()
    kept = sorted(round(p["bearing_deg"]) for p in body["refuges"])
    assert kept and not {45, 90, 135} & set(kept), kept
    assert body["avoided"] is True
    assert abs((body["away_deg"] - 90 + 180) % 360 - 180) >= 60
    # the read of his position is audited as her status's is
    reads = position_reads(ctx)[before:]
    assert [(x["subject"], x["purpose"]) for x in reads] == [
        (f"order:{order}/offender:{ctx.store.get_order(order).offender_id}", "victim_safety")
    ]
    # the names come in both languages, with a phone only where one was given
    first = body["refuges"][0]
    assert first["name"]["ko"].startswith("파출소") and first["phone"] is None


async def test_her_position_is_checked_and_the_limit_bounded(env) -> None:
    _, api, users, *_ = env
    for query in ("lat=91&lon=0", "lat=nan&lon=0", "lat=37&lon=181", "lat=37&lon=127&limit=21"):
        r = await api.get(f"/api/v1/victim/refuges?{query}", headers=users["her"])
        assert r.status_code == 422, query
    r = await api.get("/api/v1/victim/refuges?lat=37&lon=127", headers=users["op"])
    assert r.status_code == 403


def test_the_box_around_her_holds_every_place_within_the_radius_across_the_antimeridian(
    store,
) -> None:
    """Places 4 km either side of the 180th meridian, near the equator and near a pole,
    are found from the other side; places 6 km away are not read."""
    spots = {
        "east": (0.0, 179.99),
        "west": (0.0, -179.99),
        "far": (0.0, 179.93),
        "north": (89.99, 10.0),
        "pole-other-side": (89.99, -170.0),
    }
    places = [Refuge(name, "가", "A", "other", *pos) for name, pos in spots.items()]
    store.import_refuges(places, "merge", actor="test", role="admin", at=T0)
    found = {r.ref for r in store.refuges_near(0.0, 180.0, 5000)}
    assert found == {"east", "west"}
    found = {r.ref for r in store.refuges_near(89.99, 100.0, 5000)}
    assert found == {"north", "pole-other-side"}


def test_a_replace_removes_any_number_of_places_in_one_transaction(store) -> None:
    many = [Refuge(f"p{i}", "가", "A", "other", 37.0 + i / 1e4, 127.0) for i in range(1200)]
    counts = store.import_refuges(many, "merge", actor="test", role="admin", at=T0)
    assert counts.as_dict() == {"added": 1200, "updated": 0, "removed": 0, "total": 1200}
    counts = store.import_refuges(many[:1], "replace", actor="test", role="admin", at=T0)
    assert counts.as_dict() == {"added": 0, "updated": 1, "removed": 1199, "total": 1}
    assert [r.ref for r in store.refuges()] == ["p0"]
    assert [a["fields"][0] for a in store.audit_records(limit=10)] == ["mode=merge", "mode=replace"]
