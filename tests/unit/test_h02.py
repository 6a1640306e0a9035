"""H02 decoding on every real vector, stream framing, replies, and hostile input."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.protocols import h02
from bangpae.protocols.errors import FrameError
from tests.conftest import FUZZ_EXAMPLES

VECTORS = (
    Path(__file__).resolve().parents[3] / "shared" / "protocol-vectors" / "traccar-vectors.json"
)


def _h02() -> dict:
    if not VECTORS.exists():
        pytest.skip(f"protocol vectors not found at {VECTORS}")
    return json.loads(VECTORS.read_text())["protocols"]["h02"]


def _raw(v: dict) -> bytes:
    return bytes.fromhex(v["raw"]) if v["encoding"] == "hex" else v["raw"].encode()


def _iso(t: str) -> float:
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def test_every_h02_vector_with_a_position_decodes_to_its_expected_fields() -> None:
    checked = 0
    for v in _h02()["vectors"]:
        want = v.get("derived") or {}
        try:
            msg = h02.decode(_raw(v))
        except FrameError:
            assert not v.get("traccar_returns_position") or "latitude" not in want, v["id"]
            continue
        if "latitude" not in want:
            continue
        assert msg.has_position, v["id"]
        assert msg.lat == pytest.approx(want["latitude"], abs=2e-6), v["id"]
        assert msg.lon == pytest.approx(want["longitude"], abs=2e-6), v["id"]
        if want.get("fix_time"):
            assert msg.fix_time == _iso(want["fix_time"]), v["id"]
        else:
            assert msg.fix_time is None, v["id"]  # no time in the frame: use arrival
        if "valid" in want:
            assert msg.valid == want["valid"], v["id"]
        if "speed_knots" in want:
            assert msg.speed_mps == pytest.approx(want["speed_knots"] * 0.514444), v["id"]
        if "course" in want:
            assert msg.heading_deg == pytest.approx(want["course"]), v["id"]
        if "alarms_traccar" in want:
            names = {"sos": "sos", "powerCut": "power_cut", "vibration": "vibration"}
            expected = {names[a] for a in want["alarms_traccar"] if a in names}
            assert expected <= msg.alarms, v["id"]
        checked += 1
    assert checked >= 60


def test_no_vector_crashes_the_decoder() -> None:
    for v in _h02()["vectors"]:
        try:
            h02.decode(_raw(v))
        except FrameError:
            pass


def test_stream_framing_matches_every_framing_vector() -> None:
    for f in _h02()["framing_vectors"]:
        frames, _rest = h02.split_frames(bytes.fromhex(f["input_hex"]))
        assert frames, f
        assert frames[0].hex() == f["expected_first_frame_hex"]


def test_a_frame_split_across_reads_is_reassembled() -> None:
    data = b"*HQ,4109198974,V1,105759,A,3757.3392,S,14503.7022,E,000.00,173,280122,FFFFFBFF#"
    frames, rest = h02.split_frames(data[:30])
    assert frames == [] and rest == data[:30]
    frames, rest = h02.split_frames(rest + data[30:] + b"\r\n")
    assert frames == [data] and rest == b""


def test_heartbeats_are_echoed_and_positions_answered_with_our_time() -> None:
    hb = h02.decode(b"*HQ,135790246811220,HTBT,100#")
    assert h02.ack(hb, 0) == b"*HQ,135790246811220,HTBT#"
    v1 = h02.decode(
        b"*HQ,5905101893,V1,105759,A,37573392,S,145037022,E,000.00,173,280122,"
        b"FF7FFBFF,,,9059e2c,8232,4#"
    )
    assert h02.ack(v1, _iso("2026-11-23T04:50:00Z")) == b"*HQ,5905101893,V4,V1,20261123045000#"


@given(st.binary(max_size=120))
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
def test_fuzz_random_bytes_only_ever_raise_frame_errors(data: bytes) -> None:
    frames, _ = h02.split_frames(data)
    for f in frames:
        try:
            h02.decode(f)
        except FrameError:
            pass
    try:
        h02.decode(data)
    except FrameError:
        pass


@given(st.sampled_from([0, 5, 9, 14, 20, 30, 44]), st.binary(min_size=1, max_size=3))
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
def test_fuzz_mutated_real_frames_only_ever_raise_frame_errors(pos: int, junk: bytes) -> None:
    for raw in (
        b"*HQ,9001000002,V8,213945,A,3542.2043,N,38.6508,W,0.00,170,221025,FBFFF9FF#",
        bytes.fromhex(
            "2491802711800850240512192350143206090249758e000001ffffbbff00bdf09"
            "00000000001d60161cc4b9a35"
        ),
    ):
        mutated = raw[:pos] + junk + raw[pos + len(junk) :]
        try:
            h02.decode(mutated)
        except FrameError:
            pass


def test_the_interval_command_matches_the_published_encoding() -> None:
    (want,) = [
        c["raw"] for c in _h02()["command_vectors"] if c["command"] == "TYPE_POSITION_PERIODIC"
    ]
    at = _iso("2026-11-23T01:02:03Z")
    assert h02.interval_command("123456789012345", 10, at).decode() == want
