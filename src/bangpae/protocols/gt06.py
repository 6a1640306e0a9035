"""GT06 trackers over TCP: binary frames 0x7878 (1-byte length) and 0x7979 (2-byte length).

Frame: start, length, protocol number, content, serial (2), CRC-ITU (2) over length
through serial, 0x0d0a. A CRC mismatch is refused by default; some firmware is known
to send wrong CRCs, so a device may be set lenient. Positions (0x10, 0x11, 0x12,
0x16, 0x22, 0x26, …) start with a GPS block: UTC date and time (6 bytes), a
satellites byte, latitude and longitude (4 bytes each, in 1/1,800,000 degree), speed
(km/h) and a course/status word (bit 12 positioned, bit 11 west, bit 10 north,
low 10 bits course). Login (0x01) carries the IMEI in BCD.

A gateway decodes tens of thousands of location frames a second on one core, so the
position path reads the GPS block with one ``struct`` call, takes the start of the fix's
day from a small cache instead of building a datetime, and builds the Message
positionally.
"""

from __future__ import annotations

import binascii
import functools
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bangpae.domain.model import Fix
from bangpae.domain.retention import AHEAD, too_far_ahead
from bangpae.protocols.codec import Decoded
from bangpae.protocols.errors import FrameError

KMH_MPS = 1 / 3.6
MAX_FRAME = 2048
GPS_PROTOCOLS = frozenset({0x10, 0x11, 0x12, 0x16, 0x1A, 0x22, 0x26, 0x27, 0x37, 0x2D})
ALARM_PROTOCOLS = frozenset({0x16, 0x18, 0x19, 0x26, 0x27, 0x37})
# Alarm byte of the alarm packets -> the alarm names of a fix (domain/model.py).
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


# The GPS block: date and hour as one big-endian word (YY MM DD hh), minute, second,
# satellites, latitude, longitude, speed, course/status word.
_GPS = struct.Struct(">IBBBIIBH")
_NO_ALARMS: frozenset[str] = frozenset()
# Alarm bits 3..5 of the terminal information byte -> alarm names.
_INFO_ALARMS = {
    7: frozenset({"tamper"}),
    4: frozenset({"sos"}),
    3: frozenset({"low_battery"}),
    2: frozenset({"power_cut"}),
    1: frozenset({"vibration"}),
}


def _status(
    info: int, voltage: int, alarm: int | None
) -> tuple[frozenset[str], float | None, bool]:
    """Alarms, battery percentage and charging from a status block."""
    alarms = _INFO_ALARMS.get(info >> 3 & 0x07, _NO_ALARMS)  # terminal info: alarm in bits 3..5
    if alarm is not None and alarm in ALARMS:
        alarms = alarms | {ALARMS[alarm]}
    battery_pct = VOLTAGE_PCT[voltage] if voltage < len(VOLTAGE_PCT) else None
    return alarms, battery_pct, bool(info & 0x04)


@functools.lru_cache(maxsize=1024)
def _day_start(yymmdd: int) -> int:
    """Epoch seconds at 00:00 UTC of the day ``YY MM DD`` (as one 24-bit word)."""
    # A device's fixes share a handful of days, so this rarely runs; datetime stays the
    # judge of what is a date (Feb 29 only in leap years, no month 13). Bad dates raise and
    # are not kept; the cache stays bounded whatever days devices send.
    try:
        day = datetime(2000 + (yymmdd >> 16), yymmdd >> 8 & 0xFF, yymmdd & 0xFF, tzinfo=UTC)
    except ValueError:
        raise FrameError("GPS date is not a date") from None
    return int(day.timestamp())


def _position(frame: bytes, at: int, stop: int, proto: int, serial: int, ext: bool) -> Message:
    """The position packet whose content is ``frame[at:stop]``."""
    if stop - at < 18:
        return Message(proto, "other", serial, extended=ext)  # a position packet without GPS
    ymdh, mi, ss, sats, lat_raw, lon_raw, speed, word = _GPS.unpack_from(frame, at)
    hh = ymdh & 0xFF
    day = _day_start(ymdh >> 8)
    # The time of day was datetime's to refuse too (hour 24, minute 60, leap second 60).
    if hh > 23 or mi > 59 or ss > 59:
        raise FrameError("GPS date is not a date")
    lat = lat_raw / 1_800_000.0
    lon = lon_raw / 1_800_000.0
    if lat > 90 or lon > 180:
        raise FrameError("coordinates out of range")
    if not word >> 10 & 1:
        lat = -lat
    if word >> 11 & 1:
        lon = -lon
    kind, alarms, battery_pct, charging = "location", _NO_ALARMS, None, None
    if proto in ALARM_PROTOCOLS:
        kind = "alarm"
        content = frame[at:stop]
        # after GPS (18) come the LBS block (length byte + data) and status (5 bytes)
        # The LBS length byte: 9 on firmware that counts itself, 8 on firmware that
        # does not; either way a standard LBS block ends at byte 27.
        lbs_len = content[18] if len(content) > 18 else 0
        s = 18 + max(lbs_len, 9)
        if len(content) >= s + 4:
            alarms, battery_pct, charging = _status(content[s], content[s + 1], content[s + 3])
    # Positional: keyword arguments cost a third more on the gateway's hottest call.
    return Message(
        proto,
        kind,
        serial,
        None,  # imei
        True,  # has_position
        float(day + hh * 3600 + mi * 60 + ss),  # fix_time: whole seconds, as timestamp() gave
        lat,
        lon,
        speed * KMH_MPS,  # speed_mps
        float(word & 0x3FF),  # heading_deg
        bool(word >> 12 & 1),  # valid
        sats & 0x0F,  # satellites
        alarms,
        battery_pct,
        charging,
        ext,  # extended
    )


def decode(frame: bytes, strict_crc: bool = True) -> Message:
    """Decode one frame cut by :func:`split_frames`; FrameError if it is not a good GT06 frame."""
    n = len(frame)
    if n < 10 or frame[-2:] != b"\r\n":
        raise FrameError("frame too short or not ended by 0d0a")
    start = frame[:2]
    if start == b"\x78\x78":
        head, length = 3, frame[2]
    elif start == b"\x79\x79":
        head, length = 4, frame[2] << 8 | frame[3]
    else:
        raise FrameError("no 7878 or 7979 start")
    end = head + length  # where 0d0a starts; the body (protocol .. CRC) is frame[head:end]
    if end + 2 != n:
        raise FrameError("length field does not match the frame")
    if strict_crc and crc_itu(frame[2 : end - 2]) != frame[end - 2] << 8 | frame[end - 1]:
        raise FrameError("crc")
    # The length is at least 4 here (n >= 10), so the serial never reaches before the body.
    proto, serial, ext = frame[head], frame[end - 4] << 8 | frame[end - 3], head == 4
    if proto in GPS_PROTOCOLS:
        return _position(frame, head + 1, end - 4, proto, serial, ext)
    content = frame[head + 1 : end - 4]
    if proto == 0x01:
        if len(content) < 8:
            raise FrameError("login without an IMEI")
        digits = content[:8].hex()
        if not digits.isdigit():
            raise FrameError("IMEI is not BCD")
        return Message(proto, "login", serial, imei=digits[1:], extended=ext)
    if proto == 0x13 and len(content) >= 5:
        alarms, battery_pct, charging = _status(content[0], content[1], content[3])
        return Message(
            proto,
            "heartbeat",
            serial,
            alarms=alarms,
            battery_pct=battery_pct,
            charging=charging,
            extended=ext,
        )
    return Message(proto, "other", serial, extended=ext)


# What an acknowledgement's CRC covers before the serial, per protocol: length 05, protocol.
_ACK_PREFIX = {proto: bytes([0x05, proto]) for proto in ACKED}


def ack(message: Message) -> bytes | None:
    """The acknowledgement a device waits for (login, heartbeat, alarms), else None."""
    prefix = _ACK_PREFIX.get(message.protocol)
    if prefix is None:
        return None
    body = prefix + message.serial.to_bytes(2, "big")
    return b"\x78\x78" + body + crc_itu(body).to_bytes(2, "big") + b"\r\n"


def interval_command(seconds: int, serial: int = 1) -> bytes:
    """The server command setting the upload interval (text command ``TIMER,n#``)."""
    if not 5 <= seconds <= 18000:
        raise ValueError("interval must be between 5 s and 5 h")
    text = f"TIMER,{seconds}#".encode()
    content = bytes([4 + len(text)]) + b"\x00\x00\x00\x00" + text
    body = bytes([len(content) + 1 + 2 + 2, 0x80]) + content + serial.to_bytes(2, "big")
    return b"\x78\x78" + body + crc_itu(body).to_bytes(2, "big") + b"\r\n"


class Tcp:
    """GT06 as the TCP listener speaks it (a :class:`~bangpae.protocols.codec.TcpProtocol`)."""

    name = "gt06"
    split = staticmethod(split_frames)

    def decode(
        self, frame: bytes, now: float, lenient: bool = False, device_id: int = 0
    ) -> Decoded:
        """One frame: the IMEI of a login, the fix of a position or an alarm, the ack."""
        # CRC errors are refused: firmware known to send them needs a per-device lenient mode.
        msg = decode(frame, strict_crc=not lenient)
        fix = None
        if msg.has_position:
            if too_far_ahead(msg.fix_time, now):
                raise FrameError(f"fix time {AHEAD}")
            fix = Fix(
                device_id=device_id,
                fix_time=msg.fix_time,
                lat=msg.lat,
                lon=msg.lon,
                speed_mps=msg.speed_mps,
                heading_deg=msg.heading_deg,
                battery_pct=msg.battery_pct,
                valid=msg.valid,
                alarms=msg.alarms,
                received_at=now,
            )
        elif msg.alarms:
            # A status packet reporting an alarm (strap cut, SOS) must not be lost for want
            # of a position: it goes on as a message without a GPS fix.
            fix = Fix(
                device_id=device_id,
                fix_time=now,
                lat=0.0,
                lon=0.0,
                battery_pct=msg.battery_pct,
                valid=False,
                alarms=msg.alarms,
                received_at=now,
            )
        return Decoded(msg.imei, fix, ack(msg))

    def interval(self, identifier: str, seconds: int, now: float) -> bytes:
        """``TIMER,n#``: the same for every GT06 tracker."""
        return interval_command(seconds)


TCP = Tcp()
