"""GT06 decoding on the real vectors: positions, IMEIs, CRCs, acknowledgements, framing."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bangpae.protocols import gt06
from bangpae.protocols.errors import FrameError
from tests.conftest import FUZZ_EXAMPLES

VECTORS = (
    Path(__file__).resolve().parents[3] / "shared" / "protocol-vectors" / "traccar-vectors.json"
)
# Vendor variants this decoder does not read (an IMEI before the GPS block, or Traccar's
# nonstandard layouts); they are refused with a FrameError or decode without a position.
UNSUPPORTED = {"gt06-029", "gt06-030", "gt06-149", "gt06-172", "gt06-173", "gt06-174", "gt06-177"}


def _gt06() -> dict:
    if not VECTORS.exists():
        pytest.skip(f"protocol vectors not found at {VECTORS}")
    return json.loads(VECTORS.read_text())["protocols"]["gt06"]


def _decode(v: dict) -> gt06.Message | None:
    raw = bytes.fromhex(v["raw"])
    try:
        return gt06.decode(raw, strict_crc=v["frame"].get("crc_valid", True))
    except FrameError:
        return None


def test_every_supported_position_vector_decodes_to_its_expected_fields() -> None:
    checked = 0
    for v in _gt06()["vectors"]:
        want = v.get("derived") or {}
        if "latitude" not in want or v["id"] in UNSUPPORTED:
            continue
        msg = _decode(v)
        assert msg is not None and msg.has_position, v["id"]
        assert msg.lat == pytest.approx(want["latitude"], abs=1e-5), v["id"]
        assert msg.lon == pytest.approx(want["longitude"], abs=1e-5), v["id"]
        if want.get("fix_time"):
            t = datetime.fromisoformat(want["fix_time"].replace("Z", "+00:00")).timestamp()
            assert msg.fix_time == t, v["id"]
        if "speed_kmh" in want:
            assert msg.speed_mps == pytest.approx(want["speed_kmh"] / 3.6), v["id"]
        if "course" in want:
            assert msg.heading_deg == want["course"], v["id"]
        checked += 1
    assert checked >= 24


def test_every_imei_and_acknowledgement_matches() -> None:
    acks = 0
    for v in _gt06()["vectors"]:
        want = v.get("derived") or {}
        if "imei" in want:
            msg = _decode(v)
            if v["frame"].get("length_consistent", True):
                assert msg is not None and msg.imei == want["imei"], v["id"]
        if "server_ack_hex" in want:
            msg = _decode(v)
            assert msg is not None and gt06.ack(msg) == bytes.fromhex(want["server_ack_hex"])
            acks += 1
    assert acks == 31
    for ex in _gt06()["observed_exchanges"]:
        msg = gt06.decode(bytes.fromhex(ex["device_hex"]))
        assert gt06.ack(msg) == bytes.fromhex(ex["server_reply_hex_logged"]), ex["source"]


def test_frames_with_a_wrong_crc_are_refused_unless_the_device_is_lenient() -> None:
    bad = [v for v in _gt06()["vectors"] if not v["frame"].get("crc_valid", True)]
    assert len(bad) == 27
    for v in bad:
        with pytest.raises(FrameError):
            gt06.decode(bytes.fromhex(v["raw"]))


def test_alarms_map_to_the_design_vocabulary() -> None:
    names = {
        "vibration": "vibration",
        "tampering": "tamper",
        "powerCut": "power_cut",
        "removing": "tamper",
        "sos": "sos",
    }
    for v in _gt06()["vectors"]:
        want = v.get("derived") or {}
        expected = {names[a] for a in want.get("alarms_traccar", []) if a in names}
        if expected and "alarm_byte" in want:
            msg = _decode(v)
            assert msg is not None and expected <= msg.alarms, v["id"]


def test_stream_framing_matches_every_framing_vector() -> None:
    for f in _gt06()["framing_vectors"]:
        data = bytes.fromhex(f["input_hex"])
        frames, _ = gt06.split_frames(data)
        assert [x.hex() for x in frames][: len(f["expected_frames_hex"])] == f[
            "expected_frames_hex"
        ], f


def test_the_command_encoding_checks_out_against_the_published_crc() -> None:
    raw = bytes.fromhex(_gt06()["command_vectors"][0]["raw"])
    assert gt06.crc_itu(raw[2:-4]) == int.from_bytes(raw[-4:-2], "big")
    cmd = gt06.interval_command(15, serial=7)
    assert cmd[:2] == b"xx" and b"TIMER,15#" in cmd
    assert gt06.crc_itu(cmd[2:-4]) == int.from_bytes(cmd[-4:-2], "big")


def _crc_x25_bitwise(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def test_the_crc_is_crc16_x25_with_its_catalogue_check_value() -> None:
    assert gt06.crc_itu(b"123456789") == 0x906E
    assert gt06.crc_itu(b"") == 0x0000


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.binary(max_size=300))
def test_the_crc_equals_the_bitwise_definition_on_any_bytes(data: bytes) -> None:
    assert gt06.crc_itu(data) == _crc_x25_bitwise(data)


def test_no_vector_crashes_the_decoder() -> None:
    for v in _gt06()["vectors"]:
        _decode(v)


@given(st.binary(max_size=80))
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
def test_fuzz_random_bytes_only_ever_raise_frame_errors(data: bytes) -> None:
    try:
        frames, _ = gt06.split_frames(data)
    except FrameError:
        return
    for f in frames:
        try:
            gt06.decode(f, strict_crc=False)
        except FrameError:
            pass


@given(st.integers(2, 35), st.binary(min_size=1, max_size=3))
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
def test_fuzz_mutated_real_frames_only_ever_raise_frame_errors(pos: int, junk: bytes) -> None:
    raw = bytes.fromhex("78781f12110616091835d0024bb93007d3fb783dd4c501940500f2006c8504a6e0370d0a")
    mutated = raw[:pos] + junk + raw[pos + len(junk) :]
    for strict in (True, False):
        try:
            gt06.decode(mutated, strict_crc=strict)
        except FrameError:
            pass
