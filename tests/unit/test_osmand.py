"""OsmAnd / Traccar Client decoding, on every real vector and on hostile input."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.protocols import osmand
from bangpae.protocols.errors import FrameError
from tests.conftest import FUZZ_EXAMPLES

VECTORS = (
    Path(__file__).resolve().parents[3] / "shared" / "protocol-vectors" / "traccar-vectors.json"
)
LATER = 2_000_000_000.0  # decode as if received long after the vectors were recorded


def _vectors() -> list[dict]:
    if not VECTORS.exists():
        pytest.skip(f"protocol vectors not found at {VECTORS}")
    return json.loads(VECTORS.read_text())["protocols"]["osmand"]["vectors"]


def _decode(v: dict) -> osmand.DecodedFix:
    http = v["http"]
    if http.get("body") and "json" in http.get("headers", {}).get("Content-Type", ""):
        return osmand.decode_json(http["body"].encode(), LATER)
    return osmand.decode_query(dict(parse_qsl(urlsplit(http["target"]).query)), LATER)


def _iso(t: str) -> float:
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def test_every_osmand_vector_decodes_to_its_expected_fields() -> None:
    vectors = _vectors()
    assert len(vectors) == 15
    for v in vectors:
        want = v["derived"]
        if want.get("expected_http_status") == 400:
            with pytest.raises(FrameError):
                _decode(v)
            continue
        got = _decode(v)
        assert got.identifier == want["device_id"], v["id"]
        if "latitude" in want:
            assert got.valid and got.lat == pytest.approx(want["latitude"], abs=1e-9), v["id"]
            assert got.lon == pytest.approx(want["longitude"], abs=1e-9), v["id"]
        else:
            assert not got.valid, v["id"]  # cell towers only: a report without a GPS fix
        if "fix_time" in want:
            assert got.fix_time == pytest.approx(_iso(want["fix_time"]), abs=1e-3), v["id"]
        elif "fix_time_local" in want:  # no zone given: read as UTC
            assert got.fix_time == _iso(want["fix_time_local"].replace(" ", "T") + "Z")
        else:
            assert got.fix_time == LATER, v["id"]  # no timestamp: the time it was received
        if "speed_knots" in want:
            assert got.speed_mps == pytest.approx(want["speed_knots"] * 0.514444, rel=1e-6)
        if "course" in want:
            assert got.heading_deg == pytest.approx(want["course"]), v["id"]
        if "accuracy_m" in want:
            assert got.accuracy_m == want["accuracy_m"], v["id"]
        if "battery_level_percent" in want:
            assert got.battery_pct == pytest.approx(want["battery_level_percent"]), v["id"]
        if want.get("mock"):
            assert got.mock


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"lat": "37.5", "lon": "127"}, "id"),
        ({"id": "A", "lat": "91", "lon": "127"}, "lat"),
        ({"id": "A", "lat": "37.5", "lon": "-181"}, "lon"),
        ({"id": "A", "lat": "nan", "lon": "127"}, "lat"),
        ({"id": "A", "lat": "37.5", "lon": "127", "timestamp": "4102444800"}, "future"),
        ({"id": "A", "lat": "37.5", "lon": "127", "timestamp": "yesterday"}, "timestamp"),
        ({"id": "A", "lat": "37.5", "lon": "127", "speed": "5000"}, "speed"),
        ({"id": "A", "lat": "37.5", "lon": "127", "accuracy": "-3"}, "accuracy"),
    ],
)
def test_bad_input_is_refused_with_a_clear_reason(params: dict, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        osmand.decode_query(params, 1_800_000_000.0)


def test_alarms_map_to_the_design_vocabulary() -> None:
    fix = osmand.decode_query(
        {"id": "A", "lat": "1", "lon": "2", "alarm": "sos,tampering"}, 1_800_000_000.0
    )
    assert fix.alarms == {"sos", "tamper"}


def test_milliseconds_and_iso_timestamps_are_read() -> None:
    base = {"id": "A", "lat": "1", "lon": "2"}
    ms = osmand.decode_query({**base, "timestamp": "1799999999500"}, 1_800_000_000.0)
    iso = osmand.decode_query({**base, "timestamp": "2027-01-15T08:00:00+09:00"}, 1_800_000_000.0)
    assert ms.fix_time == 1_799_999_999.5
    assert iso.fix_time == _iso("2027-01-14T23:00:00Z")


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "deviceid",
                "lat",
                "lon",
                "timestamp",
                "speed",
                "bearing",
                "accuracy",
                "batt",
                "alarm",
                "location",
                "valid",
            ]
        ),
        st.text(max_size=30),
    )
)
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
def test_fuzz_the_query_decoder_never_fails_except_with_a_frame_error(params: dict) -> None:
    try:
        osmand.decode_query(params, 1_800_000_000.0)
    except FrameError:
        pass


@given(
    st.binary(max_size=300)
    | st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=10),
        lambda c: (
            st.lists(c, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "location",
                        "coords",
                        "latitude",
                        "longitude",
                        "device_id",
                        "timestamp",
                        "battery",
                        "level",
                        "speed",
                        "heading",
                        "accuracy",
                    ]
                ),
                c,
                max_size=5,
            )
        ),
        max_leaves=20,
    ).map(lambda x: json.dumps(x).encode())
)
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
def test_fuzz_the_json_decoder_never_fails_except_with_a_frame_error(body: bytes) -> None:
    try:
        osmand.decode_json(body, 1_800_000_000.0)
    except FrameError:
        pass
