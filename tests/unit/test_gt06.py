"""GT06 decoding on the real vectors: positions, IMEIs, CRCs, acknowledgements, framing."""

from __future__ import annotations

import calendar
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
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


# --- The fast decoder against the decoder it replaced --------------------------------------
# decode() reads the GPS block with struct, caches day starts and builds Message
# positionally. The code below is the straightforward decoder it replaced (commit 37bfb2f),
# its logic unchanged; only its CRC is the bitwise definition above. Every test here asks
# both for the same message (field types included), the same refusal reason and the same
# acknowledgement, so the fast path cannot drift from it.


def _reference_gps(content: bytes) -> dict[str, object]:
    if len(content) < 18:
        raise FrameError("GPS block too short")
    yy, mo, dd, hh, mi, ss = content[0:6]
    try:
        t = datetime(2000 + yy, mo, dd, hh, mi, ss, tzinfo=UTC).timestamp()
    except ValueError:
        raise FrameError("GPS date is not a date") from None
    lat = int.from_bytes(content[7:11], "big") / 1_800_000.0
    lon = int.from_bytes(content[11:15], "big") / 1_800_000.0
    if lat > 90 or lon > 180:
        raise FrameError("coordinates out of range")
    word = int.from_bytes(content[16:18], "big")
    if not word >> 10 & 1:
        lat = -lat
    if word >> 11 & 1:
        lon = -lon
    return {
        "has_position": True,
        "fix_time": t,
        "lat": lat,
        "lon": lon,
        "speed_mps": content[15] * gt06.KMH_MPS,
        "heading_deg": float(word & 0x3FF),
        "valid": bool(word >> 12 & 1),
        "satellites": content[6] & 0x0F,
    }


def _reference_status(info: int, voltage: int, alarm: int | None) -> dict[str, object]:
    alarms = set()
    if alarm is not None and alarm in gt06.ALARMS:
        alarms.add(gt06.ALARMS[alarm])
    bits = info >> 3 & 0x07
    alarms |= {
        7: {"tamper"},
        4: {"sos"},
        3: {"low_battery"},
        2: {"power_cut"},
        1: {"vibration"},
    }.get(bits, set())
    return {
        "alarms": frozenset(alarms),
        "charging": bool(info & 0x04),
        "battery_pct": gt06.VOLTAGE_PCT[voltage] if voltage < len(gt06.VOLTAGE_PCT) else None,
    }


def _reference_decode(frame: bytes, strict_crc: bool = True) -> gt06.Message:
    if len(frame) < 10 or frame[-2:] != b"\r\n":
        raise FrameError("frame too short or not ended by 0d0a")
    if frame[:2] == b"\x78\x78":
        head, length = 3, frame[2]
    elif frame[:2] == b"\x79\x79":
        head, length = 4, int.from_bytes(frame[2:4], "big")
    else:
        raise FrameError("no 7878 or 7979 start")
    if head + length + 2 != len(frame):
        raise FrameError("length field does not match the frame")
    body = frame[head : head + length]
    crc = _crc_x25_bitwise(frame[2 : head + length - 2])
    if strict_crc and crc != int.from_bytes(body[-2:], "big"):
        raise FrameError("crc")
    proto, content, serial = body[0], body[1:-4], int.from_bytes(body[-4:-2], "big")
    ext = head == 4
    if proto == 0x01:
        if len(content) < 8:
            raise FrameError("login without an IMEI")
        digits = content[:8].hex()
        if not digits.isdigit():
            raise FrameError("IMEI is not BCD")
        return gt06.Message(proto, "login", serial, imei=digits[1:], extended=ext)
    if proto == 0x13 and len(content) >= 5:
        st = _reference_status(content[0], content[1], content[3])
        return gt06.Message(proto, "heartbeat", serial, extended=ext, **st)
    if proto in gt06.GPS_PROTOCOLS and len(content) < 18:
        return gt06.Message(proto, "other", serial, extended=ext)
    if proto in gt06.GPS_PROTOCOLS:
        fields_: dict[str, object] = _reference_gps(content)
        kind = "location"
        if proto in gt06.ALARM_PROTOCOLS:
            kind = "alarm"
            lbs_len = content[18] if len(content) > 18 else 0
            s = 18 + max(lbs_len, 9)
            if len(content) >= s + 4:
                fields_.update(_reference_status(content[s], content[s + 1], content[s + 3]))
        return gt06.Message(proto, kind, serial, extended=ext, **fields_)
    return gt06.Message(proto, "other", serial, extended=ext)


def _reference_ack(message: gt06.Message) -> bytes | None:
    if message.protocol not in gt06.ACKED:
        return None
    body = bytes([0x05, message.protocol]) + message.serial.to_bytes(2, "big")
    return b"\x78\x78" + body + _crc_x25_bitwise(body).to_bytes(2, "big") + b"\r\n"


Outcome = tuple[object, ...]


def _outcome(decoder: Callable[[bytes, bool], gt06.Message], frame: bytes, strict: bool) -> Outcome:
    """What a decoder makes of a frame: the message, its field types and its ack, or why not."""
    try:
        msg = decoder(frame, strict)
    except FrameError as e:
        return ("refused", e.reason)
    # Equality alone would take an int fix_time for the float one; the types must match too.
    types = tuple(type(getattr(msg, f.name)) for f in dataclasses.fields(msg))
    return ("decoded", msg, types, gt06.ack(msg), _reference_ack(msg))


def _assert_same_as_reference(frame: bytes) -> Outcome:
    """Both decoders agree, strict and lenient; the strict outcome."""
    outcomes = []
    for strict in (True, False):
        want = _outcome(_reference_decode, frame, strict)
        got = _outcome(gt06.decode, frame, strict)
        assert got == want, (frame.hex(), strict)
        if got[0] == "decoded":
            assert got[3] == got[4], frame.hex()  # the ack too
        outcomes.append(want)
    return outcomes[0]


def _frame(proto: int, content: bytes, serial: int, extended: bool, crc_xor: int = 0) -> bytes:
    """A frame around content, with a correct CRC unless crc_xor spoils it."""
    body = bytes([proto]) + content + serial.to_bytes(2, "big")
    if extended:
        start, counted = b"\x79\x79", (len(body) + 2).to_bytes(2, "big") + body
    else:
        start, counted = b"\x78\x78", bytes([len(body) + 2]) + body
    crc = _crc_x25_bitwise(counted) ^ crc_xor
    return start + counted + crc.to_bytes(2, "big") + b"\r\n"


# The comparisons with the reference run a fifth of the fuzz budget in `make test` (the
# decoder's own fuzzing has the whole of it); `make fuzz` gives them millions.
_FEWER_EXAMPLES = max(FUZZ_EXAMPLES // 5, 100)
_LEAP_DAYS = [date(y, 2, 29) for y in range(2000, 2256) if calendar.isleap(y)]
_days = st.one_of(
    st.dates(min_value=date(2000, 1, 1), max_value=date(2255, 12, 31)),
    st.sampled_from(_LEAP_DAYS),
    # the edges of months, where a wrong day count would show
    st.builds(
        lambda d, last: d.replace(day=calendar.monthrange(d.year, d.month)[1] if last else 1),
        st.dates(min_value=date(2000, 1, 1), max_value=date(2255, 12, 31)),
        st.booleans(),
    ),
)


@st.composite
def _gps_block(draw: st.DrawFn, day: st.SearchStrategy[tuple[int, ...]]) -> bytes:
    yy, mo, dd = draw(day)
    hh, mi, ss = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    lat = draw(st.one_of(st.integers(0, 90 * 1_800_000), st.just(90 * 1_800_000)))
    lon = draw(st.one_of(st.integers(0, 180 * 1_800_000), st.just(180 * 1_800_000)))
    return (
        bytes([yy, mo, dd, hh, mi, ss, draw(st.integers(0, 255))])  # satellites byte
        + lat.to_bytes(4, "big")
        + lon.to_bytes(4, "big")
        + bytes([draw(st.integers(0, 255))])  # speed, km/h
        + draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")  # course/status word
    )


_valid_days = _days.map(lambda d: (d.year - 2000, d.month, d.day))
# Location packets carry the LBS block (and alarm packets a status block) after the GPS one.
# 0x12 and 0x22 are the hot case: drawn as often as all the other position packets.
_location_protocols = st.one_of(
    st.sampled_from([0x12, 0x22]), st.sampled_from(sorted(gt06.GPS_PROTOCOLS))
)
_tails = st.one_of(
    st.just(b""),
    st.binary(max_size=40),
    # LBS block, then status: terminal info, voltage level, GSM level, alarm byte, language
    st.builds(
        lambda lbs_len, lbs, info, volts, alarm: (
            bytes([lbs_len]) + lbs + bytes([info, volts, 4, alarm, 2])
        ),
        st.sampled_from([8, 9]),
        st.binary(min_size=8, max_size=8),
        st.integers(0, 255),
        st.one_of(st.integers(0, 7), st.integers(0, 255)),
        st.one_of(st.sampled_from(sorted(gt06.ALARMS)), st.integers(0, 255)),
    ),
)


@given(
    _location_protocols,
    _gps_block(_valid_days),
    _tails,
    st.integers(0, 0xFFFF),
    st.booleans(),
)
@settings(max_examples=_FEWER_EXAMPLES, deadline=None)
def test_generated_location_frames_decode_exactly_as_the_reference_decoder(
    proto: int, gps: bytes, tail: bytes, serial: int, extended: bool
) -> None:
    want = _assert_same_as_reference(_frame(proto, gps + tail, serial, extended))
    msg = want[1]
    assert want[0] == "decoded" and isinstance(msg, gt06.Message) and msg.has_position


def _near(limit: int) -> st.SearchStrategy[int]:
    """A byte just around where a date or time field stops being valid, or any byte."""
    return st.one_of(st.integers(0, limit + 2), st.integers(0, 255))


@given(
    st.sampled_from([0x12, 0x22, 0x16]),
    st.tuples(st.integers(0, 255), _near(12), _near(31), _near(23), _near(59), _near(59)),
)
@settings(max_examples=_FEWER_EXAMPLES, deadline=None)
def test_impossible_dates_and_times_are_refused_for_the_reference_decoders_reason(
    proto: int, when: tuple[int, ...]
) -> None:
    gps = bytes(when) + bytes(12)
    want = _assert_same_as_reference(_frame(proto, gps, 1, False))
    assert want[0] == "decoded" or want == ("refused", "GPS date is not a date")


@given(
    _location_protocols,
    _gps_block(_valid_days),
    st.integers(0, 0xFFFF),
    st.booleans(),
    st.sampled_from(["length", "cut", "extend", "crc", "coordinates"]),
    st.integers(1, 0xFFFF),
)
@settings(max_examples=_FEWER_EXAMPLES, deadline=None)
def test_bad_lengths_crcs_and_coordinates_are_refused_for_the_reference_decoders_reason(
    proto: int, gps: bytes, serial: int, extended: bool, spoil: str, n: int
) -> None:
    frame = _frame(proto, gps, serial, extended)
    if spoil == "length":
        at = 3 if extended else 2
        frame = frame[:at] + bytes([frame[at] ^ (n & 0xFF or 1)]) + frame[at + 1 :]
    elif spoil == "cut":  # up to the whole frame before 0d0a
        frame = frame[: -2 - n % (len(frame) - 1)] + b"\r\n"
    elif spoil == "extend":
        frame = frame[:-2] + bytes(n % 7 + 1) + b"\r\n"
    elif spoil == "crc":
        frame = _frame(proto, gps, serial, extended, crc_xor=n)
    else:  # latitude or longitude beyond 90 or 180 degrees
        at = 7 if n & 1 else 11
        limit = (90 if n & 1 else 180) * 1_800_000
        too_far = (limit + n).to_bytes(4, "big")
        frame = _frame(proto, gps[:at] + too_far + gps[at + 4 :], serial, extended)
    want = _assert_same_as_reference(frame)
    if spoil == "crc":
        assert want == ("refused", "crc")
    if spoil == "coordinates":
        assert want == ("refused", "coordinates out of range")


def test_every_gt06_vector_decodes_exactly_as_the_reference_decoder() -> None:
    data = _gt06()
    frames = [bytes.fromhex(v["raw"]) for v in data["vectors"]]
    frames += [bytes.fromhex(ex["device_hex"]) for ex in data["observed_exchanges"]]
    frames += [bytes.fromhex(c["raw"]) for c in data["command_vectors"]]
    for f in data["framing_vectors"]:
        frames += [bytes.fromhex(x) for x in f["expected_frames_hex"]]
    outcomes = [_assert_same_as_reference(f)[0] for f in frames]
    assert outcomes.count("decoded") >= 150 and "refused" in outcomes


@given(st.binary(max_size=80))
@settings(max_examples=_FEWER_EXAMPLES, deadline=None)
def test_random_bytes_get_the_reference_decoders_answer(data: bytes) -> None:
    _assert_same_as_reference(data)
    # and framed, so that most get past the start, length and end checks
    for proto in (0x12, 0x22, 0x01, 0x13, 0x16):
        _assert_same_as_reference(_frame(proto, data, 7, len(data) % 2 == 1))


def test_every_protocol_and_serial_edge_gets_the_reference_acknowledgement() -> None:
    for proto in range(256):
        for serial in (0, 1, 0x00FF, 0x0100, 0x1234, 0xFFFF):
            msg = gt06.Message(proto, "other", serial)
            assert gt06.ack(msg) == _reference_ack(msg), (proto, serial)
