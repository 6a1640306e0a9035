"""GT06 trackers over TCP: binary frames 0x7878 (1-byte length) and 0x7979 (2-byte length).

Frame: start, length, protocol number, content, serial (2), CRC-ITU (2) over length
through serial, 0x0d0a. A CRC mismatch is refused by default; some firmware is known
to send wrong CRCs, so a device may be set lenient. Positions (0x10, 0x11, 0x12,
0x16, 0x22, 0x26, …) start with a GPS block: UTC date and time (6 bytes), a
satellites byte, latitude and longitude (4 bytes each, in 1/1,800,000 degree), speed
(km/h) and a course/status word (bit 12 positioned, bit 11 west, bit 10 north,
low 10 bits course). Login (0x01) carries the IMEI in BCD.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bangpae.protocols.errors import FrameError

KMH_MPS = 1 / 3.6
MAX_FRAME = 2048
GPS_PROTOCOLS = frozenset({0x10, 0x11, 0x12, 0x16, 0x1A, 0x22, 0x26, 0x27, 0x37, 0x2D})
ALARM_PROTOCOLS = frozenset({0x16, 0x18, 0x19, 0x26, 0x27, 0x37})
# Alarm byte of the alarm packets -> DESIGN's alarm names.
ALARMS = {
    0x01: "sos",
    0x02: "power_cut",
    0x03: "vibration",
    0x0C: "tamper",
    0x25: "tamper",
    0x0E: "low_battery",
    0x19: "low_battery",
}
# Voltage level 0..6 of status packets, as a battery percentage.
VOLTAGE_PCT = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0)
ACKED = frozenset({0x01, 0x10, 0x11, 0x12, 0x13, 0x16, 0x18, 0x19, 0x22, 0x26, 0x27, 0x8A})


@dataclass(frozen=True, slots=True)
class Message:
    """One GT06 frame as the listener needs it."""

    protocol: int
    kind: str  # login, location, heartbeat, alarm, other
    serial: int
    imei: str | None = None
    has_position: bool = False
    fix_time: float = 0.0
    lat: float = 0.0
    lon: float = 0.0
    speed_mps: float | None = None
    heading_deg: float | None = None
    valid: bool = False
    satellites: int | None = None
    alarms: frozenset[str] = field(default_factory=frozenset)
    battery_pct: float | None = None
    charging: bool | None = None
    extended: bool = False


# Each byte with its bits in reverse order.
_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc_itu(data: bytes) -> int:
    """CRC-16/X-25 (CRC-ITU as GT06 uses it)."""
    # X-25 is the bit-reflected form of CRC-16/CCITT (poly 0x1021, init 0xFFFF), which
    # binascii computes in C: reflect the input bytes, then the result, then xor out.
    # Two frames pass through here per fix: a bitwise loop in Python cost more than
    # the rest of decoding.
    crc = binascii.crc_hqx(data.translate(_REVERSED), 0xFFFF)
    return (_REVERSED[crc & 0xFF] << 8 | _REVERSED[crc >> 8]) ^ 0xFFFF


def split_frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Cut a TCP stream into frames; return them and the incomplete rest."""
    frames: list[bytes] = []
    i, n = 0, len(buffer)
    while i < n:
        if buffer[i : i + 2] == b"\x78\x78":
            if i + 3 > n:
                break
            total = 2 + 1 + buffer[i + 2] + 2
        elif buffer[i : i + 2] == b"\x79\x79":
            if i + 4 > n:
                break
            total = 2 + 2 + int.from_bytes(buffer[i + 2 : i + 4], "big") + 2
        elif i + 1 == n and buffer[i] in (0x78, 0x79):
            break  # half a start marker: wait for the rest
        else:
            i += 1  # noise before a start marker
            continue
        if i + total <= n and buffer[i + total - 2 : i + total] == b"\r\n":
            frames.append(buffer[i : i + total])
            i += total
            continue
        # Some firmware writes a wrong length: the frame then runs to the next 0d0a (as the
        # devices' own servers read it); decode() still refuses what does not add up.
        end = buffer.find(b"\r\n", i + 4)
        if end < 0:
            if n - i > MAX_FRAME:
                raise FrameError("no frame end within 2 KiB")
            break
        frames.append(buffer[i : end + 2])
        i = end + 2
    return frames, buffer[i:]


def _gps(content: bytes) -> dict[str, object]:
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
        "speed_mps": content[15] * KMH_MPS,
        "heading_deg": float(word & 0x3FF),
        "valid": bool(word >> 12 & 1),
        "satellites": content[6] & 0x0F,
    }


def _status(info: int, voltage: int, alarm: int | None) -> dict[str, object]:
    alarms = set()
    if alarm is not None and alarm in ALARMS:
        alarms.add(ALARMS[alarm])
    bits = info >> 3 & 0x07  # terminal information: alarm in bits 3..5
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
        "battery_pct": VOLTAGE_PCT[voltage] if voltage < len(VOLTAGE_PCT) else None,
    }


def decode(frame: bytes, strict_crc: bool = True) -> Message:
    """Decode one frame cut by :func:`split_frames`; FrameError if it is not a good GT06 frame."""
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
    if strict_crc and crc_itu(frame[2 : head + length - 2]) != int.from_bytes(body[-2:], "big"):
        raise FrameError("crc")
    proto, content, serial = body[0], body[1:-4], int.from_bytes(body[-4:-2], "big")
    ext = head == 4
    if proto == 0x01:
        if len(content) < 8:
            raise FrameError("login without an IMEI")
        digits = content[:8].hex()
        if not digits.isdigit():
            raise FrameError("IMEI is not BCD")
        return Message(proto, "login", serial, imei=digits[1:], extended=ext)
    if proto == 0x13 and len(content) >= 5:
        st = _status(content[0], content[1], content[3])
        return Message(proto, "heartbeat", serial, extended=ext, **st)  # type: ignore[arg-type]
    if proto in GPS_PROTOCOLS and len(content) < 18:
        return Message(proto, "other", serial, extended=ext)  # a position packet without GPS
    if proto in GPS_PROTOCOLS:
        fields: dict[str, object] = _gps(content)
        kind = "location"
        if proto in ALARM_PROTOCOLS:
            kind = "alarm"
            # after GPS (18) come the LBS block (length byte + data) and status (5 bytes)
            # The LBS length byte: 9 on firmware that counts itself, 8 on firmware that
            # does not; either way a standard LBS block ends at byte 27.
            lbs_len = content[18] if len(content) > 18 else 0
            s = 18 + max(lbs_len, 9)
            if len(content) >= s + 4:
                fields.update(_status(content[s], content[s + 1], content[s + 3]))
        return Message(proto, kind, serial, extended=ext, **fields)  # type: ignore[arg-type]
    return Message(proto, "other", serial, extended=ext)


def ack(message: Message) -> bytes | None:
    """The acknowledgement a device waits for (login, heartbeat, alarms), else None."""
    if message.protocol not in ACKED:
        return None
    body = bytes([0x05, message.protocol]) + message.serial.to_bytes(2, "big")
    return b"\x78\x78" + body + crc_itu(body).to_bytes(2, "big") + b"\r\n"


def interval_command(seconds: int, serial: int = 1) -> bytes:
    """The server command setting the upload interval (text command ``TIMER,n#``)."""
    if not 5 <= seconds <= 18000:
        raise ValueError("interval must be between 5 s and 5 h")
    text = f"TIMER,{seconds}#".encode()
    content = bytes([4 + len(text)]) + b"\x00\x00\x00\x00" + text
    body = bytes([len(content) + 1 + 2 + 2, 0x80]) + content + serial.to_bytes(2, "big")
    return b"\x78\x78" + body + crc_itu(body).to_bytes(2, "big") + b"\r\n"
